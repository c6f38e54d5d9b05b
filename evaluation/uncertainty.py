"""Confidence intervals for the report: a paired percentile bootstrap over the held-out examples, and Wilson
score intervals for the metrics that are proportions of counted examples.

Paired: each resample draws one set of example indices and scores every artifact on it, so a retention
ratio's interval reflects how the student and the teacher move together on the same examples (much
narrower than dividing two independent intervals). Thresholds stay fixed (chosen on validation), so the
intervals are those of the test figures at the chosen operating point. Shape-agnostic: the caller passes
a function computing every artifact's metrics on a set of indices (the template's own `metrics`).

A proportion (recall: caught of the frauds; accuracy: right of the graded) gets the Wilson score interval of
its counts instead (`wilson`, scipy's binomtest): the percentile bootstrap of a proportion at 0 or 1 is a
point (0 of 13 frauds caught read "0.000 [0.000, 0.000]", as if certain), and on a few dozen examples its
coverage falls short; Wilson's stays close to the level at any count (Brown, Cai & DasGupta 2001).

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


def wilson(k: int, n: int, level: float = 0.95) -> list[float] | None:
    """The Wilson score interval of k successes in n trials; None without a trial (an undefined proportion)."""
    from scipy.stats import binomtest

    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"{k} successes in {n} trials")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return [float(ci.low), float(ci.high)]


def with_proportion_intervals(iv: dict, counts: dict[str, dict[str, tuple[int, int]]]) -> dict:
    """`iv` (paired_bootstrap's) with each counted proportion's interval replaced by its Wilson interval:
    counts maps artifact -> {metric: (successes, trials)} on the same split. The method says which metrics."""
    named = sorted({m for per in counts.values() for m in per})
    for art, per in counts.items():
        for metric, (k, n) in per.items():
            iv["metrics"].setdefault(art, {})[metric] = wilson(k, n, iv["level"])
    if named:
        iv["method"] += f"; {', '.join(named)}: Wilson score intervals of their counts"
        iv["proportions"] = named
    return iv
