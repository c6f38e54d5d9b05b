"""pass@k: the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code"),
averaged over problems, overall and per group (e.g. difficulty)."""

from __future__ import annotations

import math
from typing import Hashable, Iterable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k samples drawn without replacement from n, of which c are correct, is correct)
    = 1 - C(n-c, k) / C(n, k), in the numerically stable product form 1 - prod_{i=n-c+1}^{n} (1 - k/i)."""
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise TypeError(f"pass_at_k needs integers, got n={n!r}, c={c!r}, k={k!r}")
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k must be in 1..n={n}, got k={k}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_at_k_table(passed: Sequence[Sequence[bool]], ks: Iterable[int]) -> dict[str, float]:
    """{"pass@k": mean over problems of pass_at_k(n_i, c_i, k)} for each k in ks; a k larger than some
    problem's number of samples is left out (its key omitted), as are all keys when there are no problems."""
    table: dict[str, float] = {}
    if not passed:
        return table
    counts = [(len(p), sum(bool(x) for x in p)) for p in passed]
    fewest = min(n for n, _ in counts)
    for k in sorted(set(int(k) for k in ks)):
        if k < 1:
            raise ValueError(f"pass@k: k must be >= 1, got {k}")
        if k > fewest:
            continue
        table[f"pass@{k}"] = sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)
    return table


def by_group(passed: Sequence[Sequence[bool]], groups: Sequence[Hashable],
             ks: Iterable[int]) -> dict[str, dict[str, float]]:
    """pass_at_k_table per group (e.g. difficulty), groups in order of first appearance."""
    if len(passed) != len(groups):
        raise ValueError(f"by_group: {len(passed)} problems but {len(groups)} group labels")
    ks = list(ks)
    members: dict[str, list[Sequence[bool]]] = {}
    for p, g in zip(passed, groups):
        members.setdefault(str(g), []).append(p)
    return {g: pass_at_k_table(ps, ks) for g, ps in members.items()}
