"""What every runtime's text generation takes and returns, so torch and llama.cpp completions compare alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sdk.errors import DistillError


@dataclass
class Generation:
    """One completion. `token_ids` are the generated ids up to (excluding) end-of-generation or the token
    that completed a stop string; `text` is their decoding cut before the stop string. A token that straddles
    the stop string's start is kept, so `text` is always a prefix of the decoded `token_ids`.
    ttft_s: seconds to the first new token (prompt processing + one step); seconds: the whole call.
    In a batch both are the batch's, shared by its generations."""

    text: str
    token_ids: list[int]
    ttft_s: float
    seconds: float
    finish: Literal["stop", "length"]

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class GenerationParams:
    """temperature 0 = greedy (top_p ignored); n completions per prompt, sampled with seeds derived from `seed`."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    n: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise DistillError(f"GenerationParams.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise DistillError(f"GenerationParams.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise DistillError(f"GenerationParams.top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1:
            raise DistillError(f"GenerationParams.n must be >= 1, got {self.n}")
        if isinstance(self.stop, str) or any(not isinstance(s, str) or not s for s in self.stop):
            raise DistillError(f"GenerationParams.stop must be a list of non-empty strings, got {self.stop!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def split_reasoning(text: str) -> tuple[str, str | None]:
    """(answer, reasoning) of a completion that starts with an R1-style trace, <think>...</think>; a text
    without one is its own answer. Verifiers check the answer; a trace kept in training targets is shown
    here, so a student trained on traces is judged on what follows them."""
    stripped = text.lstrip()
    if stripped.startswith("<think>") and "</think>" in stripped:
        trace, _, answer = stripped[len("<think>"):].partition("</think>")
        return answer.lstrip("\n"), trace.strip()
    return text, None


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """(text before the earliest stop string, whether one occurred)."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def finish_generation(ids: Sequence[int], decode: Callable[[Sequence[int]], str], stop: Sequence[str],
                      ended: bool, ttft_s: float, seconds: float) -> Generation:
    """A Generation from the new ids (end-of-generation already removed; ended = one was produced):
    applies the stop strings to the decoded text and keeps the ids that produced the kept text."""
    text, hit = truncate_at_stop(decode(ids), stop)
    if hit:
        ids = _covering_prefix(ids, decode, len(text))
    return Generation(text=text, token_ids=list(ids), ttft_s=ttft_s, seconds=seconds,
                      finish="stop" if hit or ended else "length")


def _covering_prefix(ids: Sequence[int], decode: Callable[[Sequence[int]], str], n_chars: int) -> Sequence[int]:
    """Shortest prefix of ids whose decoding is at least n_chars long (decoded prefixes only grow)."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(ids[:mid])) >= n_chars:
            hi = mid
        else:
            lo = mid + 1
    return ids[:lo]
