"""The distill stage on N processes: `distill run project.yaml --nproc N` runs every other stage in its own
process and this one under torchrun (torch.distributed.run, the launcher PyTorch ships), one process per
device: CUDA ranks on GPUs (NCCL), CPU ranks with gloo.

Each rank trains on its share of every global batch and the recipe sums gradients and token counts
across ranks (sdk.distill.recipe), so N processes train like one with the same `batch_size`; rank 0
validates, checkpoints and saves the students, and writes the stage's result for the parent to record.

    python -m sdk.distill.launch <run_dir> <stage key> <config.json>    (started by the stage, per rank)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sdk.errors import DistillError

RESULT = "distributed-result.json"


def launch(ctx: Any, nproc: int) -> dict[str, Any]:
    """Run the distill stage of `ctx` on `nproc` processes; its result (written by rank 0)."""
    from sdk.rundir import atomic_write_text

    ckpt = ctx.run.checkpoint_dir("distill", ctx.key)
    ckpt.mkdir(parents=True, exist_ok=True)
    config = ckpt / "config.json"
    atomic_write_text(config, json.dumps(ctx.config.model_dump(mode="json")))
    (ckpt / RESULT).unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "sdk.distill.launch", str(ctx.run.root), ctx.key, str(config)]
    print(f"[distill] distill: {nproc} processes under torchrun ({' '.join(cmd[2:6])})", flush=True)
    done = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if done.returncode != 0 or not (ckpt / RESULT).is_file():
        raise DistillError(f"distributed distill stage failed (torchrun exit code {done.returncode}); its ranks' "
                           "output is above")
    return json.loads((ckpt / RESULT).read_text())


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
    main(*sys.argv[1:4])
