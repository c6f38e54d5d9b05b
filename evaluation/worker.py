"""Measure one artifact in a fresh process: `python -m evaluation.worker job.json result.json`.

A fresh process per artifact gives honest peak RSS, and keeps native thread pools apart: torch's
OpenMP and llama.cpp's busy-waiting threads in one process slowed llama.cpp about 50x here.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(job_path: str, out_path: str) -> None:
    job = json.loads(open(job_path).read())
    from deployment.runtimes import open_runtime
    from evaluation.perf import latency_stats, peak_rss_mb, sample_indices

    t0 = time.perf_counter()
    rt = open_runtime(job["format"], job["spec"])
    load_s = time.perf_counter() - t0
    label_ids = job["label_ids"]
    result: dict = {"load_s": load_s, "threads": rt.threads}
    t0 = time.perf_counter()
    for split, seqs in job["splits"].items():
        result[f"probs_{split}"] = rt.label_probs(seqs, label_ids)[:, -1].tolist()
    n_scored = sum(len(s) for s in job["splits"].values())
    result["score_s"] = time.perf_counter() - t0
    result["scored_per_s"] = n_scored / result["score_s"]
    test = job["splits"]["test"]
    idx = sample_indices([len(s) for s in test], job["latency_samples"])
    result["latency_ms"] = latency_stats(lambda i: rt.decide_one(test[idx[i]], label_ids), len(idx))
    result["decisions_per_s"] = 1000.0 / result["latency_ms"]["mean"]
    result["peak_rss_mb"] = peak_rss_mb()
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
