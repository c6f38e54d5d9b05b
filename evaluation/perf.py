"""Latency percentiles, decision rate and peak memory of a runtime, measured in its own process."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np


def latency_stats(fn: Callable[[int], object], n: int, warmup: int = 3) -> dict[str, float]:
    """Time fn(i) for i in range(n) after `warmup` untimed calls: warm, batch-1 latencies."""
    for i in range(min(warmup, n)):
        fn(i)
    times = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t) * 1000.0)
    ms = np.asarray(times)
    return {"p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
            "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()), "n": int(n)}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far.

    VmHWM first: ru_maxrss of a child started by fork+exec still counts the parent's pages on Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1024.0 * 1024.0) if sys.platform == "darwin" else kb / 1024.0


def sample_indices(lengths: Sequence[int], n: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(len(lengths), size=min(n, len(lengths)), replace=False).tolist())
