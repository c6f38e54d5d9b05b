"""Scheduled values: a number or a schedule, and the range check every loss config runs on them."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from sdk.distill.schedules import Schedule, check_range, value_at


def test_a_schedule_moves_between_its_ends():
    linear = Schedule(kind="linear", start=5.0, end=1.0)
    assert [value_at(linear, p) for p in (0.0, 0.5, 1.0)] == [5.0, 3.0, 1.0]
    step = Schedule(kind="step", values=[0.0, 0.5], milestones=[0.5])
    assert [value_at(step, p) for p in (0.0, 0.49, 0.5, 1.0)] == [0.0, 0.0, 0.5, 0.5]
    assert value_at(Schedule(kind="cosine", start=1.0, end=0.0), 0.5) == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -0.1, 1.1])
def test_the_range_check_refuses_nan_and_out_of_range_values(bad):
    # a third-party loss config need not refuse NaN itself: `x > hi or x < lo` would let NaN through
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        check_range(bad, "alpha", 0, 1)
    assert check_range(0.5, "alpha", 0, 1) == 0.5
    with pytest.raises(ValueError, match=r"must be in \(0, 10\]"):
        check_range(0.0, "temperature", 0, 10, lo_open=True)


def test_a_schedule_refuses_nan_ends():
    with pytest.raises(ValidationError, match="finite number"):
        Schedule(kind="linear", start=1.0, end=math.nan)
