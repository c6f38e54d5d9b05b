"""Losses behind one protocol; the recipe calls `loss(student_logits, batch)` and knows nothing else.

Registered under the `distill_sdk.losses` entry point so users can plug in their own by name, or pass
any object with this call signature to `sdk.distill.recipe.train`.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F


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
