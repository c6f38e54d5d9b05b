"""The whole fraud pipeline with an `openai` teacher behind a real local HTTP server (faults injected) and a
student cut from a tiny local model; then the same project again: zero teacher calls."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from sdk import config as cfgmod
from sdk.errors import DistillError
from sdk.project import Project
from tests.cli import run_cli
from tests.sdk.teachers.fake_openai import FakeOpenAI

SECRET = "sk-pipeline-secret-7f3a9c-NEVER-ON-DISK"


def openai_config(base_url: str, student_base, **teacher) -> dict:
    raw = cfgmod.load_yaml(cfgmod.Path(__file__).parents[3] / "verticals" / "fraud" / "tiny.yaml")
    raw["teacher"] = {"kind": "openai", "base_url": base_url, "model": "fake-r1", "api_key_env": "FAKE_TEACHER_KEY",
                      "api": "completions", "timeout_s": 2.0, "max_retries": 4, **teacher}
    raw["student"] = {"base": str(student_base), "layers": 2}
    raw["export"] = {"formats": {"gguf": {"quants": ["Q8_0"]}}}
    return raw


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_TEACHER_KEY", SECRET)
    return tmp_path / "cache"


def test_fraud_runs_end_to_end_with_an_api_teacher_and_a_rerun_calls_nothing(tiny_llama, tmp_path, isolated_cache):
    with FakeOpenAI({3: "429", 10: "500", 20: "cut"}, key=SECRET) as server:
        cfg = cfgmod.validate_config(openai_config(server.base_url, tiny_llama))
        result = Project(cfg).run(tmp_path / "run")
        r = result.report
        names = [a["name"] for a in r["artifacts"]]
        assert names[0] == "teacher-api" and "student-gguf-Q8_0" in names
        teacher = r["artifacts"][0]
        assert teacher["format"] == "openai" and teacher["size_bytes"] is None
        assert 0.0 <= teacher["metrics"]["roc_auc"] <= 1.0 and teacher["usage"]["calls"] >= 5  # live latency calls
        usage = r["annotation"]["teacher_usage"]
        assert usage["calls"] == cfg.data.n_train and usage["cache_hits"] == 0
        assert r["annotation"]["source"] == "logprobs"
        # every training, validation and test prompt got exactly one good answer (latency calls are live extras)
        texts = json.loads((tmp_path / "run" / "data" / "texts.json").read_text())
        outcomes = server.outcomes()
        for prompt in texts["train"]:
            assert outcomes[prompt].count("ok") >= 1
        md = (tmp_path / "run" / "report.md").read_text()
        assert "## Teacher API usage" in md and "the teacher is an API" in md
        calls = len(server.log)

        again = Project(cfgmod.validate_config(openai_config(server.base_url, tiny_llama))).run(tmp_path / "run")
        assert again.ran == [] and len(server.log) == calls  # zero teacher calls
    for f in [*tmp_path.rglob("*")]:
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f


def test_annotation_and_evaluation_spend_one_budget_and_raising_it_reruns_nothing_done(tiny_llama, tmp_path,
                                                                                        isolated_cache, capfd):
    prices = {"input_per_million": 1000.0, "output_per_million": 1000.0}
    ledger = tmp_path / "run" / "teacher_spend.json"
    with FakeOpenAI() as server:
        raw = openai_config(server.base_url, tiny_llama, prices=prices)
        Project(cfgmod.validate_config(raw)).run(tmp_path / "run", until="annotate")
        annotated = json.loads(ledger.read_text())
        assert annotated["calls"] == len(server.log) == raw["data"]["n_train"]
        # room for three more calls: the teacher's evaluation (another process) stops on the run's budget
        raw["teacher"]["budget"] = annotated["cost"] * (1 + 3 / annotated["calls"])
        with pytest.raises(DistillError, match=r"running teacher-api failed .*teacher budget [0-9.]+ reached: "
                                               r"[0-9.]+ spent on \d+ calls in this run"):
            Project(cfgmod.validate_config(raw)).run(tmp_path / "run")
        stopped = json.loads(ledger.read_text())  # annotation's calls counted: fewer than 3 more fit
        assert annotated["calls"] <= stopped["calls"] < annotated["calls"] + 3 and stopped["calls"] == len(server.log)
        assert stopped["cost"] <= raw["teacher"]["budget"]
        assert "Traceback" not in capfd.readouterr().err  # the worker's budget stop is one line, not a traceback
        # a higher budget (and other settings of how to call) re-runs no finished stage and no paid call
        raw["teacher"].update(budget=1e6, concurrency=2, timeout_s=5.0)
        result = Project(cfgmod.validate_config(raw)).run(tmp_path / "run")
        assert "evaluate" in result.ran and not {"adapt", "annotate", "distill"} & set(result.ran)
        teacher = result.report["artifacts"][0]
        assert teacher["name"] == "teacher-api" and teacher["usage"]["cache_hits"] == stopped["calls"] - annotated["calls"]
        assert json.loads(ledger.read_text())["calls"] == len(server.log)  # every paid call is on the record


def test_generation_with_an_api_teacher_needs_sequence_level_kd(tiny_llama, isolated_cache):
    raw = cfgmod.load_yaml(cfgmod.Path(__file__).parents[3] / "verticals" / "code" / "tiny.yaml")
    raw["teacher"] = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "api_key_env": None}
    raw["student"] = {"base": str(tiny_llama), "layers": 2}
    from sdk.preflight import check_config

    problems = check_config(cfgmod.validate_config(raw)).problems
    assert any("distill.loss.alpha" in p and "sequence-level KD" in p for p in problems)


def test_an_api_teacher_without_a_local_model_is_a_clear_error():
    raw = {"template": "fraud", "teacher": {"kind": "openai", "base_url": "http://x/v1", "model": "m"}}
    with pytest.raises(DistillError, match="student: an openai teacher has no weights"):
        cfgmod.validate_config(raw)


def _annotate(project_yaml, *extra):
    return run_cli("annotate", project_yaml, *extra)  # in this process (the fake server is a thread of it)


def test_annotate_cli_killed_mid_run_resumes_without_paying_twice(tiny_llama, tmp_path, isolated_cache):
    import os
    import signal
    import time

    import yaml

    env = dict(os.environ)
    # request 7 hangs: the client is killed while waiting for it (one request in flight: concurrency 1)
    with FakeOpenAI({2: "500", 4: "slow", 7: "hang"}, key=SECRET, slow_s=4.0) as server:
        project = tmp_path / "project.yaml"
        project.write_text(yaml.safe_dump(openai_config(server.base_url, tiny_llama, concurrency=1,
                                                        prices={"input_per_million": 0.5,
                                                                "output_per_million": 2.0})))
        dry = _annotate(project, "--dry-run", "--out", str(tmp_path / "run"))
        assert dry.returncode == 0, dry.stderr
        assert "48 requests to send, 0 answers already cached" in dry.stdout and len(server.log) == 0
        proc = subprocess.Popen([sys.executable, "-m", "sdk.cli", "annotate", str(project), "--out",
                                 str(tmp_path / "run")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert server.hanging.wait(timeout=120), "the client never reached the hanging request"
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = len(server.log)
        done = _annotate(project, "--out", str(tmp_path / "run"))
        assert done.returncode == 0, done.stderr
        # the resumed run asked only for what was missing: answers committed before the kill came from the cache
        ok_before = sum(1 for r in server.log[:before] if r["outcome"] == "ok")
        assert f"teacher calls: {48 - ok_before}, from cache: {ok_before}" in done.stdout, done.stdout
        outcomes = server.outcomes()
        assert len(outcomes) == 48 and all(v.count("ok") == 1 for v in outcomes.values())
        assert sum(v.count("hang") for v in outcomes.values()) == 1
        again = _annotate(project, "--out", str(tmp_path / "run"))
        assert "annotate: up to date; teacher calls: 0" in again.stdout and len(server.log) == len(server.log)
        dry = _annotate(project, "--dry-run", "--out", str(tmp_path / "run"))
        assert "0 requests to send, 48 answers already cached" in dry.stdout
    for f in [*tmp_path.rglob("*")]:
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f


def test_annotate_dry_run_needs_no_key_and_ctrl_c_says_how_to_resume(tiny_llama, tmp_path, isolated_cache, monkeypatch):
    import os
    import signal

    import yaml

    with FakeOpenAI({3: "hang"}, key=SECRET) as server:
        project = tmp_path / "project.yaml"
        # a long timeout: Ctrl-C must not wait for the request in flight to time out
        project.write_text(yaml.safe_dump(openai_config(server.base_url, tiny_llama, concurrency=1, timeout_s=60.0)))
        monkeypatch.delenv("FAKE_TEACHER_KEY")  # an estimate sends nothing: no key needed
        dry = _annotate(project, "--dry-run", "--out", str(tmp_path / "run"))
        assert dry.returncode == 0, dry.stderr
        assert "48 requests to send" in dry.stdout and len(server.log) == 0
        assert "if the endpoint gives no log-probabilities: 48 sampled-answer requests more" in dry.stdout
        proc = subprocess.Popen([sys.executable, "-m", "sdk.cli", "annotate", str(project), "--out",
                                 str(tmp_path / "run")], env={**os.environ, "FAKE_TEACHER_KEY": SECRET},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert server.hanging.wait(timeout=120), "the client never reached the hanging request"
        proc.send_signal(signal.SIGINT)
        t0 = time.perf_counter()
        _, err = proc.communicate(timeout=120)
        waited = time.perf_counter() - t0
    assert proc.returncode == 130, err
    assert waited < 15, f"Ctrl-C took {waited:.0f} s: it waited for the request in flight"
    assert f"interrupted; every answer received is cached: re-run `distill annotate {project}` to resume" in err
    assert "Traceback" not in err


def test_distill_check_asks_the_endpoint_for_its_models(tiny_llama, tmp_path, isolated_cache, monkeypatch):
    import yaml

    def check(**teacher):
        project = tmp_path / "project.yaml"
        project.write_text(yaml.safe_dump(openai_config(teacher.pop("base_url"), tiny_llama, **teacher)))
        return run_cli("check", project)

    with FakeOpenAI(key=SECRET) as server:
        ok = check(base_url=server.base_url)
        assert ok.returncode == 0 and f"{server.base_url} reachable, key accepted, serves 'fake-r1'" in ok.stdout
        typo = check(base_url=server.base_url, model="fake-r2")
        assert typo.returncode == 2 and "teacher.model: " in typo.stderr
        assert "does not serve 'fake-r2' (it lists 2 models; did you mean 'fake-r1'" in typo.stderr
        server.models = ["fake-r2:latest", "other"]  # as Ollama lists a name it also accepts without its tag
        assert check(base_url=server.base_url, model="fake-r2").returncode == 0
        server.models = ["/models/teacher-q8_0.gguf"]  # llama.cpp's server: one model, any name answers
        one = check(base_url=server.base_url)
        assert one.returncode == 0 and "it lists one model, '/models/teacher-q8_0.gguf', not 'fake-r1'" in one.stdout
        server.models = ["fake-r1", "fake-chat"]
        # no /v1: the server answers 404 there; a server without a model list is not a problem, only said
        bare = check(base_url=server.base_url.removesuffix("/v1"))
        assert bare.returncode == 0 and "answered GET /models with HTTP 404 (vLLM's and llama.cpp's" in bare.stdout
        monkeypatch.setenv("FAKE_TEACHER_KEY", "sk-wrong-key-0123456789")
        wrong = check(base_url=server.base_url)
        assert wrong.returncode == 2 and "refused the key in $FAKE_TEACHER_KEY (HTTP 401)" in wrong.stderr
        assert "sk-wrong" not in wrong.stderr + wrong.stdout
        assert all(r["outcome"].startswith("GET /") for r in server.log)  # nothing but model lists was asked
    gone = check(base_url=server.base_url)
    assert gone.returncode == 2 and "teacher.base_url: " in gone.stderr and "is unreachable from here" in gone.stderr


def test_a_run_keyed_before_operational_settings_left_the_key_stays_up_to_date(tiny_llama, tmp_path, isolated_cache):
    from sdk.rundir import stable_hash

    with FakeOpenAI() as server:
        cfg = cfgmod.validate_config(openai_config(server.base_url, tiny_llama))
        Project(cfg).run(tmp_path / "run", until="adapt")
        manifest = tmp_path / "run" / "manifest.json"
        m = json.loads(manifest.read_text())
        c = cfg.model_dump(mode="json")  # the adapt key as it was made before: the whole teacher section
        old = stable_hash(["adapt", m["stages"]["data"]["hash"],
                           [c["teacher"], None, c["student"]["base"], c["student"]["model"]]])
        assert old != m["stages"]["adapt"]["hash"]
        m["stages"]["adapt"]["hash"] = old
        manifest.write_text(json.dumps(m))
        again = Project(cfg).run(tmp_path / "run", until="adapt")
        assert again.ran == []
        changed = Project(cfgmod.validate_config(openai_config(server.base_url, tiny_llama, model="fake-chat")))
        assert changed.run(tmp_path / "run", until="adapt").ran == ["adapt"]  # another teacher: not up to date
