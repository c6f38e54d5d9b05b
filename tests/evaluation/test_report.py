import json

import pytest

from evaluation.harness import sample_indices
from evaluation.perf import latency_stats, peak_rss_mb
from evaluation.report import build_report, retention, to_markdown, write_report


def _art(name, role, auc, recall, fpr, dps, fmt="torch", quant=None):
    return {"name": name, "role": role, "format": fmt, "quant": quant, "path": "x", "params": 1000 if role == "teacher" else 200,
            "size_bytes": 4000 if role == "teacher" else 300, "bits_per_weight": None,
            "metrics": {"roc_auc": auc, "recall": recall, "precision": 0.5, "fpr": fpr, "threshold": 0.3, "n": 10.0,
                        "positives": 2.0},
            "latency_ms": {"p50": 10.0, "p99": 12.0}, "decisions_per_s": dps, "batched_decisions_per_s": dps,
            "peak_rss_mb": 100.0, "threads": 2, "load_s": 0.1}


def test_retention_ratios_and_lower_is_better_fpr():
    compared, lower = ("roc_auc", "fpr", "recall"), {"fpr"}
    r = retention({"roc_auc": 0.8, "fpr": 0.1, "threshold": 0.3}, {"roc_auc": 0.72, "fpr": 0.2, "threshold": 0.1},
                  compared, lower)
    assert r["roc_auc"] == pytest.approx(0.9)
    assert r["fpr"] == pytest.approx(0.5)  # twice the false positives: half as good
    assert "threshold" not in r
    assert retention({"fpr": 0.0, "recall": 0.0}, {"fpr": 0.0, "recall": 0.0}, compared, lower) == {"fpr": 1.0, "recall": 1.0}
    assert retention({"fpr": 0.0}, {"fpr": 0.1}, compared, lower)["fpr"] == 0.0
    # null in report.json (a metric undefined on the split): no ratio, no crash (compare, readme-figures)
    assert retention({"recall": None, "fpr": 0.1}, {"recall": 0.5, "fpr": None}, compared, lower) == {
        "recall": None, "fpr": None}
    # parameterised names follow their base metric: fpr_at_recall_0.8 is lower-is-better, pass@1_easy is compared
    r = retention({"fpr_at_recall_0.8": 0.2, "pass@1_easy": 0.5, "recall_x": 1.0},
                  {"fpr_at_recall_0.8": 0.4, "pass@1_easy": 0.25, "recall_x": 1.0}, ("fpr", "pass@1"), lower)
    assert r == {"fpr_at_recall_0.8": pytest.approx(0.5), "pass@1_easy": pytest.approx(0.5)}



def test_report_summary_and_markdown(tmp_path):
    arts = [_art("teacher-torch", "teacher", 0.9, 0.8, 0.05, 4.0),
            _art("student-gguf-Q4_K_M", "student", 0.85, 0.76, 0.06, 24.0, "gguf", "Q4_K_M")]
    r = build_report(template="fraud", task="decision", project="p", primary_metric="roc_auc",
                     compared=("roc_auc", "recall", "precision", "fpr"), lower_is_better={"fpr"}, artifacts=arts,
                     data={"n_train": 1, "n_val": 2, "n_test": 3, "test_positives": 1},
                     machine={"cpus": 2, "platform": "linux"}, stages={"data": {"seconds": 1.0, "note": "n"}})
    s = r["summary"]["student-gguf-Q4_K_M"]
    assert s["speedup_vs_teacher"] == pytest.approx(6.0)
    assert s["size_vs_teacher_f16"] == pytest.approx(300 / 2000)
    assert r["retention"]["student-gguf-Q4_K_M"]["recall"] == pytest.approx(0.95)
    paths = write_report(r, tmp_path)
    assert json.loads(paths["json"].read_text())["schema_version"] == "1.4"
    md = paths["md"].read_text()
    assert "| student-gguf-Q4_K_M | 6.00x | 15.0% | 94.4% |" in md  # headline = primary metric: one column
    lines = md.splitlines()
    for header in (h for h, rule in zip(lines, lines[1:]) if rule.startswith("|---")):
        cells = [c.strip() for c in header.strip("|").split("|")]
        assert len(cells) == len(set(cells)), f"a column repeats: {header}"
    assert to_markdown(r) == md
    page = paths["html"].read_text()
    assert "student-gguf-Q4_K_M" in page and "keeps 94.4%" in page
    assert "http://" not in page and "https://" not in page  # self-contained: nothing fetched when opened


def test_student_above_teacher_reads_as_better_never_as_retention_gain(tmp_path):
    arts = [_art("teacher-torch", "teacher", 0.7, 0.5, 0.05, 4.0),
            _art("student-torch", "student", 0.8, 0.6, 0.05, 24.0)]
    iv = {"level": 0.95, "resamples": 10, "method": "m", "metrics": {},
          "retention": {"student-torch": {"recall": [1.05, 1.35]}}}
    r = build_report(template="fraud", task="decision", project="p", primary_metric="roc_auc",
                     compared=("roc_auc", "recall"), lower_is_better=set(), artifacts=arts,
                     data={"n_train": 1, "n_val": 2, "n_test": 3}, machine={"cpus": 2, "platform": "linux"},
                     stages={}, operating_point={"kind": "fpr", "value": 0.02, "description": "FPR <= 2%",
                                                 "metric": "recall"}, intervals=iv)
    s = r["summary"]["student-torch"]
    assert s["headline_metric"] == "recall" and s["verdict"] == "better than teacher"
    assert r["notes"] and "teacher is weak" in r["notes"][0]
    md = to_markdown(r)
    assert "student better (x1.20) [1.05, 1.35]" in md and "120.0%" not in md
    assert "Operating point:** FPR <= 2%" in md


def test_latency_stats_percentiles():
    import time

    delays = [0.001] * 19 + [0.02]
    stats = latency_stats(lambda i: time.sleep(delays[i]), len(delays), warmup=0)
    assert stats["p50"] < 5 < 15 < stats["p99"]
    assert peak_rss_mb() > 10
    assert sample_indices(100, 10) == sorted(set(sample_indices(100, 10)))


def _gen_art(name, role, p1, tps, variant=None, quant=None):
    a = _art(name, role, 0, 0, 0, 0, "gguf" if quant else "torch", quant)
    a.update(metrics={"pass@1": p1, "pass@1_easy": min(1.0, p1 * 1.5), "n": 200.0}, tokens_per_s=tps,
             ttft_ms={"p50": 20.0, "mean": 21.0}, batched_tokens_per_s=tps * 2, variant=variant)
    return a


def test_generation_report_uses_tokens_per_second_and_shows_the_sequence_kd_twin(tmp_path):
    arts = [_gen_art("teacher-torch", "teacher", 0.5, 20.0),
            _gen_art("student-gguf-Q4_K_M", "student", 0.46, 90.0, quant="Q4_K_M"),
            _gen_art("student-seqkd-gguf-Q4_K_M", "student", 0.40, 91.0, "sequence_kd", "Q4_K_M")]
    ann = {"kind": "generation", "teacher_runtime": "torch", "samples": 400, "prompts": 100, "accepted_samples": 180,
           "yield": 0.45, "prompts_with_accepted": 60, "prompt_yield": 0.6, "training_examples": 110,
           "topk_bytes_per_token": 64.0}
    r = build_report(template="code", task="generation", project="c", primary_metric="pass@1",
                     compared=("pass@1",), lower_is_better=set(), artifacts=arts,
                     data={"n_train": 100, "n_val": 10, "n_test": 200}, machine={"cpus": 2, "platform": "linux"},
                     stages={}, annotation=ann)
    assert r["summary"]["student-gguf-Q4_K_M"]["speedup_vs_teacher"] == pytest.approx(4.5)
    assert r["retention"]["student-gguf-Q4_K_M"] == {"pass@1": pytest.approx(0.92), "pass@1_easy": pytest.approx(0.92)}
    md = write_report(r, tmp_path)["md"].read_text()
    assert "| Q4_K_M | 0.400 | 0.460 |" in md
    assert "accepted 180 (45.0%)" in md and "64 bytes per response token" in md
    assert "tokens/s (batch 1)" in md


def test_a_ratio_whose_interval_reaches_one_is_not_called_as_good():
    from evaluation.report import verdict

    assert verdict(0.0, [0.0, 1.4]) == "keeps 0.0% (not shown to be worse: its interval reaches 1.40)"
    assert verdict(0.9, [0.8, 0.95]) == "keeps 90.0%"


def _decision_report(arts, iv=None, lower=frozenset({"fpr"}), op_metric="recall"):
    return build_report(template="fraud", task="decision", project="p", primary_metric="roc_auc",
                        compared=("roc_auc", "recall", "fpr"), lower_is_better=set(lower), artifacts=arts,
                        data={"n_train": 1, "n_val": 2, "n_test": 3}, machine={"cpus": 2, "platform": "linux"},
                        stages={}, operating_point={"kind": "x", "value": 0.5, "description": "d", "metric": op_metric},
                        intervals=iv)


def test_higher_within_its_interval_reads_as_good_in_every_place_and_calls_no_teacher_weak():
    """Markdown said "student better (x1.50)", the card "as good", the note "the teacher is weak"."""
    arts = [_art("teacher-torch", "teacher", 0.7, 1 / 3, 0.05, 4.0), _art("student-torch", "student", 0.7, 0.5, 0.05, 24.0),
            _art("baseline-rule", "baseline", 0.7, 0.5, 0.05, 99.0)]
    iv = {"level": 0.95, "resamples": 10, "method": "m", "metrics": {},
          "retention": {"student-torch": {"recall": [0.5, 3.0]}, "baseline-rule": {"recall": [0.5, 3.0]}}}
    r = _decision_report(arts, iv)
    assert r["summary"]["student-torch"]["verdict"] == "as good as teacher (higher, within the interval)"
    assert not any("teacher is weak" in n or "scores higher than the teacher" in n for n in r["notes"])
    md = to_markdown(r)
    assert "as good (x1.50) [0.50, 3.00]" in md and "student better (" not in md


def test_a_student_better_at_a_zero_is_better_not_undefined(tmp_path):
    """No false positive at all (lower is better) or a teacher at 0: the ratio has no value, the verdict does."""
    from sdk.stages.report import _warnings

    arts = [_art("teacher-torch", "teacher", 0.7, 0.5, 0.05, 4.0), _art("student-torch", "student", 0.7, 0.5, 0.0, 24.0)]
    r = _decision_report(arts, op_metric="fpr")
    s = r["summary"]["student-torch"]
    assert s["headline_retention"] is None and s["verdict"] == "better than teacher (the student scores 0, the best value)"
    assert any("teacher is weak" in n for n in r["notes"])
    assert "student better than teacher (the student scores 0" in to_markdown(r)
    assert not any("undefined" in w for w in _warnings(r))
    arts = [_art("teacher-torch", "teacher", 0.7, 0.0, 0.05, 4.0), _art("student-torch", "student", 0.7, 0.2, 0.05, 24.0)]
    assert _decision_report(arts)["summary"]["student-torch"]["verdict"] == "better than teacher (the teacher scores 0)"


def test_report_json_holds_null_where_a_metric_is_undefined(tmp_path):
    """NaN (ROC-AUC on one class) is not JSON: strict parsers (a browser's JSON.parse) refuse the file."""
    arts = [_art("teacher-torch", "teacher", float("nan"), 0.5, 0.05, 4.0),
            _art("student-torch", "student", float("nan"), 0.5, 0.05, 24.0)]
    paths = write_report(_decision_report(arts), tmp_path)
    text = paths["json"].read_text()
    assert "NaN" not in text and json.loads(text)["artifacts"][0]["metrics"]["roc_auc"] is None
