"""Torch evaluation workers forked from the zygote: the same results and memory figures as a fresh worker
process, in the caller's folder of the moment, a failed job reported like a failed process, a dead zygote
replaced."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from evaluation import harness, zygote

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform != "linux", reason="fork and /proc")


def _job(model: str) -> dict:
    return {"format": "torch", "spec": {"model": model, "threads": 2}, "label_ids": [5, 9],
            "score": {"test": [[11, 12, 13, 14], [20, 21]]},
            "generate": {"greedy": {"prompts": [[11, 12, 13]], "params": {"max_new_tokens": 6}}},
            "latency": {"kind": "score", "prompts": [[11, 12, 13]]}}


def test_a_forked_worker_gives_a_fresh_workers_results_and_memory(tiny_llama, tmp_path):
    # the zygote may already run (an earlier test evaluated torch artifacts): time a job once it is up
    harness.run_worker(_job(str(tiny_llama)), tmp_path, "warm")
    t0 = time.perf_counter()
    forked = harness.run_worker(_job(str(tiny_llama)) | {"label": "forked"}, tmp_path, "forked")
    forked_s = time.perf_counter() - t0
    job_path, out_path = tmp_path / "fresh.job.json", tmp_path / "fresh.result.json"
    job_path.write_text(json.dumps(_job(str(tiny_llama))))
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "evaluation.worker", str(job_path), str(out_path)])
    fresh_s = time.perf_counter() - t0
    assert done.returncode == 0
    fresh = json.loads(out_path.read_text())
    assert forked["probs_test"] == fresh["probs_test"]
    assert forked["generations"]["greedy"]["outputs"] == fresh["generations"]["greedy"]["outputs"]
    assert forked["threads"] == fresh["threads"] == 2
    # the zygote's pages the child never touched are counted back: within 10% of a fresh process
    assert abs(forked["peak_rss_mb"] - fresh["peak_rss_mb"]) < 0.1 * fresh["peak_rss_mb"], (forked, fresh)
    assert forked_s < fresh_s  # the point: no torch/transformers import per artifact (~1 s against ~9 s here)


def test_paths_resolve_in_the_callers_folder_of_the_moment(tiny_llama, tmp_path, monkeypatch):
    shutil.copytree(tiny_llama, tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    res = harness.run_worker(_job("model"), tmp_path / "work", "relative")
    assert len(res["probs_test"]) == 2


def test_a_failed_job_is_reported_and_the_zygote_serves_the_next(tiny_llama, tmp_path):
    with pytest.raises(harness.WorkerFailed, match=r"running broken failed \(exit 1\): \w+Error: .*no-such-model") as err:
        harness.run_worker(_job(str(tmp_path / "no-such-model")), tmp_path, "broken")
    import pickle

    again = pickle.loads(pickle.dumps(err.value))  # crosses processes (a pool, a launcher) intact
    assert (again.name, again.exit_code, again.reason, str(again)) == ("broken", 1, err.value.reason, str(err.value))
    assert harness.run_worker(_job(str(tiny_llama)), tmp_path, "after")["probs_test"]


def test_a_killed_zygote_is_replaced(tiny_llama, tmp_path):
    harness.run_worker(_job(str(tiny_llama)), tmp_path, "first")
    first = zygote._zygote
    first.proc.kill()
    first.proc.wait()
    assert harness.run_worker(_job(str(tiny_llama)) | {"label": "again"}, tmp_path, "second")["probs_test"]
    assert zygote._zygote is not first and zygote._zygote.proc.poll() is None
