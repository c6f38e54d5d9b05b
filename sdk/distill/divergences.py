"""Divergences between the teacher's and the student's next-token distributions, and the bins they compare.

Every divergence takes two [N, B] tensors of log-probabilities over the same B bins, teacher first, and
returns [N] (one value per token position). The bins are either the whole vocabulary (a teacher whose
logits are at hand) or, for sparse top-k targets, the k ids the teacher kept plus one **tail bin** for the
rest of the vocabulary:

- student: its tempered log-probabilities at the k ids, and the log of its mass on every other id (exact);
- teacher, `tail: renormalize` (default, and the only choice for decision targets, which keep raw logits):
  the k probabilities renormalised to 1 at temperature T, the tail bin empty. Forward KL then reads
  sum_k p_k log(p_k / q_k) with the student's full-vocabulary q: the student is pushed to put its mass on the
  teacher's k ids, however small the teacher's own tail;
- teacher, `tail: bucket`: the k log-probabilities as given (T=1, as stored) and 1 - sum(p_k) in the tail bin,
  then tempered together (the tail is treated as a single token when T != 1: exact at T=1, an approximation
  otherwise). The student learns how much mass the teacher leaves outside its top k. A tail under 1e-4 is
  counted as empty (rounding of the stored fp16 log-probabilities, not mass).

With k = vocabulary size the tail is empty on both sides and either mode equals the full-vocabulary loss
(tests/sdk/distill/test_divergences.py).

Written here rather than taken from a library: TRL's `generalized_jsd_loss` covers JSD and the two KLs
over full logits only, with no top-k targets, tail bin or token chunking; these are a few lines each.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# log 0, kept finite: a masked term must have a zero gradient, and -inf would make it NaN (0 * inf)
NEG = -1e4
# reverse KL divides by the teacher: an empty teacher bin (a renormalised tail) counts as probability 1e-8
TEACHER_FLOOR = math.log(1e-8)
TAIL_EMPTY = 1e-4

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "total_variation", "skew_forward_kl", "skew_reverse_kl")
TAILS = ("renormalize", "bucket")


def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """KL(a || b) per row of log-probabilities; bins where a is 0 contribute exactly 0."""
    pa = a.exp()
    return torch.where(pa > 0, pa * (a - b), torch.zeros_like(pa)).sum(-1)


def _mix(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """log(w * e^a + (1 - w) * e^b), 0 < w < 1."""
    return torch.logaddexp(a + math.log(w), b + math.log1p(-w))


def forward_kl(teacher: torch.Tensor, student: torch.Tensor, **_) -> torch.Tensor:
    """KL(p || q): mass-covering (Hinton et al., 2015)."""
    return kl(teacher, student)


def reverse_kl(teacher: torch.Tensor, student: torch.Tensor, **_) -> torch.Tensor:
    """KL(q || p): mode-seeking (MiniLLM, Gu et al., 2024)."""
    return kl(student, teacher.clamp_min(TEACHER_FLOOR))


def jsd(teacher: torch.Tensor, student: torch.Tensor, beta: float = 0.5, **_) -> torch.Tensor:
    """Generalized JSD(beta) = beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q
    (GKD, Agarwal et al., 2024; TRL's generalized_jsd_loss for 0 < beta < 1)."""
    m = _mix(teacher, student, beta)
    return beta * kl(teacher, m) + (1 - beta) * kl(student, m)


def total_variation(teacher: torch.Tensor, student: torch.Tensor, **_) -> torch.Tensor:
    """1/2 sum |p - q| (bounded in [0, 1]; DistiLLM's and Wen et al.'s f-divergence family)."""
    return 0.5 * (teacher.exp() - student.exp()).abs().sum(-1)


def skew_forward_kl(teacher: torch.Tensor, student: torch.Tensor, skew: float = 0.1, **_) -> torch.Tensor:
    """KL(p || skew p + (1 - skew) q) (DistiLLM, Ko et al., 2024): bounded where q is near 0."""
    return kl(teacher, _mix(teacher, student, skew))


def skew_reverse_kl(teacher: torch.Tensor, student: torch.Tensor, skew: float = 0.1, **_) -> torch.Tensor:
    """KL(q || skew q + (1 - skew) p) (DistiLLM)."""
    return kl(student, _mix(student, teacher, skew))


FUNCTIONS = {"forward_kl": forward_kl, "reverse_kl": reverse_kl, "jsd": jsd, "total_variation": total_variation,
             "skew_forward_kl": skew_forward_kl, "skew_reverse_kl": skew_reverse_kl}


def divergence(name: str, teacher: torch.Tensor, student: torch.Tensor, *, beta: float = 0.5,
               skew: float = 0.1) -> torch.Tensor:
    return FUNCTIONS[name](teacher, student, beta=beta, skew=skew)


def student_bins(logits: torch.Tensor, ids: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """The student's tempered log-probabilities [N, k + 1] at the teacher's ids plus its tail (ids None:
    the whole vocabulary, [N, V])."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    if ids is None:
        return logp
    ids = ids.long()
    rest = logp.scatter(-1, ids, NEG).logsumexp(-1, keepdim=True)  # every id the teacher did not keep
    return torch.cat([logp.gather(-1, ids), rest.clamp_min(NEG)], dim=-1)


def sorted_student_bins(logits: torch.Tensor, k: int, temperature: float, tail: str = "renormalize") -> torch.Tensor:
    """ULD's view of the student: its k largest tempered log-probabilities in decreasing order plus the rest
    (as teacher_bins: renormalized over the k, or the remaining mass as a bin), [N, k + 1]; no token ids."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    top = logp.topk(min(k, logp.shape[-1]), dim=-1).values
    if tail == "bucket":
        rest = torch.log1p(-top.exp().sum(-1, keepdim=True).clamp(max=1 - 1e-7))
        return torch.cat([top, rest.clamp_min(NEG)], dim=-1)
    return torch.cat([F.log_softmax(top, dim=-1), torch.full_like(top[..., :1], NEG)], dim=-1)


def teacher_bins(values: torch.Tensor, temperature: float, tail: str = "renormalize",
                 sparse: bool = True) -> torch.Tensor:
    """The teacher's tempered log-probabilities: [N, k + 1] from top-k values (log-probabilities at T=1, or
    raw logits with `renormalize`) plus the tail bin, or [N, V] from full logits (sparse False)."""
    values = values.float()
    if not sparse:
        return F.log_softmax(values / temperature, dim=-1)
    if tail == "bucket":
        mass = 1.0 - values.exp().sum(-1, keepdim=True)
        # a residue under TAIL_EMPTY is rounding (fp16 storage, k near the vocabulary), not mass: tempering
        # at T > 1 would inflate it (1e-7 at T=2 becomes 3e-4)
        rest = torch.where(mass > TAIL_EMPTY, mass.clamp_min(TAIL_EMPTY).log(), torch.full_like(mass, NEG))
    elif tail == "renormalize":
        rest = torch.full_like(values[..., :1], NEG * temperature)  # stays NEG after the division by T
    else:
        raise ValueError(f"tail must be one of {TAILS}, got {tail!r}")
    return F.log_softmax(torch.cat([values, rest], dim=-1) / temperature, dim=-1)
