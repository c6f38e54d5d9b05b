"""`distill init --teacher openai` and what `distill run` says about an API teacher's calls: the user's --set values
survive the teacher's replacement, the documented quick starts write what their docs say, and the calls counted
are those of the stages that ran (annotation and the teacher's evaluation, both paid)."""

import yaml

from sdk.config import load_config
from tests.cli import run_cli

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
