"""Release gates: every exported artifact against the unquantized student (torch), on the validation split.

An artifact passes when its primary metric keeps at least `min_retention` of the reference's (for a
lower-is-better metric, the reference's value is at least that fraction of the artifact's). A reference at
zero (nothing to lose) lets anything at least as good pass. Parity figures (how far the outputs moved) are
kept beside the verdict: they explain a failure and show drift that the metric does not yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def retention(value: float, reference: float, lower_is_better: bool) -> float | None:
    """value as a fraction of the reference, oriented so that 1.0 means "as good" and less means worse."""
    if lower_is_better:
        return None if value == 0 else reference / value
    return None if reference == 0 else value / reference


def release_gate(val_metrics: dict[str, float], reference_metrics: dict[str, float], metric: str,
                 lower_is_better: bool, min_retention: float) -> dict[str, Any]:
    value, ref = float(val_metrics[metric]), float(reference_metrics[metric])
    kept = retention(value, ref, lower_is_better)
    if kept is None:  # the reference is at the worst end (0 for higher-is-better), or the artifact is perfect
        passed = value <= ref if lower_is_better else value >= ref
    else:
        passed = kept >= min_retention
    return {"metric": metric, "split": "val", "value": value, "reference_value": ref, "retention": kept,
            "min_retention": min_retention, "passed": bool(passed)}


def decision_parity(probs: np.ndarray, reference: np.ndarray, threshold: float | None,
                    reference_threshold: float | None) -> dict[str, float]:
    """How far the label probabilities (the last label's, what a threshold is applied to) moved."""
    p, r = np.asarray(probs)[:, -1], np.asarray(reference)[:, -1]
    out = {"max_abs_prob_diff": float(np.abs(p - r).max()), "mean_abs_prob_diff": float(np.abs(p - r).mean())}
    if threshold is not None and reference_threshold is not None:
        out["decision_agreement"] = float(((p >= threshold) == (r >= reference_threshold)).mean())
    else:
        out["decision_agreement"] = float((np.asarray(probs).argmax(-1) == np.asarray(reference).argmax(-1)).mean())
    return out


def generation_parity(texts: Sequence[str], reference: Sequence[str]) -> dict[str, float]:
    """Share of greedy completions identical to the reference's, and of verdicts that agree."""
    same = [a == b for a, b in zip(texts, reference)]
    return {"identical_completions": float(np.mean(same)) if same else 1.0}
