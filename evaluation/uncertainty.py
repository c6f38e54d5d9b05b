"""Confidence intervals for the report: a paired percentile bootstrap over the held-out examples.

Paired: each resample draws one set of example indices and scores every artifact on it, so a retention
ratio's interval reflects how the student and the teacher move together on the same examples (much
narrower than dividing two independent intervals). Thresholds stay fixed (chosen on validation), so the
intervals are those of the test figures at the chosen operating point. Shape-agnostic: the caller passes
a function computing every artifact's metrics on a set of indices (the template's own `metrics`).

Hand-rolled because scipy.stats.bootstrap resamples one statistic of arrays, not a dict of metrics of
several artifacts computed by a domain function on shared indices; the percentile method is the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from evaluation.report import retention

MetricsOn = Callable[[np.ndarray], dict[str, dict[str, float]]]


def paired_bootstrap(n: int, metrics_on: MetricsOn, *, teacher: str, compared: Iterable[str],
                     lower_is_better: Iterable[str], resamples: int = 1000, level: float = 0.95,
                     seed: int = 0, progress: str | None = None, split: str = "test") -> dict:
    """{"level", "resamples", "method", "metrics": {artifact: {metric: [lo, hi]}},
    "retention": {student: {metric: [lo, hi]}}}; a metric undefined in some resamples (e.g. ROC-AUC
    without a positive) gets its interval from the resamples where it is defined."""
    compared, lower = list(compared), list(lower_is_better)
    rng = np.random.default_rng(seed)
    draws: dict[str, dict[str, list[float]]] = {}
    ratios: dict[str, dict[str, list[float]]] = {}
    steps = range(resamples)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc=progress, leave=False)
    for _ in steps:
        idx = rng.integers(0, n, size=n)
        per = metrics_on(idx)
        for art, m in per.items():
            d = draws.setdefault(art, {})
            for k, v in m.items():
                if v is not None:  # a threshold a template does not use
                    d.setdefault(k, []).append(float(v))
        for art, m in per.items():
            if art == teacher:
                continue
            r = ratios.setdefault(art, {})
            for k, v in retention(per[teacher], m, compared, lower).items():
                r.setdefault(k, []).append(np.nan if v is None else float(v))
    tail = 100 * (1 - level) / 2
    return {"level": level, "resamples": resamples, "method": f"paired percentile bootstrap over {split} examples",
            "metrics": {a: {k: _interval(v, tail) for k, v in d.items()} for a, d in draws.items()},
            "retention": {a: {k: _interval(v, tail) for k, v in d.items()} for a, d in ratios.items()}}


def _interval(values: list[float], tail: float) -> list[float] | None:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 0.5 * len(values) or len(v) == 0:
        return None  # undefined in most resamples: no honest interval
    return [float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))]
