"""On-policy distillation (GKD, Agarwal et al., 2024): a fraction of the steps trains on responses the student
samples itself, scored token by token by the teacher, instead of the teacher's own completions; the student
then learns to recover from its own mistakes rather than only to imitate.

`distill.on_policy` (generation templates, a local teacher with the student's vocabulary): on such a step the
batch's prompts are completed by the student (sampling at `temperature`, up to `max_new_tokens`), the teacher
runs on prompt + sample, and the loss is the configured divergence alone (alpha 0: the samples are not
targets). Which steps go on-policy is drawn from the seed and the step's whole batch (the recipe announces it
through `start_step`), so a resumed run makes the same choices, and so do all micro-batches of a step and all
ranks under torchrun: they would otherwise log different terms and disagree in the step's all-reduce. An API teacher would need the logprobs of tokens it did not generate, which chat endpoints do
not return: refused with a clear error (sdk.stages.distill).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from pydantic import Field

from sdk.distill.sequence import make_response_loss
from sdk.typed_config import TypedConfig


class OnPolicyConfig(TypedConfig):
    """`distill.on_policy`: a share of the steps on the student's own samples (off when absent)."""

    fraction: float = Field(0.5, gt=0, le=1, description="Share of steps (lambda in GKD) trained on the "
                            "student's samples scored by the teacher.")
    max_new_tokens: int = Field(128, ge=1, description="Longest sample.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the student.")


@torch.no_grad()
def sample_responses(model: torch.nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                     temperature: float, pad_id: int, eos_ids: Sequence[int]) -> list[list[int]]:
    """The student's sampled continuation of each prompt, cut after its first end-of-sequence token."""
    from sdk.distill.batching import left_pad

    was_training = model.training
    model.eval()
    batch = left_pad(prompts, pad_id)
    device = next(model.parameters()).device
    out = model.generate(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                         do_sample=True, temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                         pad_token_id=pad_id, eos_token_id=list(eos_ids) or None)
    model.train(was_training)
    responses = []
    for row in out[:, batch["input_ids"].shape[1]:].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in eos_ids), len(row))
        responses.append(row[:cut] or row[:1])
    return responses


def on_policy_step(seed: int, idx: Sequence[int], fraction: float) -> bool:
    """Whether the batch of examples `idx` trains on-policy: drawn from the seed and the examples, so the
    same batch makes the same choice after a resume."""
    return bool(np.random.default_rng([seed, *map(int, idx)]).random() < fraction)


def with_on_policy(batch_loss: Callable, prompts: Sequence[Sequence[int]], kd_loss: Any, teacher: torch.nn.Module,
                   config: OnPolicyConfig, seed: int, pad_id: int, eos_ids: Sequence[int]) -> Callable:
    """batch_loss(model, idx) that, on a `config.fraction` of the batches, trains `kd_loss` (alpha 0) on the
    student's own samples of prompts[idx] against the teacher run alongside."""

    step_batch: list[int] | None = None  # the step's whole batch, when the recipe announced it

    def start_step(batch: list[int]) -> None:
        nonlocal step_batch
        step_batch = list(batch)

    def wrapped(model: torch.nn.Module, idx: list[int]):
        if not on_policy_step(seed, step_batch if step_batch is not None else idx, config.fraction):
            return batch_loss(model, idx)
        own = [prompts[i] for i in idx]
        samples = sample_responses(model, own, config.max_new_tokens, config.temperature, pad_id, eos_ids)
        return make_response_loss(own, samples, kd_loss, pad_id, teacher=teacher)(model, list(range(len(idx))))

    wrapped.start_step = start_step
    return wrapped
