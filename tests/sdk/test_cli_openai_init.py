"""`distill init --teacher openai` and what `distill run` says about an API teacher's calls: the user's --set values
survive the teacher's replacement, the documented quick starts write what their docs say, and the calls counted
are those of the stages that ran (annotation and the teacher's evaluation, both paid)."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from sdk.cli import teacher_calls_line
from sdk.config import load_config
from tests.cli import run_cli

ROOT = Path(__file__).resolve().parents[2]
ENDPOINT = ("--teacher", "openai", "--base-url", "https://api.deepseek.com", "--model", "deepseek-chat")


def test_set_values_for_the_teacher_and_student_base_survive_the_api_teacher(tmp_path):
    out = run_cli("init", "fraud", tmp_path / "p", "--preset", "tiny", *ENDPOINT, "--set", "teacher.budget=5",
                  "--set", "teacher.api=chat", "--set", "student.base=/models/qwen", "--set", "data.n_test=50")
    assert out.returncode == 0, out.stderr
    cfg = load_config(tmp_path / "p" / "project.yaml")
    assert (cfg.teacher.kind, cfg.teacher.budget, cfg.teacher.api) == ("openai", 5.0, "chat")
    assert (cfg.student.base, cfg.student.model, cfg.data.n_test) == ("/models/qwen", None, 50)
    assert cfg.teacher.base_url == "https://api.deepseek.com"  # the flags' values, where no --set replaces them


def test_a_set_student_model_keeps_the_api_teachers_student_base_unset(tmp_path):
    out = run_cli("init", "fraud", tmp_path / "p", "--preset", "tiny", *ENDPOINT, "--set", "student.model=/models/qwen")
    assert out.returncode == 0, out.stderr
    student = yaml.safe_load((tmp_path / "p" / "project.yaml").read_text())["student"]
    assert student.get("model") == "/models/qwen" and "base" not in student


def test_a_bad_set_value_for_the_api_teacher_exits_2_naming_the_flag(tmp_path):
    out = run_cli("init", "fraud", tmp_path / "p", "--preset", "tiny", *ENDPOINT, "--set", "teacher.budget=-1",
                  "--set", "teacher.bugdet=3")
    assert out.returncode == 2
    assert "--set teacher.budget=-1" in out.stderr and "teacher.budget: Input should be greater than 0" in out.stderr
    assert "teacher.bugdet: unknown key; did you mean `teacher.budget`?" in out.stderr
    assert not (tmp_path / "p").exists()


def _init_commands(path: Path) -> list[list[str]]:
    """Every `distill init ... --teacher openai` command of a document's bash blocks, as its words."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S):
        for command in re.sub(r"\\\n", " ", block).splitlines():
            words = shlex.split(command, comments=True)
            if words[:2] == ["distill", "init"] and "openai" in words:
                commands.append(words[1:])  # init TEMPLATE DIR ...
    return commands


@pytest.mark.parametrize("doc", ["docs/teachers.md", "README.md"])
def test_the_deepseek_quick_start_writes_a_chat_teacher(doc, tmp_path):
    # init writes no `api`: auto would send the fraud template's raw prompt to /completions, which DeepSeek lacks
    commands = [c for c in _init_commands(ROOT / doc) if "https://api.deepseek.com" in c]
    assert commands, f"no DeepSeek quick start in {doc}"
    for words in commands:
        words[2] = str(tmp_path / words[2])  # the project folder
        out = run_cli(*words)
        assert out.returncode == 0, out.stderr
        cfg = load_config(Path(words[2]) / "project.yaml")
        assert (cfg.teacher.kind, cfg.teacher.api, cfg.teacher.api_key_env) == ("openai", "chat", "DEEPSEEK_API_KEY")
    documented = yaml.safe_load(re.search(r"## DeepSeek's API.*?```yaml\n(.*?)```", (ROOT / "docs/teachers.md")
                                          .read_text(), flags=re.S).group(1))["teacher"]
    assert documented["api"] == cfg.teacher.api and documented["base_url"] == cfg.teacher.base_url


def _usage(calls, cache_hits, cost):
    return {"calls": calls, "cache_hits": cache_hits, "malformed_retries": 0, "prompt_tokens": 10 * calls,
            "completion_tokens": calls, "reasoning_tokens": 0, "cost": cost}


def _report(annotate=None, evaluate=None):
    artifacts = [{"name": "student-gguf-Q8_0", "role": "student"}]
    if evaluate is not None:
        artifacts.insert(0, {"name": "teacher-api", "role": "teacher", "usage": evaluate})
    return {"annotation": {"teacher_usage": annotate} if annotate else {}, "artifacts": artifacts}


def test_the_teacher_calls_of_a_run_count_annotation_and_evaluation():
    report = _report(_usage(10, 28, 0.0100), _usage(2, 2, 0.0023))
    everything = ["data", "annotate", "distill", "export", "evaluate", "package", "report"]
    assert teacher_calls_line(report, everything) == \
        "teacher calls this run: 12 (annotate 10, evaluate 2), from cache: 30, cost: 0.0123"
    # annotation up to date (`distill annotate` ran it): the evaluation's calls are still this run's, and paid
    assert teacher_calls_line(report, ["distill", "export", "evaluate", "package", "report"]) == \
        "teacher calls this run: 2 (annotate up to date, evaluate 2), from cache: 2, cost: 0.0023"
    assert teacher_calls_line(report, []) == "teacher calls this run: 0 (annotate up to date, evaluate up to date)"
    # the evaluate stage ran, but the teacher's result was reused from an identical earlier job: nothing asked
    reused = _report(_usage(10, 28, 0.0100), {**_usage(2, 2, 0.0023), "reused": True})
    assert teacher_calls_line(reused, ["evaluate", "report"]) == \
        "teacher calls this run: 0 (annotate up to date, evaluate up to date)"


def test_the_teacher_calls_line_without_an_api_teacher():
    assert teacher_calls_line(_report(), ["annotate", "evaluate"]) is None  # a local teacher: nothing paid
    assert teacher_calls_line({}, ["evaluate"]) is None  # a report of another schema
    # an API teacher evaluated but annotated by nothing that counts calls (no teacher_usage)
    assert teacher_calls_line(_report(evaluate=_usage(5, 0, 0.5)), ["evaluate"]) == \
        "teacher calls this run: 5 (evaluate 5), from cache: 0, cost: 0.5000"


def test_init_never_repeats_a_key_given_by_mistake(tmp_path):
    key = "sk_9f8e7d6c5b4a39281706f5e4d3c2b1a0ffee"
    out = run_cli("init", "fraud", tmp_path / "p", "--preset", "tiny", *ENDPOINT, "--set",
                  f"teacher.api_key_env={key}", "--set", "teacher.budget=-1")
    assert out.returncode == 2 and "teacher.api_key_env: looks like an API key itself" in out.stderr
    assert "--set teacher.api_key_env=... --set teacher.budget=-1" in out.stderr  # the other value is shown
    assert key[3:20] not in out.stderr + out.stdout and not (tmp_path / "p").exists()
