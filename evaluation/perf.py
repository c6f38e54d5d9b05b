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


# A worker forked from evaluation.zygote: the pages the zygote had resident (shared-library code the imports
# touched) enter the child's page tables lazily, when it touches them again, so the child's RSS misses those
# it never touches; a fresh worker's imports would have made them resident. Per mapping, what the zygote holds
# beyond the child is counted back in (both processes share the address layout up to the fork).
_forked_from: int | None = None


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def note_forked_from(parent_pid: int) -> None:
    """Called in a child forked from `parent_pid` (which stays alive, idle, until the child ends)."""
    global _forked_from
    _forked_from = parent_pid


def _rss_by_mapping(pid: int | str) -> dict[str, int]:
    out, current = {}, None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(maxsplit=1)[0]
            if "-" in head and not head.endswith(":"):
                current = line.split(maxsplit=5)[0] + " " + (line.split(maxsplit=5)[5:] or [""])[0].strip()
            elif head == "Rss:" and current is not None:
                out[current] = int(line.split()[1])
    return out


def _inherited_unmapped_kb() -> int:
    if _forked_from is None:
        return 0
    try:
        mine, parents = _rss_by_mapping("self"), _rss_by_mapping(_forked_from)
    except OSError:
        return 0
    return sum(max(0, kb - mine.get(m, 0)) for m, kb in parents.items())


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (2**20 bytes: the key keeps its older name; file
    sizes are in MB, 10**6 bytes).

    VmHWM first: ru_maxrss of a child started by fork+exec still counts the parent's pages on Linux."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return (kb + _inherited_unmapped_kb()) / 1024.0
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1024.0 * 1024.0) if sys.platform == "darwin" else kb / 1024.0


def sample_indices(lengths: Sequence[int], n: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(len(lengths), size=min(n, len(lengths)), replace=False).tolist())
