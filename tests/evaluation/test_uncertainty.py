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
