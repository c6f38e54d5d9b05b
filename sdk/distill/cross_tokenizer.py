"""Token-level distillation between a teacher and a student whose tokenizers differ.

The two models cut the same response text into different tokens, and their distributions live over
different vocabularies. What they share is the text: where both tokenizations start a token at the same
character, both models have seen exactly the same text before it and predict the next piece of it. At
those aligned positions (character-offset alignment, as TRL's experimental GOLD trainer does) the student is matched to the teacher with a vocabulary-free loss: ULD (Boizard et al., 2024,
arXiv:2402.12030) compares the two distributions' probabilities sorted in decreasing order, which needs
no mapping between token ids. Positions inside a teacher or student token have no counterpart: they train
on the sequence-level cross-entropy alone.

Character spans come from decoding every prefix of a token sequence (not from a tokenizer's offset
mapping, which trims spaces differently per tokenizer): a span ends where the decoded prefix ends, and
byte pieces of one character get an empty span until the character is complete.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sdk.distill.divergences import NEG


def token_char_spans(tok, ids: Sequence[int], text: str | None = None) -> list[tuple[int, int]] | None:
    """Each token's [start, end) in the decoded text (special tokens decode to nothing: an empty span at
    the end). None when decoding the tokens does not give back `text` (then no position can be aligned)."""
    spans, prev = [], 0
    decoded = ""
    for i in range(len(ids)):
        decoded = tok.decode(list(ids[: i + 1]), skip_special_tokens=True)
        end = prev if decoded.endswith("\ufffd") else len(decoded)  # inside a character: not a boundary yet
        spans.append((prev, max(prev, end)))
        prev = max(prev, end)
    if text is not None and tok.decode(list(ids), skip_special_tokens=True) != text:
        return None
    return spans


def boundaries(spans: Sequence[tuple[int, int]]) -> dict[int, int]:
    """character -> the first token starting there: the position whose prediction is "the text from here"."""
    first: dict[int, int] = {}
    for i, (start, _) in enumerate(spans):
        first.setdefault(int(start), i)
    return first


def align(teacher_spans: Sequence[tuple[int, int]], student_spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """(teacher position, student position) pairs that start at the same character, in order."""
    t, s = boundaries(teacher_spans), boundaries(student_spans)
    return [(t[c], s[c]) for c in sorted(t.keys() & s.keys())]


def student_rows(teacher_logprobs: np.ndarray, teacher_spans: Sequence[tuple[int, int]],
                 student_spans: Sequence[tuple[int, int]] | None) -> tuple[np.ndarray, np.ndarray, int]:
    """The teacher's top-k log-probabilities moved to the student's positions: (logprobs [L_s, k] with NEG
    rows where no teacher position aligns, ids [L_s, k] of zeros (a vocabulary-free loss reads no ids),
    aligned position count)."""
    k = teacher_logprobs.shape[1]
    n = len(student_spans or [])
    out = np.full((n, k), NEG, dtype=np.float32)
    pairs = align(teacher_spans, student_spans) if student_spans is not None else []
    for ti, si in pairs:
        out[si] = teacher_logprobs[ti]
    return out, np.zeros((n, k), dtype=np.int64), len(pairs)
