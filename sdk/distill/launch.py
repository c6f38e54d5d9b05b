"""The distill stage on N processes: `distill run project.yaml --nproc N` runs every other stage in its own
process and this one under torchrun (torch.distributed.run, the launcher PyTorch ships), one process per
device: CUDA ranks on GPUs (NCCL), CPU ranks with gloo.

Each rank trains on its share of every global batch and the recipe sums gradients and token counts
across ranks (sdk.distill.recipe), so N processes train like one with the same `batch_size`; rank 0
validates, checkpoints and saves the students, and writes the stage's result for the parent to record.

Several machines (`--nnodes M --rdzv-endpoint host:port`): the machine that runs `distill run` does every
other stage, then writes `<run>/distributed.json` (what to train, where to meet) and starts its torchrun;
each other machine runs `distill join <run>` (sdk.distill.launch.join), which waits for that file and starts
its own torchrun with the same rendezvous (torchrun's c10d backend). The run folder must be on a file system
every machine sees (the ranks read the run's data and rank 0 writes checkpoints and students there).

    python -m sdk.distill.launch <run_dir> <stage key> <config.json>    (started by torchrun, per rank)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sdk.errors import DistillError, option

RESULT = "distributed-result.json"
MEETING = "distributed.json"  # in the run folder while a multi-machine distill stage runs: read by `distill join`


def check_rendezvous(endpoint: str | None) -> None:
    """--rdzv-endpoint for several machines: host:port."""
    host, sep, port = (endpoint or "").rpartition(":")
    if not endpoint or not sep or not host or not port.isdigit():
        raise DistillError(f"{option('rdzv_endpoint', endpoint)}: {option('nnodes')} > 1 needs host:port (this "
                           "machine's address, reachable from the others, and a free port), e.g. node-a:29500")


def torchrun_command(nproc: int, nnodes: int, rdzv_endpoint: str | None, rdzv_id: str, run_dir: str, key: str,
                     config: str) -> list[str]:
    """The torchrun command line of one machine: standalone on one machine, else a c10d rendezvous."""
    if nnodes > 1:
        check_rendezvous(rdzv_endpoint)
        where = ["--nnodes", str(nnodes), "--rdzv_backend", "c10d", "--rdzv_endpoint", rdzv_endpoint,
                 "--rdzv_id", rdzv_id]
    else:
        where = ["--standalone"]
    return [sys.executable, "-m", "torch.distributed.run", *where, "--nproc_per_node", str(nproc),
            "-m", "sdk.distill.launch", run_dir, key, config]


def _torchrun(cmd: list[str], result: Path | None) -> dict[str, Any]:
    """Run torchrun; the stage's result (rank 0's file) when `result` is given."""
    done = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if done.returncode != 0 or (result is not None and not result.is_file()):
        raise DistillError(f"distributed distill stage failed (torchrun exit code {done.returncode}); its ranks' "
                           "output is above")
    return json.loads(result.read_text()) if result is not None else {}


def launch(ctx: Any, nproc: int, nnodes: int = 1, rdzv_endpoint: str | None = None) -> dict[str, Any]:
    """Run the distill stage of `ctx` on `nproc` processes (on each of `nnodes` machines); its result
    (written by rank 0)."""
    from sdk.rundir import atomic_write_text

    ckpt = ctx.run.checkpoint_dir("distill", ctx.key)
    ckpt.mkdir(parents=True, exist_ok=True)
    config = ckpt / "config.json"
    atomic_write_text(config, json.dumps(ctx.config.model_dump(mode="json")))
    (ckpt / RESULT).unlink(missing_ok=True)
    cmd = torchrun_command(nproc, nnodes, rdzv_endpoint, ctx.key[:16], str(ctx.run.root.resolve()), ctx.key,
                           str(config.resolve()))
    meeting = ctx.run.path(MEETING)
    print(f"[distill] distill: {nproc} process{'es' if nproc > 1 else ''}" + (f" on each of {nnodes} machines, meeting at {rdzv_endpoint} "
          f"(on the others: distill join {ctx.run.root})" if nnodes > 1 else "") + " under torchrun", flush=True)
    if nnodes > 1:
        atomic_write_text(meeting, json.dumps({"key": ctx.key, "config": str(config.resolve()), "nnodes": nnodes,
                                               "nproc": nproc, "rdzv_endpoint": rdzv_endpoint}))
    try:
        return _torchrun(cmd, ckpt / RESULT)
    finally:
        meeting.unlink(missing_ok=True)


def join(run_dir: Path, nproc: int | None = None, wait_s: float = 3600.0) -> None:
    """Another machine's share of a multi-machine distill stage: wait for the head's `distributed.json` in
    the (shared) run folder, then start this machine's torchrun at the same rendezvous."""
    import time

    meeting = run_dir / MEETING
    print(f"[distill] waiting for {meeting} (written when the head machine's distill stage starts)", flush=True)
    deadline = time.monotonic() + wait_s
    while not meeting.is_file():
        if time.monotonic() > deadline:
            raise DistillError(f"{meeting}: not written within {wait_s:.0f} s (is `distill run ... --nnodes` "
                               "running on the head machine, with this run folder on a shared file system?)")
        time.sleep(1.0)
    try:
        m = json.loads(meeting.read_text())
        key, config, nnodes, endpoint = m["key"], m["config"], int(m["nnodes"]), m["rdzv_endpoint"]
    except (ValueError, KeyError) as err:
        raise DistillError(f"{meeting}: not a distributed-stage file ({err})") from None
    nproc = nproc or int(m["nproc"])
    print(f"[distill] joining the distill stage {key[:12]}: {nproc} processes, {nnodes} machines at {endpoint}",
          flush=True)
    # the result file is the head's to read: it may already have recorded the stage and removed its checkpoint
    # folder by the time this machine's torchrun returns, so a clean exit is what counts here
    _torchrun(torchrun_command(nproc, nnodes, endpoint, key[:16], str(run_dir.resolve()), key, config), None)


def rank_zero() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def main(run_dir: str, key: str, config_json: str) -> None:
    import torch
    import torch.distributed as dist

    from sdk import config as cfgmod
    from sdk.registry import get_template
    from sdk.rundir import RunDir, atomic_write_text
    from sdk.stages import Context
    from sdk.stages import distill

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        config = cfgmod.validate_config(json.loads(Path(config_json).read_text()), source=config_json)
        options = cfgmod.template_options(config)
        ctx = Context(config, get_template(config.template, options), options, RunDir(Path(run_dir)), key=key)
        info = distill.run(ctx)
        if dist.get_rank() == 0:
            atomic_write_text(Path(config_json).with_name(RESULT), json.dumps(info))
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    from sdk.quiet import quiet_library_noise, quiet_warnings

    quiet_library_noise()  # each rank is an entry point, as the CLI: the libraries' notices say nothing here
    quiet_warnings()
    main(*sys.argv[1:4])
