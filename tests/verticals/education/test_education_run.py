"""The education contract end to end: `distill init education DIR --preset tiny --data records.jsonl`, then
`distill run`: the same report.json contract, metrics with `accuracy`, the parsing baseline beside teacher and
students, accuracy per answer type; a malformed records file is refused at init with exit 2, naming the line."""

from __future__ import annotations

import json

import yaml

from tests.cli import run_cli
from verticals.education.template import EducationOptions, EducationTemplate


def _records(path, n: int, seed: int = 5):
    options = EducationOptions(grading="rubric")
    df = EducationTemplate().configure(options).synthesize(n, seed, options)
    with open(path, "w") as fh:
        for i, r in enumerate(df.to_dict("records")):
            # a user's file: an id and the answer type ride along as other fields
            fh.write(json.dumps({"id": f"s{i}", "question": r["question"], "reference": r["reference"],
                                 "answer": r["answer"], "label": int(r["label"]), "error_type": r["error_type"]}) + "\n")
    return path


def test_init_with_records_and_run_writes_the_report_contract(tmp_path):
    data = _records(tmp_path / "records.jsonl", 120)
    lines = data.read_text().splitlines()
    again = [json.loads(lines[i]) for i in (3, 4)]  # two records graded a second time, differently
    lines += [json.dumps({**r, "id": r["id"] + "b", "label": (r["label"] + 1) % 3}) for r in again]
    data.write_text("\n".join(lines) + "\n")
    out = run_cli("init", "education", tmp_path / "p", "--preset", "tiny", "--data", data,
                  "--set", "evaluation.student_torch=false")
    assert out.returncode == 0, out.stderr
    # the suite's time: the teacher unadapted (adaptation is covered by fraud's run)
    project = tmp_path / "p" / "project.yaml"
    cfg = yaml.safe_load(project.read_text())
    cfg["teacher"]["adapt"]["enabled"] = False
    project.write_text(yaml.safe_dump(cfg))
    run = run_cli("run", tmp_path / "p" / "project.yaml", "--out", tmp_path / "run")
    assert run.returncode == 0, run.stderr[-3000:]
    # the student keeps the teacher's bottom layer frozen and trains the layers above on its cached output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["distill"]["note"].startswith("teacher layers [0, 1, ")
    # three grades are counted per grade, not as "positives" (above the lowest)
    counts = manifest["stages"]["data"]["counts"]["test"]
    assert "positives" not in counts and set(counts["label_counts"]) == {"zero", "one", "two"}
    assert " pos)" not in manifest["stages"]["data"]["note"]
    assert "cache frozen layers 0-0" in run.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    names = {a["name"]: a for a in report["artifacts"]}
    assert {"teacher-torch", "student-gguf-Q4_K_M", "parsing_rule"} <= set(names)
    for a in report["artifacts"]:
        assert 0 <= a["metrics"]["accuracy"] <= 1 and "kappa" in a["metrics"]
    assert names["parsing_rule"]["role"] == "baseline"
    assert report["primary_metric"] == "accuracy" and report["data"]["n_test"] == 24
    assert set(report["breakdown"]["parsing_rule"]) <= {"correct", "equivalent", "arithmetic_slip", "wrong_operation",
                                                        "unit_error", "rounding", "partial"}
    assert not any("positive examples" in w for w in report["warnings"])  # a fraud notion, not a grading one
    # the disagreeing repeats reach the report, not only the terminal
    assert report["data"]["label_conflicts"] == 2 and report["data"]["duplicates_removed"] >= 2
    assert any(w.startswith("2 repeated records in the data had another label") for w in report["warnings"])
    md = (tmp_path / "run" / "report.md").read_text()
    assert "## Accuracy per group" in md and "parsing_rule" in md
    # graded 0..2: the most probable grade decides, so no threshold (was a 0.5 column) and counts per grade
    # (was "N positive": graded above zero)
    assert all(a["metrics"]["threshold"] is None for a in report["artifacts"])
    counts = report["data"]["test_label_counts"]
    assert list(counts) == ["zero", "one", "two"] and sum(counts.values()) == 24
    assert "threshold |" not in md and "positive" not in md.split("## Headline")[0]
    assert f"(zero {counts['zero']}, one {counts['one']}, two {counts['two']})" in md
    html = (tmp_path / "run" / "report.html").read_text()
    assert f"zero {counts['zero']}, one {counts['one']}" in html and "thresholds chosen" not in html


def test_init_refuses_malformed_records_naming_line_and_field(tmp_path):
    data = _records(tmp_path / "records.jsonl", 30)
    lines = data.read_text().splitlines()
    lines[3] = json.dumps({"question": "q", "reference": "4", "answer": "4", "label": "full marks"})
    lines[7] = "{oops"
    data.write_text("\n".join(lines) + "\n")
    out = run_cli("init", "education", tmp_path / "p", "--preset", "tiny", "--data", data)
    assert out.returncode == 2
    assert "line 4: field 'label': 'full marks' is not a rubric score 0..2" in out.stderr
    assert "line 8: not valid JSON" in out.stderr
    assert not (tmp_path / "p" / "project.yaml").exists()
