import numpy as np
import pytest

from evaluation.uncertainty import paired_bootstrap


def _pass_rate_on(passed):
    def metrics_on(idx):
        return {name: {"pass@1": float(np.mean(p[idx]))} for name, p in passed.items()}
    return metrics_on


def test_interval_covers_the_binomial_spread():
    rng = np.random.default_rng(0)
    teacher = rng.random(400) < 0.5
    iv = paired_bootstrap(400, _pass_rate_on({"t": teacher}), teacher="t", compared=("pass@1",),
                          lower_is_better=(), resamples=600, seed=1)
    lo, hi = iv["metrics"]["t"]["pass@1"]
    p = teacher.mean()
    half = 1.96 * np.sqrt(p * (1 - p) / 400)  # normal approximation of the binomial interval
    assert lo < p < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)


def test_paired_retention_interval_is_narrower_than_independent_ones():
    """A student that agrees with its teacher on most problems: the ratio is known far better than the
    two pass rates, because both move together on every resample."""
    rng = np.random.default_rng(0)
    teacher = rng.random(300) < 0.5
    student = teacher.copy()
    flip = rng.choice(300, 12, replace=False)
    student[flip] = ~student[flip]
    iv = paired_bootstrap(300, _pass_rate_on({"t": teacher, "s": student}), teacher="t", compared=("pass@1",),
                          lower_is_better=(), resamples=600, seed=2)
    lo, hi = iv["retention"]["s"]["pass@1"]
    ratio = student.mean() / teacher.mean()
    assert lo <= ratio <= hi
    t_lo, t_hi = iv["metrics"]["t"]["pass@1"]
    naive = (t_hi - t_lo) / teacher.mean() * np.sqrt(2)  # width if the two were independent
    assert hi - lo < naive / 2
    assert "t" not in iv["retention"]


def test_undefined_metric_gets_no_interval():
    def metrics_on(idx):
        return {"t": {"auc": float("nan")}, "s": {"auc": float("nan")}}
    iv = paired_bootstrap(10, metrics_on, teacher="t", compared=("auc",), lower_is_better=(), resamples=20)
    assert iv["metrics"]["t"]["auc"] is None


def test_wilson_interval_of_a_proportion_at_zero_is_not_a_point():
    from evaluation.uncertainty import wilson

    lo, hi = wilson(0, 6)
    assert lo == 0.0 and hi == pytest.approx(1.96**2 / (6 + 1.96**2), abs=1e-3)  # 0.390: no catch in 6 is weak news
    lo, hi = wilson(6, 6)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.3903, abs=1e-3)
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.404, abs=1e-3) and hi == pytest.approx(0.596, abs=1e-3)
    assert wilson(0, 0) is None
    with pytest.raises(ValueError, match="7 successes in 6 trials"):
        wilson(7, 6)


def test_counted_proportions_replace_the_bootstrap_point_at_zero():
    """A student that catches none of 6 positives: the percentile bootstrap says [0, 0]; the counts say up
    to 39%. Metrics without counts keep their bootstrap interval, and the method names the Wilson ones."""
    from evaluation.uncertainty import with_proportion_intervals

    y = np.array([1] * 6 + [0] * 30)
    caught = np.zeros(36, dtype=bool)

    def metrics_on(idx):
        pos = max(int(y[idx].sum()), 1)
        return {"t": {"recall": float((caught[idx] & (y[idx] == 1)).sum() / pos), "auc": 0.5 + 0.01 * len(set(idx))}}

    iv = paired_bootstrap(36, metrics_on, teacher="t", compared=("recall",), lower_is_better=(), resamples=200)
    assert iv["metrics"]["t"]["recall"] == [0.0, 0.0]
    auc = iv["metrics"]["t"]["auc"]
    iv = with_proportion_intervals(iv, {"t": {"recall": (0, 6)}})
    lo, hi = iv["metrics"]["t"]["recall"]
    assert lo == 0.0 and 0.38 < hi < 0.40 and iv["metrics"]["t"]["auc"] == auc
    assert iv["proportions"] == ["recall"] and iv["method"].endswith("recall: Wilson score intervals of their counts")
