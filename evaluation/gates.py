"""Release gates: every exported artifact against the unquantized student (torch), on the validation split.

An artifact passes when its primary metric keeps at least `min_retention` of the reference's (for a
lower-is-better metric, the reference's value is at least that fraction of the artifact's). A reference at
zero (nothing to lose) lets anything at least as good pass. Parity figures (how far the outputs moved) are
kept beside the verdict: they explain a failure and show drift that the metric does not yet.

Three verdicts, because a validation split can be too small to tell: "pass" (the retention meets the floor),
"fail" (below the floor, and the paired-bootstrap interval of the retention lies wholly below it too) and
"inconclusive" (below the floor on these examples, but the interval reaches the floor: on 10 code problems one
problem is 10% of pass@1, so a file that loses one problem is not shown to be worse). Only a pass is shipped
by default; an inconclusive artifact can be bundled by name, its verdict recorded in the model card. A metric
undefined on the validation split (NaN: ROC-AUC without both classes) decides nothing: inconclusive, with the
reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from evaluation.uncertainty import MetricsOn, paired_bootstrap


def retention(value: float, reference: float, lower_is_better: bool) -> float | None:
    """value as a fraction of the reference, oriented so that 1.0 means "as good" and less means worse."""
    if lower_is_better:
        return None if value == 0 else reference / value
    return None if reference == 0 else value / reference


def release_gate(val_metrics: dict[str, float], reference_metrics: dict[str, float], metric: str,
                 lower_is_better: bool, min_retention: float,
                 retention_ci: Sequence[float] | None = None) -> dict[str, Any]:
    """The verdict of one artifact. retention_ci: the paired interval of its retention on the same validation
    examples (gate_intervals); without one a retention under the floor is a plain fail."""
    value, ref = float(val_metrics[metric]), float(reference_metrics[metric])
    if not (np.isfinite(value) and np.isfinite(ref)):  # e.g. ROC-AUC on a validation split of one class
        return {"metric": metric, "split": "val", "value": value if np.isfinite(value) else None,
                "reference_value": ref if np.isfinite(ref) else None, "retention": None, "retention_ci": None,
                "min_retention": min_retention, "verdict": "inconclusive", "passed": False,
                "reason": f"{metric} is undefined on the validation split (one class only?)"}
    kept = retention(value, ref, lower_is_better)
    if kept is None:  # the reference is at the worst end (0 for higher-is-better), or the artifact is perfect
        passed = value <= ref if lower_is_better else value >= ref
    else:
        passed = kept >= min_retention
    ci = None if retention_ci is None else [float(retention_ci[0]), float(retention_ci[1])]
    if passed:
        verdict = "pass"
    elif ci is not None and kept is not None and ci[1] >= min_retention:
        verdict = "inconclusive"
    else:
        verdict = "fail"
    return {"metric": metric, "split": "val", "value": value, "reference_value": ref, "retention": kept,
            "retention_ci": ci, "min_retention": min_retention, "verdict": verdict, "passed": verdict == "pass"}


def gate_intervals(n: int, metrics_on: MetricsOn, reference: str, names: Sequence[str], metric: str,
                   lower_is_better: bool, resamples: int = 1000, seed: int = 0) -> dict[str, list[float] | None]:
    """{artifact: 95% interval of its retention of `metric`} from one paired bootstrap over the n validation
    examples: metrics_on(indices) gives every artifact's metrics (the reference's too) on the same resample."""
    iv = paired_bootstrap(n, metrics_on, teacher=reference, compared=[metric],
                          lower_is_better=[metric] if lower_is_better else [], resamples=resamples, seed=seed,
                          split="validation")
    return {name: iv["retention"].get(name, {}).get(metric) for name in names}


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
