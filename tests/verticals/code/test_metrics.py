from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest

from verticals.code.metrics import by_group, pass_at_k, pass_at_k_table


def brute_force(n: int, c: int, k: int) -> float:
    """Fraction of the k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 8))
def test_matches_enumeration_over_subsets(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-12), (n, c, k)


def test_stable_for_large_n():
    n, c, k = 200, 3, 100
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)
    assert pass_at_k(10_000, 1, 1) == pytest.approx(1e-4, rel=1e-9)
    assert pass_at_k(10_000, 0, 100) == 0.0 and pass_at_k(10_000, 9_950, 100) == 1.0


@pytest.mark.parametrize("n, c, k", [(3, 1, 4), (3, 1, 0), (3, 4, 1), (0, 0, 1), (3, -1, 1)])
def test_invalid_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_table_averages_over_problems_and_omits_large_k():
    passed = [[True, False, False, False, False], [False] * 5, [True] * 5]
    table = pass_at_k_table(passed, [1, 5, 10])
    assert set(table) == {"pass@1", "pass@5"}
    assert table["pass@1"] == pytest.approx((0.2 + 0 + 1) / 3)
    assert table["pass@5"] == pytest.approx((1 + 0 + 1) / 3)
    assert pass_at_k_table([[True], [True, True]], [2]) == {}  # one problem has a single sample
    assert pass_at_k_table([], [1]) == {}


def test_by_group():
    passed = [[True, False], [False, False], [True, True]]
    groups = ["easy", "hard", "easy"]
    assert by_group(passed, groups, [1, 2]) == {"easy": {"pass@1": 0.75, "pass@2": 1.0},
                                                "hard": {"pass@1": 0.0, "pass@2": 0.0}}
    with pytest.raises(ValueError, match="2 group labels"):
        by_group(passed, groups[:2], [1])
