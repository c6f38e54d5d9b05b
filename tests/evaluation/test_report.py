import json

import pytest

from evaluation.perf import latency_stats, peak_rss_mb, sample_indices
from evaluation.report import build_report, retention, to_markdown, write_report


def _art(name, role, auc, recall, fpr, dps, fmt="torch", quant=None):
    return {"name": name, "role": role, "format": fmt, "quant": quant, "path": "x", "params": 1000 if role == "teacher" else 200,
            "size_bytes": 4000 if role == "teacher" else 300, "bits_per_weight": None,
            "metrics": {"roc_auc": auc, "recall": recall, "precision": 0.5, "fpr": fpr, "threshold": 0.3, "n": 10.0,
                        "positives": 2.0},
            "latency_ms": {"p50": 10.0, "p99": 12.0}, "decisions_per_s": dps, "batched_decisions_per_s": dps,
            "peak_rss_mb": 100.0, "threads": 2, "load_s": 0.1}


def test_retention_ratios_and_lower_is_better_fpr():
    r = retention({"roc_auc": 0.8, "fpr": 0.1, "threshold": 0.3}, {"roc_auc": 0.72, "fpr": 0.2, "threshold": 0.1})
    assert r["roc_auc"] == pytest.approx(0.9)
    assert r["fpr"] == pytest.approx(0.5)  # twice the false positives: half as good
    assert "threshold" not in r
    assert retention({"fpr": 0.0, "recall": 0.0}, {"fpr": 0.0, "recall": 0.0}) == {"fpr": 1.0, "recall": 1.0}
    assert retention({"fpr": 0.0}, {"fpr": 0.1})["fpr"] == 0.0


def test_report_summary_and_markdown(tmp_path):
    arts = [_art("teacher-torch", "teacher", 0.9, 0.8, 0.05, 4.0),
            _art("student-gguf-Q4_K_M", "student", 0.85, 0.76, 0.06, 24.0, "gguf", "Q4_K_M")]
    r = build_report(template="fraud", project="p", primary_metric="roc_auc", artifacts=arts,
                     data={"n_train": 1, "n_val": 2, "n_test": 3, "test_positives": 1},
                     machine={"cpus": 2, "platform": "linux"}, stages={"data": {"seconds": 1.0, "note": "n"}})
    s = r["summary"]["student-gguf-Q4_K_M"]
    assert s["speedup_vs_teacher"] == pytest.approx(6.0)
    assert s["size_vs_teacher_f16"] == pytest.approx(300 / 2000)
    assert r["retention"]["student-gguf-Q4_K_M"]["recall"] == pytest.approx(0.95)
    paths = write_report(r, tmp_path)
    assert json.loads(paths["json"].read_text())["schema_version"] == "1.0"
    md = paths["md"].read_text()
    assert "| student-gguf-Q4_K_M | 6.00x | 15.0% | 94.4% |" in md
    assert to_markdown(r) == md


def test_latency_stats_percentiles():
    import time

    delays = [0.001] * 19 + [0.02]
    stats = latency_stats(lambda i: time.sleep(delays[i]), len(delays), warmup=0)
    assert stats["p50"] < 5 < 15 < stats["p99"]
    assert peak_rss_mb() > 10
    assert sample_indices(list(range(100)), 10) == sorted(set(sample_indices(list(range(100)), 10)))
