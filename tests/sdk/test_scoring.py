"""Scoring new data with a finished run (sdk.scoring, `distill score`, docs/score_with_llama_cpp.py).

The fast tests use a hand-made run folder (no model is loaded); the integration ones build the fraud
`tiny` run and check that scoring its test split gives back the evaluation's own probabilities and
decisions, through the Python API, the CLI and the documented 15-line llama-cpp-python script."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sdk.errors import DistillError
from tests.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docs" / "score_with_llama_cpp.py"


# ---- fast: a run folder written by hand
def _entry(name, role, fmt, quant, size, threshold=0.5, variant=None):
    return {"name": name, "role": role, "format": fmt, "quant": quant, "variant": variant,
            "path": f"artifacts/{name}.gguf", "size_bytes": size, "metrics": {"threshold": threshold}}


@pytest.fixture
def fake_run(tmp_path):
    from verticals.fraud import FraudTemplate

    cfg = yaml.safe_load(FraudTemplate().preset_path("tiny").read_text())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "task.json").write_text(json.dumps({"task": "decision", "chat": False, "eos_ids": [0],
                                                            "label_ids": [902, 4400]}))
    (tmp_path / "evaluation").mkdir()
    entries = [_entry("teacher-torch", "teacher", "torch", None, 500), _entry("student-torch", "student", "torch", None, 90),
               _entry("student-gguf-Q8_0", "student", "gguf", "Q8_0", 40, 0.31),
               _entry("student-gguf-Q4_K_M", "student", "gguf", "Q4_K_M", 25, 0.42),
               _entry("student-seqkd-gguf-Q4_K_M", "student", "gguf", "Q4_K_M", 20, variant="sequence_kd")]
    (tmp_path / "evaluation" / "artifacts.json").write_text(json.dumps(entries))
    return tmp_path


def _rows(n=3):
    from verticals.fraud import FraudTemplate

    t = FraudTemplate()
    return t.synthesize(n, 7, t.Options())


def test_default_artifact_is_the_smallest_main_student_gguf(fake_run):
    from sdk.project import Project

    run = Project.load(fake_run)
    assert run.default_artifact == "student-gguf-Q4_K_M"  # the smaller sequence-KD twin is not the deliverable
    assert run.threshold() == 0.42 and run.threshold("student-gguf-Q8_0") == 0.31
    with pytest.raises(DistillError, match="student-gguf-F16.*evaluated: teacher-torch"):
        run.entry("student-gguf-F16")


def test_the_default_artifact_says_why_it_was_chosen(fake_run):
    from sdk.scoring import load_run

    assert load_run(fake_run).default_choice() == ("student-gguf-Q4_K_M", "the smallest student GGUF that passed its gate")
    # no GGUF passed its gate: `distill score` said "the smallest student GGUF" of an ONNX file
    entries = json.loads((fake_run / "evaluation" / "artifacts.json").read_text())
    failed = {"verdict": "fail", "passed": False}
    for e in entries:
        if e["format"] == "gguf":
            e["gate"] = failed
    entries.append({**_entry("student-onnx-fp32", "student", "onnx", None, 80),
                    "gate": {"verdict": "pass", "passed": True}})
    (fake_run / "evaluation" / "artifacts.json").write_text(json.dumps(entries))
    assert load_run(fake_run).default_choice() == ("student-onnx-fp32",
                                                   "no student GGUF passed its gate: the smallest export that did")
    # every export of the student failed, no unquantized student evaluated: never the ungated twin (it was
    # chosen: the labels-alone or sequence-KD student is not the one the run distilled), an error naming the way out
    entries = [e for e in entries if e["name"] not in ("student-torch", "student-onnx-fp32")]
    (fake_run / "evaluation" / "artifacts.json").write_text(json.dumps(entries))
    with pytest.raises(DistillError, match="every artifact of the distilled student failed its release gate.*--artifact"):
        load_run(fake_run).default_choice()


def test_free_text_columns_may_be_left_out(fake_run):
    """`distill score` refused a table without `note` ("lacks column(s) ['note']") that serve and predict.py take."""
    from sdk.scoring import load_run

    run = load_run(fake_run)
    df = run.check(_rows(3).drop(columns=["note"]), "rows.csv")
    assert df["note"].isna().all()
    assert all(p.endswith("Fraud?") and "None" not in p and "nan" not in p for p in run.prompts(df, "rows.csv"))


def test_unfinished_run_names_the_missing_file(fake_run, tmp_path):
    (fake_run / "evaluation" / "artifacts.json").unlink()
    from sdk.scoring import load_run

    with pytest.raises(DistillError, match="evaluation/artifacts.json is missing"):
        load_run(fake_run)
    with pytest.raises(DistillError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    project = tmp_path / "proj"
    project.mkdir()
    (project / "project.yaml").write_text("name: p\n")
    with pytest.raises(DistillError, match=r"is a project folder \(it holds project.yaml\), not a run folder"):
        load_run(project)


@pytest.mark.parametrize("rel, text, message", [
    ("evaluation/artifacts.json", '[{"name": "student-torch", ', r"evaluation/artifacts.json is damaged \(not valid JSON"),
    ("evaluation/artifacts.json", '{"student-torch": {}}', r"evaluation/artifacts.json is damaged \(expected a list"),
    ("data/task.json", "", r"data/task.json is damaged \(not valid JSON"),
    ("data/task.json", '{"task": "decision"}', r"data/task.json is damaged \(no label_ids\)"),
    ("manifest.json", "\xff\xfe", r"manifest.json is damaged"),
])
def test_a_damaged_run_file_is_named(fake_run, rel, text, message):
    # was a JSONDecodeError or KeyError traceback from `distill score`, `serve` and `Project.load`
    from sdk.scoring import load_run

    (fake_run / rel).write_text(text, encoding="latin-1")
    with pytest.raises(DistillError, match=message) as err:
        load_run(fake_run)
    if rel != "manifest.json":  # the command that rewrites it, as it runs (`distill run <folder>` does not)
        assert f"`distill run {fake_run / 'config.yaml'} --out {fake_run}`" in str(err.value)


def test_out_is_checked_before_any_work(tmp_path):
    from sdk.scoring import check_out

    with pytest.raises(DistillError, match=r"folder .*nowhere does not exist"):
        check_out(tmp_path / "nowhere" / "scored.csv")
    (tmp_path / "scored.csv").mkdir()
    with pytest.raises(DistillError, match="is a folder; name a file in it"):
        check_out(tmp_path / "scored.csv")
    assert check_out(tmp_path / "scored.jsonl") == tmp_path / "scored.jsonl"
    out = run_cli("score", tmp_path / "no-run", tmp_path / "rows.csv", "--out", tmp_path / "nowhere" / "s.csv")
    assert out.returncode == 2 and "nowhere does not exist" in out.stderr


def test_input_checks_name_the_column_and_row(fake_run, tmp_path):
    from sdk.scoring import load_run

    run = load_run(fake_run)
    rows = _rows()
    with pytest.raises(DistillError, match=r"lacks column\(s\) \['amount'\]"):
        run.check(rows.drop(columns=["amount"]))
    gap = rows.copy()
    gap.loc[1, "hour"] = None
    with pytest.raises(DistillError, match="column 'hour' is empty in 1 row.*first row 2"):
        run.check(gap)
    bad = rows.astype({"amount": object})
    bad.loc[2, "amount"] = "lots"
    with pytest.raises(DistillError, match="row 3: cannot build the prompt.*column 'amount': 'lots' is not a number"):
        run.prompts(run.check(bad))
    bad.loc[0, "amount"], bad.loc[1, "hour"] = "none", 99  # every unreadable row in one error, not the first alone
    with pytest.raises(DistillError, match=r"3 rows cannot be read: row 1: .*'none' is not a number.*; row 2: .*"
                                           r"'hour': 99 is out of range.*; row 3: .*'lots'") as err:
        run.prompts(run.check(bad))
    assert err.value.field is None  # two columns at fault: no single field
    # flags written as text (a CSV, a JSON request) mean what they say: "false" is not true
    words = rows.astype({"device_change": object})
    words["device_change"] = ["false", "yes", "0"]
    assert run.prompts(run.check(words)) == run.prompts(run.check(rows.assign(device_change=[False, True, False])))
    words.loc[1, "device_change"] = "maybe"
    with pytest.raises(DistillError, match="row 2: .*column 'device_change': 'maybe' is not true or false"):
        run.prompts(run.check(words))
    blank = rows.astype({"merchant_category": object})
    blank.loc[0, "merchant_category"] = "  "
    with pytest.raises(DistillError, match="column 'merchant_category' is empty in 1 row.*first row 1"):
        run.check(blank)
    # records work as well as a DataFrame; a file of another kind is refused by name
    assert len(run.check(rows.to_dict("records"))) == 3
    (tmp_path / "rows.xlsx").write_text("x")
    with pytest.raises(DistillError, match=r"rows.xlsx: cannot read \.xlsx"):
        run.read(tmp_path / "rows.xlsx")
    (tmp_path / "rows.jsonl").write_text('{"amount": 1}\n{oops\n')
    with pytest.raises(DistillError, match="line 2: not valid JSON"):
        run.read(tmp_path / "rows.jsonl")
    import gzip

    (tmp_path / "rows.jsonl.gz").write_bytes(gzip.compress(rows.to_json(orient="records", lines=True).encode()))
    pd.testing.assert_frame_equal(run.read(tmp_path / "rows.jsonl.gz"), run.check(rows.reset_index(drop=True)),
                                  check_dtype=False)
    (tmp_path / "rows.jsonl").write_bytes('{"merchant_category": "café"}\n{"merchant_category": "Zürich"}\n'
                                          .encode("latin-1"))
    with pytest.raises(DistillError, match=r"rows.jsonl, line 1: not UTF-8 text \(byte 0xe9\)"):
        run.read(tmp_path / "rows.jsonl")


def test_scored_rows_are_written_by_suffix(tmp_path):
    from sdk.scoring import write_scored

    df = pd.DataFrame({"a": [1, 2], "score": [0.1234567890123456789, float("nan")], "decision": [0, 1]})
    back = pd.read_csv(write_scored(df, tmp_path / "s.csv"))
    assert back["score"][0] == df["score"][0]  # full precision
    lines = (write_scored(df, tmp_path / "s.jsonl")).read_text().splitlines()
    assert json.loads(lines[0]) == {"a": 1, "score": df["score"][0], "decision": 0}
    assert json.loads(lines[1])["score"] is None
    with pytest.raises(DistillError, match="s.xlsx"):
        write_scored(df, tmp_path / "s.xlsx")
    assert not list(tmp_path.glob(".*tmp"))


def test_decisions_follow_the_threshold_for_two_labels():
    from sdk.scoring import _prob_columns, decide_labels
    from verticals.fraud import FraudTemplate

    probs = np.array([[0.7, 0.3], [0.6, 0.4], [0.1, 0.9]])
    assert decide_labels(FraudTemplate(), probs, 0.4, None) == [0, 1, 1]  # >= as the template's metrics count
    assert _prob_columns({0: " no", 1: " yes"}) == ["prob_no", "prob_yes"]
    assert _prob_columns({0: " A", 1: " A", 2: "?"}) == ["prob_0", "prob_1", "prob_2"]


def test_predict_assembles_outputs_from_the_worker(fake_run, monkeypatch):
    """What predict adds around the worker's label probabilities (the worker itself: integration tests)."""
    from sdk import scoring

    jobs = []
    probs = [[0.9, 0.1], [0.58, 0.42], [0.2, 0.8]]
    monkeypatch.setattr(scoring.FinishedRun, "tokenize", lambda self, prompts: [[1, 2, 3]] * len(prompts))
    monkeypatch.setattr(scoring.FinishedRun, "_spec", lambda self, name, longest, where="": ("gguf", {"model": name}))
    monkeypatch.setattr(scoring, "_run_job", lambda job, name, redo: jobs.append(job) or {"probs_input": probs})
    rows = _rows().set_index(pd.Index([10, 11, 12]))
    scored = scoring.load_run(fake_run).predict(rows)
    assert jobs[0]["label_ids"] == [902, 4400] and jobs[0]["score"] == {"input": [[1, 2, 3]] * 3}
    assert list(scored.index) == [10, 11, 12] and list(scored.columns[:8]) == list(rows.columns[:8])
    assert scored["decision"].tolist() == [0, 1, 1]  # threshold 0.42 of student-gguf-Q4_K_M, inclusive
    assert scored["score"].tolist() == [0.1, 0.42, 0.8] and scored["prob_no"].tolist() == [0.9, 0.58, 0.2]
    assert scored.attrs == {"artifact": "student-gguf-Q4_K_M", "format": "gguf", "quant": "Q4_K_M",
                            "threshold": 0.42, "operating_point": None, "unseen": {}}  # no table.json: no kinds


def test_generation_runs_score_greedy_completions(tmp_path, monkeypatch):
    from sdk import scoring
    from verticals.code.template import CodeTemplate

    t = CodeTemplate()
    cfg = yaml.safe_load(t.preset_path("tiny").read_text())
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "task.json").write_text(json.dumps({"task": "generation", "chat": True, "eos_ids": [2]}))
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "artifacts.json").write_text(json.dumps([
        _entry("student-gguf-Q8_0", "student", "gguf", "Q8_0", 40), _entry("student-torch", "student", "torch", None, 90)]))
    jobs = []
    monkeypatch.setattr(scoring.FinishedRun, "tokenize", lambda self, prompts: [[1, 2]] * len(prompts))
    monkeypatch.setattr(scoring.FinishedRun, "_spec", lambda self, name, longest, where="": ("gguf", {}))
    monkeypatch.setattr(scoring, "_run_job", lambda job, name, redo: jobs.append(job) or {"generations": {"greedy": {
        "outputs": [[{"text": f"    return {i}"}] for i in range(len(job["generate"]["greedy"]["prompts"]))]}}})
    rows = t.synthesize(2, 0, t.Options())
    scored = scoring.load_run(tmp_path).predict(rows)
    params = jobs[0]["generate"]["greedy"]["params"]
    run_cfg = scoring.load_run(tmp_path).config
    assert params == {"max_new_tokens": run_cfg.evaluation.max_new_tokens, "temperature": 0.0,
                      "stop": list(run_cfg.annotate.stop)}
    assert scored["completion"].tolist() == ["    return 0", "    return 1"]
    assert scored.attrs["artifact"] == "student-gguf-Q8_0"


def test_documented_script_is_the_one_in_the_docs():
    assert len(SCRIPT.read_text().splitlines()) <= 15
    assert SCRIPT.read_text().strip() in (ROOT / "docs" / "scoring.md").read_text()
    assert "import sdk" not in SCRIPT.read_text() and "verticals" not in SCRIPT.read_text()


# ---- integration: the fraud tiny run
@pytest.fixture(scope="module")
def tiny_run(fraud_tiny_run):
    return fraud_tiny_run  # read only: the integration tests share the same finished run


def _evaluated(run_dir: Path, name: str) -> tuple[np.ndarray, dict]:
    with np.load(run_dir / "evaluation" / f"{name}.details.npz") as z:
        probs = z["probs_test"]
    entry = {e["name"]: e for e in json.loads((run_dir / "evaluation" / "artifacts.json").read_text())}[name]
    return probs, entry


@pytest.mark.integration
@pytest.mark.parametrize("artifact", [None, "student-torch"])
def test_predict_reproduces_the_evaluation(tiny_run, artifact):
    from sdk.project import Project
    from verticals.fraud import FraudTemplate

    run = Project.load(tiny_run)
    test = pd.read_parquet(tiny_run / "data" / "test.parquet")
    scored = run.predict(test.drop(columns=["label"]), artifact=artifact)
    name = artifact or "student-gguf-Q4_K_M"  # the tiny preset's last (smallest) quant
    assert scored.attrs["artifact"] == name
    probs, entry = _evaluated(tiny_run, name)
    assert np.abs(scored[["prob_no", "prob_yes"]].to_numpy() - probs).max() <= 1e-6
    assert np.array_equal(scored["score"].to_numpy(), scored["prob_yes"].to_numpy())
    threshold = entry["metrics"]["threshold"]
    assert scored.attrs["threshold"] == threshold
    assert scored["decision"].tolist() == (probs[:, 1] >= threshold).astype(int).tolist()
    # the evaluation's own metrics follow from the scored rows
    t = FraudTemplate()
    again = t.metrics(test["label"].to_numpy(), scored[["prob_no", "prob_yes"]].to_numpy(), threshold,
                      run.options)
    for k in ("recall", "precision", "fpr", "f1"):
        assert again[k] == entry["metrics"][k], k
    assert list(scored.columns) == [*(c for c in test.columns if c != "label"), "prob_no", "prob_yes", "score", "decision"]


@pytest.mark.integration
def test_score_command_on_csv_and_jsonl(tiny_run, tmp_path):
    test = pd.read_parquet(tiny_run / "data" / "test.parquet")
    test.to_csv(tmp_path / "new.csv", index=False)
    out = run_cli("score", tiny_run, tmp_path / "new.csv", "--out", tmp_path / "scored.csv")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "student-gguf-Q4_K_M" in out.stdout and "default" in out.stderr
    scored = pd.read_csv(tmp_path / "scored.csv")
    probs, entry = _evaluated(tiny_run, "student-gguf-Q4_K_M")
    assert list(scored.columns) == [*test.columns, "prob_no", "prob_yes", "score", "decision"]
    assert np.abs(scored[["prob_no", "prob_yes"]].to_numpy() - probs).max() <= 1e-6
    assert scored["decision"].tolist() == (probs[:, 1] >= entry["metrics"]["threshold"]).astype(int).tolist()
    # a gzipped CSV (how tables often ship) reads as the same rows
    test.to_csv(tmp_path / "new.csv.gz", index=False)
    from sdk.scoring import load_run

    pd.testing.assert_frame_equal(load_run(tiny_run).read(tmp_path / "new.csv.gz"), pd.read_csv(tmp_path / "new.csv"))

    test.to_json(tmp_path / "new.jsonl", orient="records", lines=True)
    out = run_cli("score", tiny_run, tmp_path / "new.jsonl", "--artifact", "student-gguf-Q8_0",
                  "--out", tmp_path / "scored.jsonl")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    probs, entry = _evaluated(tiny_run, "student-gguf-Q8_0")
    assert np.abs(np.array([[r["prob_no"], r["prob_yes"]] for r in rows]) - probs).max() <= 1e-6
    assert [r["decision"] for r in rows] == (probs[:, 1] >= entry["metrics"]["threshold"]).astype(int).tolist()


def test_category_codes_compare_as_written():
    from deployment.bundle_predict import category_text, unseen_values

    assert [category_text(v) for v in [5411.0, 5812.5, "grocery", 7]] == ["5411", "5812.5", "grocery", "7"]
    trained = {"mcc": {"5411", "5812"}, "country": {"US"}}
    assert unseen_values({"mcc": [5411.0, 5411, 7995, 7995], "country": ["US"], "other": ["x"]}, trained) == \
        {"mcc": {"7995": 2}}


@pytest.mark.integration
def test_values_the_training_data_never_had_are_scored_and_named(tiny_run, tmp_path):
    """A merchant category no training row held: the model reads it as text but learned from no example of it;
    `distill score` warns with the column, the value and its rows, predict's frame carries them in attrs."""
    from sdk.scoring import load_run

    rows = pd.read_parquet(tiny_run / "data" / "train.parquet").head(6)  # every value seen in training
    run = load_run(tiny_run)
    assert run.unseen_values(rows) == {}
    rows.loc[rows.index[:2], "merchant_category"] = "crypto_exchange"
    rows.loc[rows.index[3], "country"] = "AQ"
    assert run.unseen_values(rows) == {"merchant_category": {"crypto_exchange": 2}, "country": {"AQ": 1}}
    rows.to_csv(tmp_path / "new.csv", index=False)
    out = run_cli("score", tiny_run, tmp_path / "new.csv", "--out", tmp_path / "scored.csv")
    assert out.returncode == 0, out.stderr[-3000:]
    assert ("warning: column 'merchant_category': 2 of 6 rows hold values the training data never had "
            "('crypto_exchange' x2)") in out.stderr and "column 'country': 1 of 6 rows" in out.stderr
    assert len(pd.read_csv(tmp_path / "scored.csv")) == 6  # scored all the same


@pytest.mark.integration
def test_score_command_refuses_a_missing_column(tiny_run, tmp_path):
    test = pd.read_parquet(tiny_run / "data" / "test.parquet").drop(columns=["velocity_1h"])
    test.to_csv(tmp_path / "bad.csv", index=False)
    out = run_cli("score", tiny_run, tmp_path / "bad.csv", "--out", tmp_path / "scored.csv")
    assert out.returncode == 2
    assert out.stderr.startswith("error:") and "velocity_1h" in out.stderr and "bad.csv" in out.stderr
    assert not (tmp_path / "scored.csv").exists()


@pytest.mark.integration
def test_packaged_gguf_carries_the_evaluation(tiny_run):
    from deployment.gguf import read_metadata

    package = json.loads((tiny_run / "artifacts" / "package.json").read_text())
    # the twins too: labels alone, and the shared run's QAD control and twins
    assert set(package) == {"student-gguf-Q8_0", "student-gguf-Q4_K_M", "student-finetuned-gguf-Q4_K_M",
                            "student-cont-gguf-Q4_K_M", "student-qad-Q4_K_M-gguf-Q4_K_M"}
    for name, info in package.items():
        meta = read_metadata(tiny_run / "artifacts" / info["file"])
        _, entry = _evaluated(tiny_run, name)
        assert float(meta["distill.threshold"]) == entry["metrics"]["threshold"]  # exact
        assert meta["distill.template"] == "fraud" and meta["distill.task"] == "decision"
        assert json.loads(meta["distill.label_words"]) == [" no", " yes"]
        assert json.loads(meta["distill.label_token_ids"]) == json.loads((tiny_run / "data/task.json").read_text())["label_ids"]
        assert meta["distill.chat"] is False and "tokenizer.chat_template" not in meta  # fraud: raw prompts
        if entry.get("operating_point") is not None:
            assert json.loads(meta["distill.operating_point"]) == entry["operating_point"]


@pytest.mark.integration
def test_documented_llama_cpp_script_reproduces_the_evaluation(tiny_run):
    from verticals.fraud import FraudTemplate

    t = FraudTemplate()
    test = pd.read_parquet(tiny_run / "data" / "test.parquet")
    prompts = [t.prompt(r) for r in test.to_dict("records")]
    gguf = tiny_run / "artifacts" / "student-Q4_K_M.gguf"
    out = subprocess.run([sys.executable, SCRIPT, gguf], input="\n".join(prompts) + "\n", capture_output=True,
                         text=True, cwd="/")  # run from anywhere: it reads the GGUF alone
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    probs, entry = _evaluated(tiny_run, "student-gguf-Q4_K_M")
    assert np.abs(np.array([r["probs"] for r in rows]) - probs).max() <= 1e-6
    assert [r["decision"] for r in rows] == (probs[:, 1] >= entry["metrics"]["threshold"]).astype(int).tolist()


def _mirror(run_dir: Path, dst: Path) -> Path:
    """A copy of a run folder made of symlinks (the shared run stays untouched; a test replaces one file)."""
    for src in run_dir.rglob("*"):
        target = dst / src.relative_to(run_dir)
        if src.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(src)
    return dst


@pytest.mark.integration
def test_a_damaged_artifact_file_is_an_error_naming_it(tiny_run, tmp_path):
    run_dir = _mirror(tiny_run, tmp_path / "run")
    gguf = run_dir / "artifacts" / "student-Q4_K_M.gguf"
    whole = gguf.read_bytes()
    gguf.unlink()
    gguf.write_bytes(whole[:-100] + bytes([whole[-100] ^ 1]) + whole[-99:])  # one weight byte flipped
    test = pd.read_parquet(tiny_run / "data" / "test.parquet").head(3)
    test.to_csv(tmp_path / "new.csv", index=False)
    out = run_cli("score", run_dir, tmp_path / "new.csv", "--out", tmp_path / "scored.csv")
    assert out.returncode == 2 and "differs from the file the package stage wrote" in out.stderr, out.stderr[-3000:]
    # a run packaged before hashes were recorded: a copy cut short fails in the worker, which says why
    package = run_dir / "artifacts" / "package.json"
    recorded = json.loads(package.read_text())
    package.unlink()
    package.write_text(json.dumps({k: {f: v for f, v in e.items() if f != "sha256"} for k, e in recorded.items()}))
    gguf.write_bytes(whole[:4096])
    out = run_cli("score", run_dir, tmp_path / "new.csv", "--out", tmp_path / "scored.csv")
    assert out.returncode == 2, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: artifact student-gguf-Q4_K_M could not be run from ") and "student-Q4_K_M.gguf" in last
    assert f"delete {run_dir / 'artifacts' / 'exports.json'}" in last and not (tmp_path / "scored.csv").exists()


@pytest.mark.integration
def test_a_prompt_longer_than_the_model_context_names_its_row(tiny_run, tmp_path):
    from deployment.gguf import read_metadata

    meta = read_metadata(tiny_run / "artifacts" / "student-Q4_K_M.gguf")
    trained = meta[f"{meta['general.architecture']}.context_length"]
    test = pd.read_parquet(tiny_run / "data" / "test.parquet").head(3).astype({"merchant_category": object})
    test.loc[1, "merchant_category"] = "grocery " * trained  # a field pasted many times over
    test.to_csv(tmp_path / "long.csv", index=False)
    out = run_cli("score", tiny_run, tmp_path / "long.csv", "--out", tmp_path / "scored.csv")
    assert out.returncode == 2, out.stderr[-3000:]
    assert re.search(rf"long.csv: row 2: the prompt is \d+ tokens; the model's context holds {trained}", out.stderr)
