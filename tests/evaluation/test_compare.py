import json

import yaml
from typer.testing import CliRunner

from evaluation.compare import compare, compare_command, load_run, to_markdown
from evaluation.report import build_report
from tests.evaluation.test_report import _art


def _run(tmp_path, name, student_recall, layers):
    d = tmp_path / name
    d.mkdir()
    arts = [_art("teacher-torch", "teacher", 0.9, 0.8, 0.05, 4.0),
            _art("student-gguf-Q4_K_M", "student", 0.85, student_recall, 0.06, 24.0, "gguf", "Q4_K_M")]
    r = build_report(template="fraud", task="decision", project=name, primary_metric="roc_auc",
                     compared=("roc_auc", "recall"), lower_is_better={"fpr"}, artifacts=arts,
                     data={"n_train": 1, "n_val": 2, "n_test": 3}, machine={"cpus": 2, "platform": "linux"},
                     stages={}, operating_point={"kind": "fpr", "value": 0.02, "description": "d", "metric": "recall"})
    (d / "report.json").write_text(json.dumps(r))
    (d / "config.yaml").write_text(yaml.safe_dump({"name": name, "student": {"layers": layers}, "seed": 0}))
    return d


def test_compare_lists_config_changes_and_figures(tmp_path):
    a, b = _run(tmp_path, "a", 0.72, 6), _run(tmp_path, "b", 0.8, 8)
    c = compare([load_run(a), load_run(b)])
    assert c["config_changes"] == {"name": ["a", "b"], "student.layers": [6, 8]}
    md = to_markdown(c)
    assert "| `student.layers` | `6` | `8` |" in md
    assert f"| {b} | student-gguf-Q4_K_M | recall | 0.800 |" in md and "90.0%" in md and "100.0%" in md


def test_a_run_with_an_api_teacher_compares_without_a_size(tmp_path):
    from evaluation.compare import to_html
    from evaluation.summary import figures_markdown

    a = _run(tmp_path, "a", 0.72, 6)
    r = json.loads((a / "report.json").read_text())
    r["artifacts"][0]["size_bytes"] = None  # an API teacher: no file
    (a / "report.json").write_text(json.dumps(r))
    c = compare([load_run(a), load_run(_run(tmp_path, "b", 0.8, 8))])
    assert "| teacher-torch | recall | 0.800 | 0.900 | - |" in to_markdown(c) and "teacher-torch" in to_html(c)
    assert "| teacher-torch | 0.800 | 0.900 | - | 4.0 |" in figures_markdown(r, a / "report.json")
    # the brackets are named by the report's own methods
    assert "Brackets: 95% paired-bootstrap intervals over the test split" in figures_markdown(r, "x")
    r["intervals"] = {"proportions": ["fpr", "recall"]}
    assert ("Brackets: 95% Wilson score intervals of the counts for fpr, recall, paired-bootstrap intervals for "
            "the rest over the test split") in figures_markdown(r, "x")


def test_compare_command_writes_html_and_refuses_an_unfinished_run(tmp_path):
    import typer

    app = typer.Typer()
    app.command()(compare_command)
    app.command("noop")(lambda: None)  # typer needs two commands to keep the command name
    a, b = _run(tmp_path, "a", 0.72, 6), _run(tmp_path, "b", 0.8, 8)
    res = CliRunner().invoke(app, ["compare-command", str(a), str(b), "--html", str(tmp_path / "c.html")])
    assert res.exit_code == 0, res.output
    assert "student.layers" in (tmp_path / "c.html").read_text()
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(app, ["compare-command", str(a), str(tmp_path / "empty")])
    assert res.exit_code == 2 and "not a finished run folder" in res.output


def test_compare_reads_defaults_as_written_values(tmp_path):
    # a run that wrote the code template's option defaults and one that left them out were listed as
    # `template_options.timeout_s 5.0 | None`: a change that was none
    from verticals.code import CodeTemplate

    preset = yaml.safe_load(CodeTemplate().preset_path("tiny").read_text())
    a, b = _run(tmp_path, "a", 0.72, 6), _run(tmp_path, "b", 0.8, 6)
    defaults = CodeTemplate.Options().model_dump(mode="json")
    (a / "config.yaml").write_text(yaml.safe_dump({**preset, "template_options": defaults}))
    (b / "config.yaml").write_text(yaml.safe_dump({**{k: v for k, v in preset.items() if k != "template_options"},
                                                   "seed": preset.get("seed", 0) + 1}))
    c = compare([load_run(a), load_run(b)])
    assert list(c["config_changes"]) == ["seed"]
