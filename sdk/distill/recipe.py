"""The training recipe, top to bottom in plain PyTorch: setup, loop, save.

Used for teacher adaptation (LoRA, task cross-entropy) and student distillation (KD losses), for both
task shapes. It sees `batch_loss(model, idx) -> scalar` over example indices (built by
`decision_batch_loss` or `sdk.distill.sequence.make_response_loss`) and an evaluation callback; never a
config or a template.
Every `eval_every` steps it validates, keeps the best weights, writes a resumable checkpoint (also every
`checkpoint_every` steps), and stops after `patience` checks without improvement. Gradient accumulation,
transformers' learning-rate schedules, bf16 autocast on CUDA (fp32 on CPU) and exact resume (RNG states
and data position included) are here, so every workflow gets them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sdk.distill.losses import Loss
from sdk.errors import DistillError
from sdk.rundir import atomic_write, atomic_write_text, remove_orphaned_temporaries


@dataclass
class TrainResult:
    best_metric: float | None  # None: trained without validation (the last weights)
    best_step: int
    steps: int
    seconds: float
    stopped_early: bool
    # one entry per validation check: step, val (None without validation data) and loss_ema, the training
    # loss smoothed over steps (0.9 decay); the log (log.jsonl) has each step's own loss
    history: list[dict] = field(default_factory=list)


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trained parameters as detached views (no copy: they are written to disk before the next step)."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log lines up to the checkpoint's step: the steps after it are trained (and logged) again
    on resume, and must not appear twice."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line)
        except json.JSONDecodeError:
            break  # a line cut by the interruption ends the readable log
    atomic_write_text(path, "".join(x + "\n" for x in kept))


def _fusable(params: list[torch.nn.Parameter]) -> bool:
    """torch's fused AdamW takes floating-point parameters on CPU or CUDA."""
    return bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def _tensorboard(root: Path | None, desc: str, step: int):
    """A TensorBoard writer for one training (root/desc), or None. A resumed training purges the events
    after its checkpoint's step (they are trained again); a fresh one starts an empty folder, so an earlier
    training's curves never mix in."""
    if root is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DistillError("distill.tensorboard: true needs the tensorboard package "
                           "(pip install 'distill-sdk[tensorboard]')") from None
    logdir = root / (re.sub(r"[^\w.-]+", "-", desc).strip("-") or "train")
    if step == 0:
        shutil.rmtree(logdir, ignore_errors=True)
    return SummaryWriter(str(logdir), purge_step=step + 1 if step else None)  # events after the checkpoint


def _atomic_save(obj: object, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def _length_grouped(lengths: Sequence[int], batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    """One epoch's batches of examples of similar length (transformers' group_by_length): a random
    permutation cut into windows of 32 batches, each window sorted by length and cut into batches, the
    batches shuffled. A batch is padded to its longest example, so this computes less padding, while
    batches stay random in content and order."""
    perm = torch.randperm(len(lengths), generator=gen)
    lens = torch.as_tensor(list(lengths))
    window = 32 * batch_size
    batches = []
    for lo in range(0, len(perm), window):
        part = perm[lo: lo + window]
        batches += list(part[torch.argsort(lens[part], descending=True, stable=True)].split(batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


BatchLoss = Callable[[torch.nn.Module, list[int]], "torch.Tensor | tuple[torch.Tensor, int]"]


def decision_batch_loss(forward: Callable[[torch.nn.Module, list[int]], torch.Tensor],
                        targets: dict[str, torch.Tensor], loss_fn: Loss) -> BatchLoss:
    """batch_loss for the decision shape: answer-position logits from forward(model, idx) (see
    batching.token_forward, frozen_prefix.cached_forward) and per-example targets (`target` = answer token
    id, plus whatever the loss reads, e.g. teacher top-k). Returns (summed loss, examples)."""

    def batch_loss(model: torch.nn.Module, idx: list[int]) -> tuple[torch.Tensor, int]:
        logits = forward(model, idx)
        mean = loss_fn(logits, {k: v[idx].to(logits.device) for k, v in targets.items()})
        return mean * len(idx), len(idx)

    return batch_loss


def pick_device(name: str = "auto") -> torch.device:
    """`auto`: CUDA when there is a GPU, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ:  # under torchrun: this rank's GPU
        name = f"cuda:{os.environ['LOCAL_RANK']}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DistillError(f"distill.device is {name!r} but torch sees no CUDA GPU (use auto or cpu)")
    return torch.device(name)


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX-BF16, Xeons since Sapphire Rapids), from the flags in
    /proc/cpuinfo (Linux); False where they cannot be read. torch reports only the vector ISA (AVX512)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """"bf16" or "fp32" for `distill.precision` on `device`: auto is bf16 on CUDA and on CPUs with AMX-BF16
    (2.0x the steps/s of fp32 for a 6-layer SmolLM2-width student on 2 Sapphire Rapids cores), fp32 on other
    CPUs, where bf16 is emulated (~7x slower than fp32 on 2 cores without AVX-512 BF16)."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16"
    return agree_on_precision("bf16" if cpu_has_amx_bf16() else "fp32")


def agree_on_precision(choice: str) -> str:
    """Under torchrun, "bf16" only where every rank chose it: auto reads each machine's CPU flags, and ranks on
    CPUs with and without AMX-BF16 must still step in one arithmetic (the gradients are summed across them).
    A collective: every rank calls it at the same point (the stages resolve precision symmetrically)."""
    import torch.distributed as dist

    if process_world()[1] == 1:
        return choice
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    every = torch.tensor([1 if choice == "bf16" else 0], device=on)
    dist.all_reduce(every, op=dist.ReduceOp.MIN)
    return "bf16" if every.item() else "fp32"


def autocast(device: torch.device, precision: str | None):
    """bf16 autocast (weights, gradients and optimizer state stay fp32) or none. precision None: bf16 on CUDA,
    fp32 on CPU, whatever the CPU (for direct callers; the stages pass `distill.precision` resolved)."""
    if precision == "bf16" or (precision is None and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def process_world() -> tuple[int, int]:
    """(rank, world size) under torchrun (torch.distributed initialised), else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_reduce_step(params: list[torch.nn.Parameter], numbers: list[float], device: torch.device) -> list[float]:
    """Sum every rank's gradients and step numbers (loss sum, units, terms) in one flat all-reduce.

    Why not DistributedDataParallel: its reducer syncs gradients only for a forward through the wrapper,
    and the losses here call the decoder and the output head separately (chunked, frozen-layer views).
    Per-token normalisation needs the global token count anyway: ranks sum raw gradients and counts, and
    the caller divides by the total, which gives the gradient of the whole global batch."""
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [torch.tensor(numbers, dtype=torch.float32,
                                                                            device=device)])
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset: offset + g.numel()].view_as(g).to(g.dtype)
        offset += g.numel()
    return flat[offset:].tolist()


def _all_term_names(terms: dict[str, float]) -> list[str]:
    """The logged terms of every rank, in one order: the step's all-reduce carries one slot per name, so the ranks
    must agree on them though a rank may log fewer (an empty share of a short last batch logs none)."""
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, sorted(terms))
    return sorted(set().union(*gathered))


def _broadcast(value: float, device: torch.device) -> float:
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return float(t.item())


def _micro_batches(idx: list[int], n: int) -> list[list[int]]:
    """idx cut into n nearly equal consecutive parts (none empty; none at all for an empty idx)."""
    if not idx:
        return []
    n = max(1, min(n, len(idx)))
    size, extra = divmod(len(idx), n)
    out, lo = [], 0
    for i in range(n):
        hi = lo + size + (i < extra)
        out.append(idx[lo:hi])
        lo = hi
    return out


def train(
    model: torch.nn.Module,
    batch_loss: BatchLoss,
    n_examples: int,
    evaluate: Callable[[torch.nn.Module], float] | None,
    *,
    lr: float,
    batch_size: int,
    max_epochs: float,
    eval_every: int,
    patience: int,
    seed: int,
    checkpoint_dir: Path,
    desc: str = "train",
    lengths: Sequence[int] | None = None,
    grad_accum: int = 1,
    checkpoint_every: int | None = None,
    lr_schedule: str = "linear",
    warmup_ratio: float = 0.05,
    max_grad_norm: float = 1.0,
    loss_fn: Any = None,
    extra_modules: Sequence[torch.nn.Module] = (),
    tensorboard_dir: Path | None = None,
    shard: bool = False,
    precision: str | None = None,
) -> TrainResult:
    """Train the parameters of `model` that require grad; on return the model holds the best weights.

    batch_loss(model, idx) -> (summed loss, normalisation units) of examples idx (tokens for responses,
    examples for decisions), or the mean loss over those examples. A step of `batch_size` examples runs
    as `grad_accum` micro-batches whose summed gradients are divided by the step's total units, so any
    split gives the gradient of the whole batch. evaluate(model) -> validation metric, higher is better;
    None where there is no held-out data: nothing to select or stop on, the model keeps its last weights.
    lengths: the examples' token counts, to batch examples of similar length together. The learning rate
    follows transformers' `lr_schedule` (linear, cosine, constant_with_warmup, ...) after `warmup_ratio`
    of the steps. A checkpoint (weights, optimizer, scheduler, RNG states, step: the data position) is
    written at every check and every `checkpoint_every` steps; a run killed at any point resumes from the
    last one and continues exactly as if uninterrupted. loss_fn: the loss object (or a list of them), for
    their schedules (`set_progress`) and logged terms (`last_terms`). extra_modules: modules outside `model`
    that train with it (feature projections), optimised and checkpointed alongside. tensorboard_dir: also
    write the logged scalars as TensorBoard events under tensorboard_dir/desc (the JSONL log stays).
    shard: under torchrun, shard the trained parameters, gradients and optimizer state across the ranks
    (FSDP2, sdk.distill.sharding); the best weights come back into `model` whole. precision: "bf16" (autocast)
    or "fp32"; None: bf16 on CUDA, fp32 on CPU (resolve_precision gives `distill.precision: auto`'s choice).
    """
    from transformers import get_scheduler

    # --- setup
    rank, world = process_world()  # under torchrun: each rank trains on its share of every batch, rank 0 writes
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = checkpoint_dir / "last.pt"
    fsdp, caller, caller_extras = shard and world > 1, model, tuple(extra_modules)
    if fsdp:  # train a sharded copy; `caller` gets the best weights back at the end
        from sdk.distill import sharding

        model, extra_modules = sharding.shard_copy(model, caller_extras)
    # what a checkpoint holds of the trained weights: views here, whole tensors gathered from the shards
    snapshot = sharding.full_state if fsdp else _trainable_state
    params = [p for m in (model, *extra_modules) for p in m.parameters() if p.requires_grad]
    # FSDP reduce-scatters (and averages) its shards' gradients itself; the whole ones are summed here
    sharded = [fsdp and sharding.is_sharded(p) for p in params]
    whole = [p for p, s in zip(params, sharded) if not s]
    device = next(model.parameters()).device
    losses = [f for f in (loss_fn if isinstance(loss_fn, (list, tuple)) else [loss_fn]) if f is not None]
    # fused: one kernel per parameter, without the foreach implementation's temporaries the size of all
    # trained parameters (peak memory), and faster on CPU and CUDA alike
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=_fusable(params))
    steps_per_epoch = math.ceil(n_examples / batch_size)
    total_steps = max(1, int(max_epochs * steps_per_epoch))
    warmup = max(1, round(total_steps * warmup_ratio)) if warmup_ratio > 0 else 0
    try:
        scheduler = get_scheduler(lr_schedule, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    except ValueError as err:
        raise DistillError(f"learning-rate schedule {lr_schedule!r}: {err}") from None
    gen = torch.Generator().manual_seed(seed)
    if lengths is None:
        order = torch.cat([torch.randperm(n_examples, generator=gen) for _ in range(math.ceil(max_epochs) + 1)])
        batch_at = lambda s: order[s * batch_size: (s + 1) * batch_size].tolist()  # noqa: E731
    else:
        grouped = [b for _ in range(math.ceil(max_epochs) + 1) for b in _length_grouped(lengths, batch_size, gen)]
        batch_at = lambda s: grouped[s].tolist()  # noqa: E731
    step, best, best_step, bad_checks, history, running = 0, -math.inf, -1, 0, [], None
    # the best weights live in best.pt, not in memory (a copy of every trained parameter for the whole run);
    # best_state is only for checkpoints written before best.pt existed
    best_path, best_state = checkpoint_dir / "best.pt", None
    if rank == 0:  # a process killed mid-write left its temporary checkpoint behind
        remove_orphaned_temporaries(checkpoint_dir)
    if rank == 0 and not ckpt_path.is_file():
        best_path.unlink(missing_ok=True)  # a fresh training: an earlier one's best is not this one's
    if ckpt_path.is_file():  # resume an interrupted run exactly where its last checkpoint left it
        ck = torch.load(ckpt_path, weights_only=False, map_location="cpu" if fsdp else device)
        if fsdp:
            sharding.load_full_state(model, ck["model"])
            sharding.load_full_optimizer_state(optimizer, ck["optimizer"])
        else:
            model.load_state_dict(ck["model"], strict=False)
            optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        step, best, best_step, bad_checks, history = ck["step"], ck["best"], ck["best_step"], ck["bad_checks"], ck["history"]
        best_state, running = ck.get("best_state"), ck.get("running")
        for m, state in zip(extra_modules, ck.get("extra", [])):
            sharding.load_full_state(m, state) if fsdp else m.load_state_dict(state)
        if "rng" in ck:
            _set_rng_state(ck["rng"])
    if rank == 0:
        _truncate_log(checkpoint_dir / "log.jsonl", step)
    log = open(checkpoint_dir / "log.jsonl", "a") if rank == 0 else open(os.devnull, "w")
    board = _tensorboard(tensorboard_dir, desc, step) if rank == 0 else None
    start = time.perf_counter()

    def save() -> None:
        if rank != 0 and not fsdp:
            return
        weights = snapshot(model)  # with FSDP every rank takes part in gathering the shards
        opt = sharding.full_optimizer_state(optimizer) if fsdp else optimizer.state_dict()
        extra = [sharding.full_state(m) if fsdp else m.state_dict() for m in extra_modules]
        if rank == 0:
            _atomic_save({"model": weights, "optimizer": opt, "scheduler": scheduler.state_dict(), "step": step,
                          "best": best, "best_step": best_step, "bad_checks": bad_checks, "history": history,
                          "best_state": best_state, "running": running, "rng": _rng_state(), "extra": extra},
                         ckpt_path)

    # --- loop
    model.train()
    bar = tqdm(total=total_steps, initial=step, desc=desc, unit="step", disable=rank != 0)
    stopped_early = bad_checks >= patience  # a resumed run that had already stopped
    while step < total_steps and not stopped_early:
        for f in losses:
            if hasattr(f, "set_progress"):
                f.set_progress(step / max(1, total_steps - 1))
        loss_sum, units, terms = 0.0, 0, {}
        batch = batch_at(step)
        if hasattr(batch_loss, "start_step"):  # a choice made per step (on-policy), the same on every rank
            batch_loss.start_step(batch)
        share = batch[rank::world]  # this rank's share of the batch
        micros = _micro_batches(share, grad_accum)
        # FSDP gathers the shards in every forward and reduces gradients in every backward: every rank must run
        # as many as rank 0 (the largest share); a rank with fewer examples (a short last batch) runs the
        # missing ones on one example at weight 0
        for _ in range(min(grad_accum, len(batch[0::world])) - len(micros) if fsdp else 0):
            with autocast(device, precision):
                out = batch_loss(model, batch[:1])
            ((out[0] if isinstance(out, tuple) else out) * 0.0).backward()
        for micro in micros:
            for f in losses:  # a loss not called in this micro-batch (e.g. on-policy's) logs nothing
                if hasattr(f, "last_terms"):
                    f.last_terms = {}
            with autocast(device, precision):
                out = batch_loss(model, micro)
            summed, n = out if isinstance(out, tuple) else (out * len(micro), len(micro))
            summed.backward()
            loss_sum, units = loss_sum + summed.item(), units + n
            for f in losses:
                for k, v in (getattr(f, "last_terms", None) or {}).items():
                    terms[k] = terms.get(k, 0.0) + v * n
        if world > 1:
            names = _all_term_names(terms)
            loss_sum, units, *summed = _all_reduce_step(whole, [loss_sum, units, *(terms.get(k, 0.0) for k in names)],
                                                        device)
            units = round(units)
            terms = dict(zip(names, summed))
        # the gradient of the step's mean: summed micro-batch gradients over all units (FSDP's reduce-scatter
        # averaged the ranks' sums: world fewer units)
        for p, s in zip(params, sharded):
            if p.grad is not None:
                p.grad.div_(max(units, 1) / (world if s else 1))
        if max_grad_norm and fsdp:
            sharding.clip_grad_norm(params, max_grad_norm)
        elif max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        step_lr = scheduler.get_last_lr()[0]  # the rate this step uses
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        loss = loss_sum / max(units, 1)
        running = loss if running is None else 0.9 * running + 0.1 * loss
        bar.update(1)
        shown = {"loss": f"{running:.4f}"}  # and the best validation metric once there is one (not -inf)
        bar.set_postfix(shown | ({"best": f"{best:.4f}"} if math.isfinite(best) else {}))
        record = {"step": step, "loss": loss, "lr": step_lr, "units": units}
        record.update({k: v / max(units, 1) for k, v in terms.items()})
        log.write(json.dumps(record) + "\n")
        if board is not None:
            for k, v in record.items():
                if k != "step":
                    board.add_scalar(f"train/{k}", v, step)
        at_check = step % eval_every == 0 or step == total_steps
        if at_check and evaluate is None:  # nothing to validate on: each check checkpoints, the last weights stay
            history.append({"step": step, "loss_ema": running, "val": None})
            best_step = step
            log.flush()
            save()
        elif at_check:
            model.eval()
            # sharded weights are gathered by every rank's forward: all evaluate then (same metric)
            metric = float(evaluate(model)) if rank == 0 or fsdp else 0.0
            model.train()
            if world > 1:  # every rank takes the same keep/stop decisions
                metric = _broadcast(metric, device)
            if not math.isfinite(metric):
                raise DistillError(f"{desc}: validation metric is {metric} at step {step} "
                                   "(does the validation split hold both labels?)")
            history.append({"step": step, "loss_ema": running, "val": metric})
            log.write(json.dumps({"step": step, "val": metric}) + "\n")
            log.flush()
            if board is not None:
                board.add_scalar("val/metric", metric, step)
                board.flush()
            if metric > best:
                best, best_step, bad_checks = metric, step, 0
                best_state = None
                bar.set_postfix(shown | {"best": f"{best:.4f}"})
                if rank == 0 or fsdp:
                    weights = snapshot(model)
                    if rank == 0:
                        _atomic_save(weights, best_path)
            else:
                bad_checks += 1
            save()
            if bad_checks >= patience:
                stopped_early = True
                break
        elif checkpoint_every and step % checkpoint_every == 0:
            log.flush()
            save()
    bar.close()
    log.close()
    if board is not None:
        board.close()

    # --- save: the caller persists the model; here the best weights are put back
    if world > 1:  # rank 0 wrote best.pt; every rank continues from it
        import torch.distributed as dist

        dist.barrier()
    if best_state is None and best_path.is_file():
        best_state = torch.load(best_path, map_location=device)
    if fsdp:  # the caller's (whole) modules take the trained weights; the sharded copy is dropped
        for mine, theirs in zip(extra_modules, caller_extras):
            theirs.load_state_dict(sharding.full_state(mine), strict=False)
        if best_state is None:
            best_state = sharding.full_state(model)
        model = caller
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    model.eval()
    return TrainResult(best if evaluate is not None else None, best_step, step, time.perf_counter() - start,
                       stopped_early, history)
