"""Losses behind one protocol; the recipe calls `loss(student_logits, batch)` and knows nothing else.

Registered under the `distill_sdk.losses` entry point so users can plug in their own by name, or pass
any object with this call signature to `sdk.distill.recipe.train`.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.checkpoint import checkpoint

from sdk.errors import DistillError


class Loss(Protocol):
    def __call__(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """logits: [B, vocab] at the answer position; batch: per-example tensors (`target`, teacher top-k)."""
        ...


class TaskCrossEntropy:
    """Cross-entropy on the answer token: used to adapt a small teacher to the labelled data."""

    def __call__(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch["target"])


class SoftTargetKD:
    """alpha * CE(task) + (1 - alpha) * T^2 * KL(teacher_T || student_T) (Hinton et al., 2015).

    The teacher is given sparsely as its top-k logits (`teacher_topk_logits`, `teacher_topk_ids`):
    its softened distribution is renormalised over those k tokens, and the student's full-vocabulary
    log-probabilities are read at the same ids. T^2 keeps the gradient scale independent of T.
    """

    class Config(BaseModel):
        """`distill.loss` parameters of `kind: soft_target_kd`."""

        model_config = ConfigDict(extra="forbid")
        temperature: float = Field(2.0, gt=0, description="Softmax temperature of the KL term (scaled by T^2).")
        alpha: float = Field(0.5, ge=0, le=1, description="Weight of the task cross-entropy; 1-alpha weights the KL.")

    def __init__(self, temperature: float = 2.0, alpha: float = 0.5):
        self.temperature = temperature
        self.alpha = alpha

    def __call__(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        t = self.temperature
        logits = logits.float()
        teacher_logp = F.log_softmax(batch["teacher_topk_logits"].float() / t, dim=-1)
        student_logp = F.log_softmax(logits / t, dim=-1).gather(-1, batch["teacher_topk_ids"])
        kl = (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1).mean()
        ce = F.cross_entropy(logits, batch["target"])
        return self.alpha * ce + (1 - self.alpha) * t * t * kl


class ResponseKD:
    """Token-level KD over response tokens: alpha * CE + (1 - alpha) * T^2 * KL(teacher_T || student_T),
    each a mean over the N response positions.

    Called as loss(hidden [N, H], head, targets) with the final hidden states at the response positions
    and the lm_head, not logits: [N x vocab] logits for a whole batch of completions are large (1k tokens x
    49k vocab x 4 B = 200 MB, several times over for softmax and grads), so they are built `chunk_tokens`
    rows at a time, each chunk under activation checkpointing so its logits are recomputed in backward
    instead of saved. targets: `target_ids` [N]; when alpha < 1 also the teacher's `topk_ids` [N, k] and
    `topk_logprobs` [N, k] (T=1 log-probabilities, renormalised over the k ids at temperature T, as in
    SoftTargetKD). alpha=1 is plain sequence-level KD (CE on the teacher's completions).
    """

    class Config(BaseModel):
        """`distill.loss` parameters of `kind: response_kd`."""

        model_config = ConfigDict(extra="forbid")
        temperature: float = Field(1.0, gt=0, description="Softmax temperature of the token-level KL (scaled by T^2).")
        alpha: float = Field(0.5, ge=0, le=1, description="Weight of sequence-level KD (cross-entropy on the "
                             "teacher's accepted completions); 1-alpha weights the token-level KL. 1 = sequence KD alone.")
        chunk_tokens: int = Field(256, ge=1, description="Response positions per chunk of the loss: only one "
                                  "chunk's [tokens x vocab] logits exist at a time, in forward and backward.")

    def __init__(self, temperature: float = 1.0, alpha: float = 0.5, chunk_tokens: int = 256):
        if not 0.0 <= alpha <= 1.0:
            raise DistillError(f"ResponseKD alpha must be in [0, 1], got {alpha}")
        if temperature <= 0:
            raise DistillError(f"ResponseKD temperature must be > 0, got {temperature}")
        if chunk_tokens < 1:
            raise DistillError(f"ResponseKD chunk_tokens must be >= 1, got {chunk_tokens}")
        self.temperature = temperature
        self.alpha = alpha
        self.chunk_tokens = chunk_tokens

    def __call__(self, hidden: torch.Tensor, head: torch.nn.Module, targets: dict[str, torch.Tensor]) -> torch.Tensor:
        n = hidden.shape[0]
        target_ids = targets["target_ids"]
        if target_ids.shape[0] != n:
            raise DistillError(f"ResponseKD: {n} hidden states but {target_ids.shape[0]} target ids")
        use_kd = self.alpha < 1.0
        if use_kd:
            missing = [key for key in ("topk_ids", "topk_logprobs") if key not in targets]
            if missing:
                raise DistillError(f"ResponseKD with alpha={self.alpha} needs the teacher's top-k "
                                   f"({', '.join(missing)} missing); use alpha=1 to train on the completions alone")
            if targets["topk_ids"].shape[0] != n or targets["topk_logprobs"].shape[0] != n:
                raise DistillError(f"ResponseKD: {n} hidden states but teacher top-k rows for "
                                   f"{targets['topk_ids'].shape[0]} tokens")
        if n == 0:
            return hidden.sum() * 0.0
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, n, self.chunk_tokens):
            rows = slice(start, start + self.chunk_tokens)
            args = [hidden[rows], target_ids[rows]]
            if use_kd:
                args += [targets["topk_ids"][rows], targets["topk_logprobs"][rows]]
            if torch.is_grad_enabled():
                total = total + checkpoint(self._chunk_sum, head, *args, use_reentrant=False)
            else:
                total = total + self._chunk_sum(head, *args)
        return total / n

    def _chunk_sum(self, head: torch.nn.Module, hidden: torch.Tensor, target_ids: torch.Tensor,
                   topk_ids: torch.Tensor | None = None, topk_logprobs: torch.Tensor | None = None) -> torch.Tensor:
        """Summed (not averaged) loss of one chunk of positions."""
        logits = head(hidden).float()
        loss = logits.new_zeros(())
        if self.alpha > 0:
            loss = loss + self.alpha * F.cross_entropy(logits, target_ids, reduction="sum")
        if topk_ids is not None:
            t = self.temperature
            teacher_logp = F.log_softmax(topk_logprobs.float() / t, dim=-1)
            student_logp = F.log_softmax(logits / t, dim=-1).gather(-1, topk_ids.long())
            kl = (teacher_logp.exp() * (teacher_logp - student_logp)).sum()
            loss = loss + (1 - self.alpha) * t * t * kl
        return loss
