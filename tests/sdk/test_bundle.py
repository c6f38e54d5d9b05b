"""`distill bundle` on the fraud tiny run: installed into a fresh virtual environment with only the packages of
requirements.txt (no SDK, no torch, no transformers), predict.py gives the SDK's decisions for every artifact.
A damaged artifact is refused, a failed bundle leaves nothing, and predict.py names what it cannot use (a file
not in SHA256SUMS, a bad SHA256SUMS line, a damaged bundle.json)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from sdk.bundle import choose_artifacts, write_bundle
from sdk.errors import DistillError
from tests.cli import run_cli


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    """A virtual environment without the SDK's packages; the bundle's requirements are installed per test."""
    path = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path / "bin" / "python"


def _same_llama_cpp_build() -> list[str]:
    """pip options offering the fresh environment the llama-cpp-python wheel the SDK's own was installed from
    (the Makefile's build without AMX kernels, from its folder), so that the bundle runs on the same build and
    pip neither compiles it again nor takes another build from its wheel cache, which ignores CMAKE_ARGS."""
    from importlib.metadata import distribution
    from urllib.parse import unquote, urlparse

    direct = distribution("llama_cpp_python").read_text("direct_url.json")
    url = json.loads(direct)["url"] if direct else ""
    return ["--find-links", str(Path(unquote(urlparse(url).path)).parent)] if url.startswith("file:") else []


def test_bundle_installs_alone_and_gives_the_sdks_decisions(fraud_tiny_run, fresh_venv, tmp_path):
    import numpy as np
    import pandas as pd

    from sdk.scoring import load_run

    out = tmp_path / "fraud-bundle"
    cli = run_cli("bundle", fraud_tiny_run, "--out", out)
    assert cli.returncode == 0, cli.stderr
    manifest = json.loads((out / "bundle.json").read_text())
    assert set(manifest["artifacts"]) == {"student-gguf-Q8_0", "student-gguf-Q4_K_M", "student-onnx-fp32"}
    assert manifest["prompt_builder"] == "prompt.py" and manifest["label_token_ids"]
    assert all(a["gate"]["passed"] for a in manifest["artifacts"].values())
    card = (out / "MODEL_CARD.md").read_text()
    assert "## Intended use" in card and "student-gguf-Q4_K_M" in card and "release gate" in card
    assert len((out / "SHA256SUMS").read_text().splitlines()) == len([p for p in out.rglob("*") if p.is_file()]) - 1

    reqs = (out / "requirements.txt").read_text().split()
    assert reqs and all("==" in r for r in reqs), reqs  # the evaluated versions, numpy too
    pip = subprocess.run([str(fresh_venv), "-m", "pip", "install", "-q", "-r", str(out / "requirements.txt"),
                          *_same_llama_cpp_build()], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-2000:]
    # only what requirements.txt names: the SDK and torch are not importable there
    probe = subprocess.run([str(fresh_venv), "-c", "import importlib.util as u; "
                            "print([m for m in ('sdk', 'torch', 'transformers') if u.find_spec(m)])"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr

    test = pd.read_parquet(fraud_tiny_run / "data" / "test.parquet")
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(r, default=str) + "\n" for r in test.to_dict("records")))
    run = load_run(fraud_tiny_run)
    for name in manifest["artifacts"]:
        got_file = tmp_path / f"{name}.jsonl"
        res = subprocess.run([str(fresh_venv), str(out / "predict.py"), str(rows), "--artifact", name, "--threads",
                              "2", "--out", str(got_file)], capture_output=True, text=True, cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-2000:]
        got = [json.loads(line) for line in got_file.read_text().splitlines()]
        want = run.predict(test, artifact=name)
        assert [g["decision"] for g in got] == want["decision"].tolist(), name
        np.testing.assert_allclose([g["score"] for g in got], want["score"].to_numpy(), atol=1e-5)

    # a merchant category no training row held: scored, and named on stderr as `distill score` names it
    assert "crypto_exchange" not in manifest["trained_category_values"]["merchant_category"]
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({**test.to_dict("records")[0], "merchant_category": "crypto_exchange"}, default=str) + "\n")
    res = subprocess.run([str(fresh_venv), str(out / "predict.py"), str(odd)], capture_output=True, text=True)
    assert res.returncode == 0 and "decision" in json.loads(res.stdout.splitlines()[-1]), res.stderr[-2000:]
    assert ("warning: column 'merchant_category': 1 of 1 rows hold values the training data never had "
            "('crypto_exchange' x1)") in res.stderr

    # input it cannot use: exit 2 naming the file or the row and column, never a traceback
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**test.to_dict("records")[0], "device_change": "maybe"}, default=str) + "\n")
    blank = tmp_path / "blank.jsonl"  # `distill score` refuses it; predict.py scored it
    blank.write_text(json.dumps({**test.to_dict("records")[0], "merchant_category": " "}, default=str) + "\n")
    for given, says in ((tmp_path / "missing.jsonl", "missing.jsonl"), (bad, "row 1: ValueError: column 'device_change'"),
                        (blank, "row 1: column 'merchant_category' is empty")):
        res = subprocess.run([str(fresh_venv), str(out / "predict.py"), str(given)], capture_output=True, text=True)
        assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr, res.stderr
    # free text may be left out (as the server and `distill score` take it); a CSV is said to be one
    no_note = tmp_path / "no_note.jsonl"
    first = {k: v for k, v in test.to_dict("records")[0].items() if k != "note"}
    no_note.write_text(json.dumps(first, default=str) + "\n")
    res = subprocess.run([str(fresh_venv), str(out / "predict.py"), str(no_note)], capture_output=True, text=True)
    assert res.returncode == 0 and "decision" in json.loads(res.stdout.splitlines()[-1]), res.stderr[-2000:]
    test.to_csv(tmp_path / "rows.csv", index=False)
    res = subprocess.run([str(fresh_venv), str(out / "predict.py"), str(tmp_path / "rows.csv")], capture_output=True,
                         text=True)
    assert res.returncode == 2 and "reads JSONL" in res.stderr, res.stderr
    res = subprocess.run([str(fresh_venv), str(out / "predict.py"), str(no_note), "--threads", "0"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "--threads 0: give 1 or more" in res.stderr, res.stderr

    verify = subprocess.run([str(fresh_venv), str(out / "predict.py"), "--verify"], capture_output=True, text=True)
    assert verify.returncode == 0 and "intact" in verify.stdout
    with open(out / "models" / "student-Q8_0.gguf", "r+b") as f:  # one flipped byte is found
        f.seek(-10, 2)
        b = f.read(1)
        f.seek(-10, 2)
        f.write(bytes([b[0] ^ 0xFF]))
    verify = subprocess.run([str(fresh_venv), str(out / "predict.py"), "--verify"], capture_output=True, text=True)
    assert verify.returncode == 1 and "models/student-Q8_0.gguf" in verify.stdout


def test_bundle_as_tar_gz_and_bad_requests(fraud_tiny_run, tmp_path):
    out = tmp_path / "b.tar.gz"
    res = run_cli("bundle", fraud_tiny_run, "--out", out, "--artifact", "student-gguf-Q4_K_M")
    assert res.returncode == 0, res.stderr
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert "b/models/student-Q4_K_M.gguf" in names and "b/predict.py" in names and "b/SHA256SUMS" in names
    assert "b/models/student-Q8_0.gguf" not in names
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".*partial"))
    # a bundle beside the user's folder of the same name leaves it alone; the user's own files are never
    # replaced by a bundle (an earlier bundle is)
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "precious.txt").write_text("x")
    (tmp_path / "notes.csv").write_text("a,b\n")
    res = run_cli("bundle", fraud_tiny_run, "--out", tmp_path / "mydata.tar.gz", "--artifact", "student-gguf-Q4_K_M")
    assert res.returncode == 0, res.stderr
    assert (mine / "precious.txt").read_text() == "x"
    write_bundle(fraud_tiny_run, tmp_path / "mydata.tar.gz", ["student-gguf-Q4_K_M"])  # over itself
    res = run_cli("bundle", fraud_tiny_run, "--out", mine, "--artifact", "student-gguf-Q4_K_M")
    assert res.returncode == 2 and "is not a bundle" in res.stderr, res.stderr
    for dest in (tmp_path / "notes.csv", tmp_path / ".", tmp_path / "x.zip"):
        with pytest.raises(DistillError, match="--out"):
            write_bundle(fraud_tiny_run, dest)
    assert (mine / "precious.txt").read_text() == "x" and (tmp_path / "notes.csv").read_text() == "a,b\n"
    res = run_cli("bundle", fraud_tiny_run, "--out", tmp_path / "x", "--artifact", "nope")
    assert res.returncode == 2 and "not evaluated" in res.stderr, res.stderr
    for bad, says in (("student-torch", "bundles hold"), ("baseline-logistic-regression", "baseline")):
        with pytest.raises(DistillError, match=says):
            write_bundle(fraud_tiny_run, tmp_path / "x", [bad])
    assert not (tmp_path / "x").exists()


def test_failed_gates_stay_out():
    def entry(name, passed):
        return {"name": name, "role": "student", "format": "onnx", "variant": None,
                "gate": {"passed": passed, "metric": "roc_auc", "value": 0.5, "reference_value": 0.9,
                         "min_retention": 0.95}}

    entries = [entry("student-onnx-int8", True), entry("student-onnx-int4", False)]
    assert [e["name"] for e in choose_artifacts(entries, None)] == ["student-onnx-int8"]
    with pytest.raises(DistillError, match="failed its release gate"):
        choose_artifacts(entries, ["student-onnx-int4"])
    with pytest.raises(DistillError, match="no artifact of this run passed"):
        choose_artifacts([entry("student-onnx-int4", False)], None)
    # inconclusive (too few validation examples to tell): out by default, in when named
    unsure = entry("student-gguf-Q4_K_M", False)
    unsure["gate"]["verdict"] = "inconclusive"
    assert [e["name"] for e in choose_artifacts([*entries, unsure], None)] == ["student-onnx-int8"]
    assert [e["name"] for e in choose_artifacts([*entries, unsure], ["student-gguf-Q4_K_M"])] == ["student-gguf-Q4_K_M"]


def test_an_earlier_bundle_is_replaced_only_while_it_holds_nothing_else(tmp_path):
    """The documented workflow makes env/ and decisions.jsonl inside a bundle folder: those make it the
    user's folder, never replaced (the destination is checked before the run is read)."""
    bundle = tmp_path / "bundle"
    (bundle / "models").mkdir(parents=True)
    (bundle / "bundle.json").write_text("{}")
    (bundle / "models" / "m.gguf").write_text("x")
    (bundle / "SHA256SUMS").write_text("aa  bundle.json\nbb  models/m.gguf\n")
    with pytest.raises(DistillError, match="no-run"):  # the destination passed: the missing run is what stops it
        write_bundle(tmp_path / "no-run", bundle)
    (bundle / "decisions.jsonl").write_text("mine")
    with pytest.raises(DistillError, match="is not a bundle written by"):
        write_bundle(tmp_path / "no-run", bundle)
    assert (bundle / "decisions.jsonl").read_text() == "mine"


@pytest.fixture
def run_copy(fraud_tiny_run, tmp_path):
    """The shared tiny run, to damage: its artifacts copied, every other file a link to the run's (removing
    one removes the link alone; nothing is written through one)."""
    dst = tmp_path / "run"
    for src in sorted(fraud_tiny_run.rglob("*")):
        rel = src.relative_to(fraud_tiny_run)
        if rel.parts[0] == "checkpoints" or src.is_dir():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.parts[0] == "artifacts":
            shutil.copy2(src, dst / rel)
        else:
            (dst / rel).symlink_to(src)
    return dst


def test_an_artifact_unlike_the_evaluated_one_is_refused(run_copy, tmp_path):
    gguf = run_copy / "artifacts" / "student-Q4_K_M.gguf"
    whole = gguf.read_bytes()
    for damaged, says in ((b"", "is empty"), (whole[:len(whole) // 2], "is truncated"),
                          (b"GGUF" + whole[4:24], "malformed GGUF header"), (b"GGUF\3\0", "cut short"),
                          (b"\0\0\0\0" + whole[4:], "no GGUF magic"),
                          # one weight byte flipped: the same size and a sound header; the packaged hash tells
                          (whole[:-100] + bytes([whole[-100] ^ 1]) + whole[-99:], "differs from the file the package")):
        gguf.write_bytes(damaged)
        with pytest.raises(DistillError, match=says) as err:
            write_bundle(run_copy, tmp_path / "b", ["student-gguf-Q4_K_M"])
        assert str(gguf) in str(err.value) and "exports.json" in str(err.value), err.value  # what to do
    gguf.write_bytes(whole)
    graph = next((run_copy / "artifacts").glob("*onnx*/decision.onnx"))
    graph.write_bytes(graph.read_bytes()[:-1000])  # a protobuf has no magic: the evaluated size tells
    res = run_cli("bundle", run_copy, "--out", tmp_path / "b")
    assert res.returncode == 2 and str(graph.parent) in res.stderr and "not the evaluated model" in res.stderr, res.stderr
    graph.unlink()
    res = run_cli("bundle", run_copy, "--out", tmp_path / "b")
    assert res.returncode == 2 and f"{graph} is missing" in res.stderr, res.stderr
    assert not (tmp_path / "b").exists()


def test_a_failed_bundle_leaves_nothing_and_an_earlier_one_as_it_was(run_copy, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()  # a process that has ended: its partial bundle was left by a kill (SIGKILL cleans nothing)
    (dest / f".b.{gone.pid}.partial" / "models").mkdir(parents=True)
    (dest / f".b.{gone.pid}.partial.tar.gz").write_bytes(b"half")
    with subprocess.Popen(["sleep", "60"]) as alive:  # a bundle still being written there: left alone
        (dest / f".b.{alive.pid}.partial").mkdir()
        out = write_bundle(run_copy, dest / "b", ["student-gguf-Q4_K_M"])
        assert sorted(p.name for p in dest.iterdir()) == [f".b.{alive.pid}.partial", "b"]
        alive.kill()
    (dest / f".b.{alive.pid}.partial").rmdir()
    before = (out / "SHA256SUMS").read_text()
    (run_copy / "evaluation" / "student-gguf-Q4_K_M.details.npz").unlink()  # fails once the models are copied
    for target in (dest / "b", dest / "b.tar.gz"):
        with pytest.raises(DistillError, match="student-gguf-Q4_K_M.details.npz is missing"):
            write_bundle(run_copy, target, ["student-gguf-Q4_K_M"])
    assert sorted(p.name for p in dest.iterdir()) == ["b"]  # no partial folder or archive beside it
    assert (out / "SHA256SUMS").read_text() == before and (out / "models" / "student-Q4_K_M.gguf").is_file()


@pytest.fixture(scope="module")
def small_bundle(fraud_tiny_run, tmp_path_factory):
    return write_bundle(fraud_tiny_run, tmp_path_factory.mktemp("small") / "bundle", ["student-gguf-Q4_K_M"])


def _predict(bundle: Path, *args) -> subprocess.CompletedProcess:
    """The shipped predict.py as a script (the SDK's interpreter: these checks need numpy alone)."""
    return subprocess.run([sys.executable, str(bundle / "predict.py"), *map(str, args)], capture_output=True,
                          text=True, cwd=bundle.parent)


def test_verify_names_unlisted_files_and_refuses_bad_sums(small_bundle, tmp_path):
    import hashlib

    b = tmp_path / "b"
    shutil.copytree(small_bundle, b)
    res = _predict(b, "--verify")
    assert res.returncode == 0 and "intact" in res.stdout, res.stdout + res.stderr
    # the user's files (rows, decisions, the virtual environment docs/export.md makes inside) are not the bundle's
    (b / "rows.jsonl").write_text("{}\n")
    (b / "env" / "lib").mkdir(parents=True)
    (b / "env" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (b / "env" / "lib" / "site.py").write_text("")
    assert _predict(b, "--verify").returncode == 0
    # files predict.py would read or run, not in SHA256SUMS: another model, a tokenizer file, a module that
    # would shadow numpy
    for name in ("models/other.gguf", "tokenizer/added_tokens.json", "numpy.py"):
        (b / name).write_text("x")
    (b / "tokenizer" / "tokenizer_config.json").unlink()
    res = _predict(b, "--verify")
    assert res.returncode == 1, res.stdout + res.stderr
    lines = res.stdout.splitlines()  # SHA256SUMS itself is not named
    assert "NOT LISTED: models/other.gguf, numpy.py, tokenizer/added_tokens.json" in lines, res.stdout
    assert "MISSING: tokenizer/tokenizer_config.json" in lines, res.stdout

    # SHA256SUMS itself: a malformed line, a path out of the bundle (even one whose digest matches)
    sums = (small_bundle / "SHA256SUMS").read_text()
    (b / "SHA256SUMS").write_text(sums)
    outside = tmp_path / "outside.txt"
    outside.write_text("not the bundle's")
    digest = hashlib.sha256(outside.read_bytes()).hexdigest()
    (b / "models" / "link.gguf").symlink_to(outside)
    n = len(sums.splitlines()) + 1
    for line, says in (("not a checksum line", f"line {n} is not"), (f"{digest}  ../outside.txt", "outside the bundle"),
                       (f"{digest}  {outside}", "outside the bundle"), (f"{digest}  models/link.gguf", "a link to")):
        (b / "SHA256SUMS").write_text(sums + line + "\n")
        res = _predict(b, "--verify")
        assert res.returncode == 2 and "SHA256SUMS" in res.stderr and says in res.stderr, res.stdout + res.stderr
        assert "Traceback" not in res.stderr and f"line {n}" in res.stderr, res.stderr


def test_a_damaged_bundle_json_is_named(small_bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(small_bundle, b)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("$3 gift_cards online 02h RU. Fraud?\n")
    manifest = json.loads((b / "bundle.json").read_text())
    for text, says in ((None, "bundle.json is missing"), ('{"artifacts": {', "bundle.json: not valid JSON"),
                       (json.dumps({k: v for k, v in manifest.items() if k != "artifacts"}), "field 'artifacts'"),
                       (json.dumps({**manifest, "label_token_ids": [1]}), "field 'label_token_ids'")):
        (b / "bundle.json").unlink(missing_ok=True)
        if text is not None:
            (b / "bundle.json").write_text(text)
        res = _predict(b, "--prompts", prompts)
        assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr, res.stderr


@pytest.mark.parametrize("threshold, says", [
    (0.42, "(test: 7 positive). Thresholds were chosen on validation;"),
    (None, "(test: zero 3, one 4, two 3). Each decision is the most probable label;")])
def test_the_model_card_says_how_a_graded_run_decides(threshold, says):
    from sdk.bundle import model_card
    from verticals.education.template import EducationTemplate

    # a rubric run has no threshold and counts per grade: the card said "Thresholds were chosen" and "N positive"
    data = {"n_train": 20, "n_val": 10, "n_test": 10, "test_positives": 7}
    if threshold is None:
        data["test_label_counts"] = {"zero": 3, "one": 4, "two": 3}
    report = {"data": data, "artifacts": [{"name": "student-gguf-Q4_K_M", "role": "student",
                                           "metrics": {"accuracy": 0.8, "threshold": threshold}}]}
    manifest = {"project": "p", "template": "education", "input_columns": ["question"], "label_words": [" zero"],
                "artifacts": {}}
    assert says in model_card(manifest, report, EducationTemplate())


def test_the_model_cards_limitations_are_the_bundles_own():
    """The card listed the warnings of artifacts left out of the bundle (Q8_0, the fine-tuned twin)."""
    from sdk.bundle import model_card
    from verticals.education.template import EducationTemplate

    names = ["teacher-torch", "student-torch", "student-gguf-Q8_0", "student-gguf-Q4_K_M"]
    report = {"data": {"n_train": 20, "n_val": 10, "n_test": 10},
              "artifacts": [{"name": n, "role": "student", "metrics": {"accuracy": 0.8}} for n in names],
              "warnings": ["only 10 test examples", "student-gguf-Q8_0: its ratio is only known to lie in [0.5, 1.2]",
                           "student-gguf-Q4_K_M: its ratio is only known to lie in [0.6, 1.1]"],
              "notes": ["The plain baseline baseline-rule scores higher than the teacher"]}
    report["artifacts"].append({"name": "baseline-rule", "role": "baseline", "metrics": {"accuracy": 0.9}})
    manifest = {"project": "p", "template": "education", "input_columns": ["question"], "label_words": [" zero"],
                "artifacts": {}}
    card = model_card(manifest, report, EducationTemplate())
    limits = card.split("## Limitations")[1].split("## Files")[0]
    assert "only 10 test examples" in limits and "student-gguf-Q8_0" not in limits
    assert "The plain baseline baseline-rule" in limits  # about the run, not another export
    assert "student-gguf-Q4_K_M" not in limits  # not bundled either (the manifest lists none)
