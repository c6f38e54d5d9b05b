"""Alignment by DPO (Rafailov et al., 2023) on verified pairs: for a training prompt, the teacher's completion
that passed the template's verifier is preferred over one of the student's own that failed it.

The loss is -log sigmoid(beta * ((log pi(c) - log ref(c)) - (log pi(r) - log ref(r)))), pi the student being
trained, ref the student as it entered the stage (its sequence log-probabilities computed once, so no second
model is held), log p of a response the sum of its tokens' log-probabilities given the prompt. Written here,
not taken from TRL's DPOTrainer: that trainer owns the loop, the data collation and the reference model, and
this engine's recipe (micro-batches, resume, ranks) and chunked output head are what the stage needs; the
loss is a few lines, checked against its formula (tests/sdk/distill/test_preference.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field

from sdk.distill.batching import batches
from sdk.distill.sequence import _base, response_hidden, right_pad
from sdk.errors import DistillError
from sdk.typed_config import TypedConfig


def sequence_logprobs(model: torch.nn.Module, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                      pad_id: int, chunk_tokens: int = 256) -> torch.Tensor:
    """[B] summed log-probabilities of each response given its prompt (differentiable when grad is on); the
    output head runs `chunk_tokens` positions at a time."""
    batch = right_pad(prompts, responses, pad_id)
    hidden = response_hidden(model, batch)
    head = _base(model).get_output_embeddings()
    targets = batch["target_ids"].to(hidden.device)
    # the head in fp32 even under bf16 autocast: a bf16 logit is off by ~0.1 at magnitude 20, and summed over a
    # response that moves a sequence log-probability by nats between batchings (DPO's first step off ln 2)
    with torch.autocast(hidden.device.type, enabled=False):
        per_token = torch.cat([
            torch.log_softmax(head(hidden[s: s + chunk_tokens].to(head.weight.dtype)).float(), -1)
            .gather(-1, targets[s: s + chunk_tokens, None]).squeeze(-1)
            for s in range(0, hidden.shape[0], chunk_tokens)])
    lengths = [len(r) for r in responses]
    return torch.stack([part.sum() for part in per_token.split(lengths)])


@torch.no_grad()
def reference_logprobs(model: torch.nn.Module, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                       pad_id: int, batch_size: int = 8) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = torch.empty(len(prompts))
    for b in batches(len(prompts), batch_size):
        out[b] = sequence_logprobs(model, [prompts[i] for i in b], [responses[i] for i in b], pad_id).float().cpu()
    model.train(was_training)
    return out


class DPOLoss:
    """The DPO objective on (chosen, rejected) sequence log-probabilities and their reference values; the
    `dpo` loss of a `distill.stages` entry (generation templates)."""

    tasks = ("generation",)
    stage_only = True  # aligns a trained student: a later entry of distill.stages

    class Config(TypedConfig):
        """`distill.stages[].loss` parameters of `kind: dpo`."""

        beta: float = Field(0.1, gt=0, description="Strength of the preference against the reference (DPO's beta).")
        samples: int = Field(2, ge=1, le=16, description="Completions the student samples per training prompt to "
                             "find a rejected one (a completion the verifier fails).")
        temperature: float = Field(1.0, gt=0, description="Sampling temperature of those completions.")
        max_new_tokens: int = Field(160, ge=1, description="Longest student completion.")

    def __init__(self, beta: float = 0.1, samples: int = 2, temperature: float = 1.0, max_new_tokens: int = 160):
        if beta <= 0:
            raise DistillError(f"DPO beta must be > 0, got {beta}")
        self.beta, self.samples, self.temperature, self.max_new_tokens = beta, samples, temperature, max_new_tokens
        self.last_terms: dict[str, float] = {}

    def __call__(self, chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor,
                 ref_rejected: torch.Tensor) -> torch.Tensor:
        """Mean loss over the pairs."""
        margin = (chosen - ref_chosen) - (rejected - ref_rejected)
        loss = -F.logsigmoid(self.beta * margin).mean()
        self.last_terms = {"dpo": loss.item(), "reward_margin": (self.beta * margin).mean().item(),
                           "reward_accuracy": (margin > 0).float().mean().item()}
        return loss


def make_dpo_loss(prompts: Sequence[Sequence[int]], chosen: Sequence[Sequence[int]], rejected: Sequence[Sequence[int]],
                  ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, loss: DPOLoss,
                  pad_id: int) -> Callable[[torch.nn.Module, list[int]], tuple[torch.Tensor, int]]:
    """batch_loss(model, idx) -> (summed DPO loss, pairs) over pairs idx."""
    if not (len(prompts) == len(chosen) == len(rejected) == len(ref_chosen) == len(ref_rejected)):
        raise DistillError("DPO pairs: prompts, chosen, rejected and reference values differ in number")

    def batch_loss(model: torch.nn.Module, idx: list[int]) -> tuple[torch.Tensor, int]:
        p = [prompts[i] for i in idx]
        both = sequence_logprobs(model, p + p, [chosen[i] for i in idx] + [rejected[i] for i in idx], pad_id)
        c, r = both[: len(idx)], both[len(idx):]
        value = loss(c, r, ref_chosen[idx].to(c.device), ref_rejected[idx].to(c.device))
        return value * len(idx), len(idx)

    return batch_loss
