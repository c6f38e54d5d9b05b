"""Losses behind one protocol; the recipe calls `loss(student_logits, batch)` and knows nothing else.

Registered under the `distill_sdk.losses` entry point so users can plug in their own by name, or pass
any object with this call signature to `sdk.distill.recipe.train`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch.utils.checkpoint import checkpoint

from sdk.distill.divergences import (DIVERGENCES, NEG, TAILS, divergence, sorted_student_bins, student_bins,
                                     teacher_bins)
from sdk.distill.schedules import Schedule, Scheduled, check_range, value_at  # noqa: F401
from sdk.errors import DistillError
from sdk.typed_config import TypedConfig


class Loss(Protocol):
    """A registered loss (`distill.loss.kind`). It may declare `tasks`, the template shapes it trains
    ("decision": logits at the answer position; "generation": response tokens), and `stage_only` when it only
    continues a trained student (a later `distill.stages` entry); both are checked before training."""

    def __call__(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """logits: [B, vocab] at the answer position; batch: per-example tensors (`target`, teacher top-k)."""
        ...


class TaskCrossEntropy:
    """Cross-entropy on the answer token: used to adapt a small teacher to the labelled data."""

    def __call__(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch["target"])


class _KDConfig(TypedConfig):
    """The keys every KD loss shares."""

    # keys added after run folders existed: left out of the stored loss config while at their defaults, so
    # those runs' stage hashes (and their cached annotations and students) stay valid
    omit_if_default: ClassVar[tuple[str, ...]] = ("divergence", "beta", "skew", "tail", "recompute")
    temperature: Scheduled = Field(2.0, description="Softmax temperature of the distillation term, which is "
                                   "scaled by T^2 (a number, or a schedule: {kind: linear, start: 5, end: 1}).")
    alpha: Scheduled = Field(0.5, description="Weight of the task cross-entropy; 1-alpha weights the "
                             "distillation term (a number or a schedule).")
    divergence: Literal[DIVERGENCES] = Field(  # type: ignore[valid-type]
        "forward_kl", description="forward_kl (mass-covering), reverse_kl (mode-seeking), jsd (generalized, "
        "`beta`), total_variation, skew_forward_kl / skew_reverse_kl (`skew`).")
    beta: float = Field(0.5, gt=0, lt=1, description="jsd: weight of the teacher in the mixture.")
    skew: float = Field(0.1, gt=0, lt=1, description="skew KLs: weight of the first distribution in the mixture.")

    @field_validator("temperature")
    @classmethod
    def _temperature(cls, v: Scheduled) -> Scheduled:
        return check_range(v, "temperature", 0.0, 1e3, lo_open=True)

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: Scheduled) -> Scheduled:
        return check_range(v, "alpha", 0.0, 1.0)


def _scheduled(name: str, v: Any, lo: float, hi: float, lo_open: bool = False) -> Scheduled:
    """A loss parameter given in code or from a validated config (a schedule arrives as a dict)."""
    if isinstance(v, dict):
        v = Schedule.model_validate(v)
    try:
        return check_range(v, name, lo, hi, lo_open)
    except ValueError as err:
        raise DistillError(str(err)) from None


class _Scheduled:
    """Temperature and alpha that may follow a schedule: the recipe calls set_progress(fraction done) before
    each step. `last_terms` holds the last call's terms (detached, per normalisation unit) for the log."""

    def _init_kd(self, temperature: Any, alpha: Any, divergence: str, beta: float, skew: float) -> None:
        self.temperature_schedule = _scheduled("temperature", temperature, 0.0, 1e3, lo_open=True)
        self.alpha_schedule = _scheduled("alpha", alpha, 0.0, 1.0)
        if divergence not in DIVERGENCES:
            raise DistillError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
        if not (0 < beta < 1 and 0 < skew < 1):
            raise DistillError(f"beta and skew must be in (0, 1), got {beta} and {skew}")
        self.divergence, self.beta, self.skew = divergence, beta, skew
        self.last_terms: dict[str, float] = {}
        self.set_progress(0.0)

    def set_progress(self, fraction: float) -> None:
        self.temperature = value_at(self.temperature_schedule, fraction)
        self.alpha = value_at(self.alpha_schedule, fraction)

    def _divergence(self, teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
        return divergence(self.divergence, teacher, student, beta=self.beta, skew=self.skew)


class SoftTargetKD(_Scheduled):
    """alpha * CE(task) + (1 - alpha) * T^2 * D(teacher_T, student_T) at the answer position (Hinton et al.,
    2015, with D = forward KL by default; sdk.distill.divergences for the others).

    The teacher is given sparsely as its top-k logits (`teacher_topk_logits`, `teacher_topk_ids`): its
    softened distribution is renormalised over those k tokens (raw logits carry no tail mass), and the
    student's are its full-vocabulary probabilities at the same ids plus the rest in one tail bin. T^2 keeps
    the gradient scale independent of T.
    """

    tasks = ("decision",)

    class Config(_KDConfig):
        """`distill.loss` parameters of `kind: soft_target_kd`."""

    def __init__(self, temperature: Any = 2.0, alpha: Any = 0.5, *, divergence: str = "forward_kl",
                 beta: float = 0.5, skew: float = 0.1):
        self._init_kd(temperature, alpha, divergence, beta, skew)

    def __call__(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        t = self.temperature
        logits = logits.float()
        teacher = teacher_bins(batch["teacher_topk_logits"], t, "renormalize")
        kd = self._divergence(teacher, student_bins(logits, batch["teacher_topk_ids"], t)).mean() * t * t
        ce = F.cross_entropy(logits, batch["target"])
        self.last_terms = {"ce": ce.item(), "kd": kd.item(), "temperature": t, "alpha": self.alpha}
        return self.alpha * ce + (1 - self.alpha) * kd


class ResponseKD(_Scheduled):
    """Token-level KD over response tokens: alpha * CE + (1 - alpha) * T^2 * D(teacher_T, student_T), each a
    mean over the N response positions; D is forward KL by default (sdk.distill.divergences for the others
    and for how the tail of sparse top-k targets is handled).

    Called as loss(hidden [N, H], head, targets) with the final hidden states at the response positions
    and the lm_head, not logits: [N x vocab] logits for a whole batch of completions are large (1k tokens x
    49k vocab x 4 B = 200 MB, several times over for softmax and grads), so they are built `chunk_tokens`
    rows at a time; with `recompute` (auto: when they would pass 1 GiB) each chunk runs under activation
    checkpointing, so its logits are recomputed in backward instead of saved. targets: `target_ids` [N]; when alpha < 1 also the teacher's, either sparse: `topk_ids`
    [N, k] and `topk_logprobs` [N, k] (T=1 log-probabilities), or full: `teacher_logits` [N, vocab], or
    `teacher_hidden` [N, H_teacher] with the teacher's output head as `teacher_head` (a teacher run alongside:
    its logits are then built chunk by chunk too, so neither model's [N x vocab] logits exist whole).
    alpha=1 is plain sequence-level KD (CE on the teacher's completions).
    """

    tasks = ("generation",)

    class Config(_KDConfig):
        """`distill.loss` parameters of `kind: response_kd`."""

        omit_if_default: ClassVar[tuple[str, ...]] = (*_KDConfig.omit_if_default, "alignment")

        temperature: Scheduled = Field(1.0, description="Softmax temperature of the token-level term, scaled "
                                       "by T^2 (a number, or a schedule: {kind: linear, start: 5, end: 1}).")
        alpha: Scheduled = Field(0.5, description="Weight of sequence-level KD (cross-entropy on the teacher's "
                                 "accepted completions); 1-alpha weights the token-level term. 1 = sequence KD "
                                 "alone (a number or a schedule).")
        tail: Literal[TAILS] = Field(  # type: ignore[valid-type]
            "renormalize", description="The teacher's probability mass outside its top k: renormalize (its k "
            "probabilities renormalised to 1) or bucket (kept as one extra bin the student must match).")
        chunk_tokens: int = Field(256, ge=1, description="Response positions per chunk of the loss: logits are "
                                  "built this many rows at a time.")
        recompute: Literal["auto", "always", "never"] = Field(
            "auto", description="Recompute each chunk's logits in backward instead of keeping them (activation "
            "checkpointing): always, never, or auto = when a batch's logits would exceed 1 GiB (25% slower on "
            "small batches, bounded memory at large vocabularies and batches).")
        alignment: Literal["vocabulary", "uld"] = Field(
            "vocabulary", description="vocabulary: teacher and student share token ids (the divergence at the "
            "teacher's top-k ids). uld: a teacher with another tokenizer; at positions where both tokenizations "
            "start a token at the same character, the divergence compares probabilities sorted in decreasing "
            "order (ULD, vocabulary-free); other positions train on the cross-entropy alone "
            "(sdk/distill/cross_tokenizer.py). total_variation there is ULD's L1 distance.")

    RECOMPUTE_ABOVE = 1 << 30  # bytes of fp32 logits for the whole call, for recompute "auto"

    def __init__(self, temperature: Any = 1.0, alpha: Any = 0.5, chunk_tokens: int = 256, *,
                 divergence: str = "forward_kl", beta: float = 0.5, skew: float = 0.1, tail: str = "renormalize",
                 recompute: str = "auto", alignment: str = "vocabulary"):
        if chunk_tokens < 1:
            raise DistillError(f"ResponseKD chunk_tokens must be >= 1, got {chunk_tokens}")
        if tail not in TAILS:
            raise DistillError(f"ResponseKD tail must be one of {', '.join(TAILS)}, got {tail!r}")
        self._init_kd(temperature, alpha, divergence, beta, skew)
        if recompute not in ("auto", "always", "never"):
            raise DistillError(f"ResponseKD recompute must be auto, always or never, got {recompute!r}")
        if alignment not in ("vocabulary", "uld"):
            raise DistillError(f"ResponseKD alignment must be vocabulary or uld, got {alignment!r}")
        self.chunk_tokens, self.tail, self.recompute, self.alignment = chunk_tokens, tail, recompute, alignment

    def __call__(self, hidden: torch.Tensor, head: torch.nn.Module, targets: dict[str, torch.Tensor],
                 teacher_head: torch.nn.Module | None = None) -> torch.Tensor:
        n = hidden.shape[0]
        target_ids = targets["target_ids"]
        if target_ids.shape[0] != n:
            raise DistillError(f"ResponseKD: {n} hidden states but {target_ids.shape[0]} target ids")
        use_kd = self.alpha < 1.0
        online = "teacher_hidden" in targets
        dense = online or "teacher_logits" in targets
        if online and teacher_head is None:
            raise DistillError("ResponseKD: teacher_hidden needs the teacher's output head (teacher_head=)")
        if use_kd:
            keys = ("teacher_hidden",) if online else ("teacher_logits",) if dense else ("topk_ids", "topk_logprobs")
            missing = [key for key in keys if key not in targets]
            if missing:
                raise DistillError(f"ResponseKD with alpha={self.alpha} needs the teacher's top-k "
                                   f"({', '.join(missing)} missing); use alpha=1 to train on the completions alone")
            if any(targets[key].shape[0] != n for key in keys):
                raise DistillError(f"ResponseKD: {n} hidden states but teacher rows for "
                                   f"{targets[keys[0]].shape[0]} tokens")
        if n == 0:
            self.last_terms = {}
            return hidden.sum() * 0.0
        total = hidden.new_zeros((), dtype=torch.float32)
        terms = hidden.new_zeros(2, dtype=torch.float32)
        vocab = head.weight.shape[0]
        recompute = torch.is_grad_enabled() and (self.recompute == "always" or (
            self.recompute == "auto" and n * vocab * 4 * (2 if use_kd else 1) > self.RECOMPUTE_ABOVE))
        for start in range(0, n, self.chunk_tokens):
            rows = slice(start, start + self.chunk_tokens)
            teacher = None
            if use_kd and online:
                with torch.no_grad():  # the teacher's logits of this chunk only
                    teacher = teacher_head(targets["teacher_hidden"][rows]).float()
            elif use_kd:
                teacher = targets["teacher_logits"][rows] if dense else targets["topk_logprobs"][rows]
            ids = targets["topk_ids"][rows] if use_kd and not dense else None
            parts = hidden.new_zeros(2, dtype=torch.float32)  # the chunk's (ce, kd) sums, detached
            args = (head, hidden[rows], target_ids[rows], teacher, ids)
            # parts reaches the chunk through a closure: checkpoint saves tensor arguments and forbids their change
            chunk = lambda *a, parts=parts: self._chunk_sum(*a, parts=parts)  # noqa: E731
            if recompute:
                total = total + checkpoint(chunk, *args, use_reentrant=False)
            else:
                total = total + chunk(*args)
            terms += parts
        ce, kd = (terms / n).tolist()
        self.last_terms = {"ce": ce, "kd": kd, "temperature": self.temperature, "alpha": self.alpha}
        return total / n

    def _chunk_sum(self, head: torch.nn.Module, hidden: torch.Tensor, target_ids: torch.Tensor,
                   teacher: torch.Tensor | None, topk_ids: torch.Tensor | None, *, parts: torch.Tensor) -> torch.Tensor:
        """Summed (not averaged) loss of one chunk of positions; `parts` receives the unweighted (ce, kd) sums
        (once more when checkpointing recomputes the chunk in backward: hence copy_, not +=)."""
        logits = head(hidden).float()
        loss = logits.new_zeros(())
        ce = F.cross_entropy(logits, target_ids, reduction="sum")
        if self.alpha > 0:
            loss = loss + self.alpha * ce
        parts[0].copy_(ce.detach())
        if teacher is not None:
            t = self.temperature
            sparse = topk_ids is not None
            if self.alignment == "uld":  # sorted probabilities; rows without an aligned teacher position are NEG
                ranked = teacher.float().sort(dim=-1, descending=True).values
                aligned = (ranked[:, 0] > NEG / 2).float()
                kd = (self._divergence(teacher_bins(ranked, t, self.tail, sparse=True),
                                       sorted_student_bins(logits, ranked.shape[-1], t, self.tail)) * aligned).sum() * t * t
            else:
                kd = self._divergence(teacher_bins(teacher, t, self.tail, sparse=sparse),
                                      student_bins(logits, topk_ids, t)).sum() * t * t
            loss = loss + (1 - self.alpha) * kd
            parts[1].copy_(kd.detach())
        return loss
