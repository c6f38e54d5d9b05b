"""The training recipe, top to bottom in plain PyTorch: setup, loop, save.

Used for teacher adaptation (LoRA, task cross-entropy) and student distillation (KD losses), for both
task shapes. It sees `batch_loss(model, idx) -> scalar` over example indices (built by
`decision_batch_loss` or `sdk.distill.sequence.make_response_loss`) and an evaluation callback; never a
config or a template.
Every `eval_every` steps it validates, keeps the best weights, writes a resumable checkpoint, and stops
after `patience` checks without improvement.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sdk.distill.losses import Loss
from sdk.errors import DistillError


@dataclass
class TrainResult:
    best_metric: float
    best_step: int
    steps: int
    seconds: float
    stopped_early: bool
    history: list[dict] = field(default_factory=list)


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(x + "\n" for x in kept))
    os.replace(tmp, path)


def _atomic_save(obj: object, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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


BatchLoss = Callable[[torch.nn.Module, list[int]], torch.Tensor]


def decision_batch_loss(forward: Callable[[torch.nn.Module, list[int]], torch.Tensor],
                        targets: dict[str, torch.Tensor], loss_fn: Loss) -> BatchLoss:
    """batch_loss for the decision shape: answer-position logits from forward(model, idx) (see
    batching.token_forward, frozen_prefix.cached_forward) and per-example targets (`target` = answer token
    id, plus whatever the loss reads, e.g. teacher top-k)."""

    def batch_loss(model: torch.nn.Module, idx: list[int]) -> torch.Tensor:
        return loss_fn(forward(model, idx), {k: v[idx] for k, v in targets.items()})

    return batch_loss


def train(
    model: torch.nn.Module,
    batch_loss: BatchLoss,
    n_examples: int,
    evaluate: Callable[[torch.nn.Module], float],
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
) -> TrainResult:
    """Train the parameters of `model` that require grad; on return the model holds the best weights.

    batch_loss(model, idx) -> the loss of examples idx; evaluate(model) -> validation metric, higher is
    better. lengths: the examples' token counts, to batch examples of similar length together (a batch is
    padded to its longest example).
    """
    # --- setup
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = checkpoint_dir / "last.pt"
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    steps_per_epoch = math.ceil(n_examples / batch_size)
    total_steps = max(1, int(max_epochs * steps_per_epoch))
    warmup = max(1, total_steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / max(1, total_steps - warmup))))
    gen = torch.Generator().manual_seed(seed)
    if lengths is None:
        order = torch.cat([torch.randperm(n_examples, generator=gen) for _ in range(math.ceil(max_epochs) + 1)])
        batch_at = lambda s: order[s * batch_size: (s + 1) * batch_size].tolist()  # noqa: E731
    else:
        grouped = [b for _ in range(math.ceil(max_epochs) + 1) for b in _length_grouped(lengths, batch_size, gen)]
        batch_at = lambda s: grouped[s].tolist()  # noqa: E731
    step, best, best_step, bad_checks, history = 0, -math.inf, -1, 0, []
    best_state = _trainable_state(model)
    if ckpt_path.is_file():  # resume an interrupted run exactly where its last check left it
        ck = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ck["model"], strict=False)
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        step, best, best_step, bad_checks, history = ck["step"], ck["best"], ck["best_step"], ck["bad_checks"], ck["history"]
        best_state = ck["best_state"]
    _truncate_log(checkpoint_dir / "log.jsonl", step)
    log = open(checkpoint_dir / "log.jsonl", "a")
    start = time.perf_counter()

    # --- loop
    model.train()
    bar = tqdm(total=total_steps, initial=step, desc=desc, unit="step")
    running = None
    stopped_early = bad_checks >= patience  # a resumed run that had already stopped
    while step < total_steps and not stopped_early:
        idx = batch_at(step)
        loss = batch_loss(model, idx)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        running = loss.item() if running is None else 0.9 * running + 0.1 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{running:.4f}", best=f"{best:.4f}")
        log.write(json.dumps({"step": step, "loss": loss.item(), "lr": scheduler.get_last_lr()[0]}) + "\n")
        if step % eval_every == 0 or step == total_steps:
            model.eval()
            metric = float(evaluate(model))
            model.train()
            if not math.isfinite(metric):
                raise DistillError(f"{desc}: validation metric is {metric} at step {step} "
                                   "(does the validation split hold both labels?)")
            history.append({"step": step, "loss": running, "val": metric})
            log.write(json.dumps({"step": step, "val": metric}) + "\n")
            log.flush()
            if metric > best:
                best, best_step, bad_checks = metric, step, 0
                best_state = _trainable_state(model)
            else:
                bad_checks += 1
            _atomic_save({"model": _trainable_state(model), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "step": step, "best": best,
                          "best_step": best_step, "bad_checks": bad_checks, "history": history,
                          "best_state": best_state}, ckpt_path)
            if bad_checks >= patience:
                stopped_early = True
                break
    bar.close()
    log.close()

    # --- save: the caller persists the model; here the best weights are put back
    model.load_state_dict(best_state, strict=False)
    model.eval()
    return TrainResult(best, best_step, step, time.perf_counter() - start, stopped_early, history)
