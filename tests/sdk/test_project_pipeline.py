"""The whole pipeline on tiny random models given by path (teacher folder, student folder): seconds,
no embedded model; checks the Python API, stage skipping and the tokenizer guard."""

import json

import pytest

import sdk
from sdk.errors import DistillError
from tests.conftest import make_tiny_llama


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("student"), layers=2, seed=5)


def _project(teacher, student):
    return sdk.Project.from_template("fraud", preset="tiny", teacher={"model": str(teacher)},
                                     student={"model": str(student)}, export={"formats": {"gguf": {"quants": ["Q8_0"]}}},
                                     distill={"compare_fine_tuning": False})  # the twin has its own test


def test_pipeline_with_folder_teacher_and_student(tiny_llama, tiny_student, tmp_path):
    result = _project(tiny_llama, tiny_student).run(tmp_path / "run")
    r = result.report
    assert [a["name"] for a in r["artifacts"]] == ["teacher-torch", "student-torch", "student-gguf-Q8_0",
                                                   "baseline-gradient-boosting", "baseline-logistic-regression"]
    assert r["artifacts"][-1]["role"] == "baseline" and "baseline-gradient-boosting" not in r["summary"]
    student = {a["name"]: a for a in r["artifacts"]}["student-torch"]
    assert student["params"] < r["artifacts"][0]["params"]
    meta = json.loads((tmp_path / "run" / "student" / "distill_meta.json").read_text())
    assert meta["origin"] == str(tiny_student)
    assert (tmp_path / "run" / "report.png").stat().st_size > 10_000
    # the same project again: every stage is up to date
    manifest = (tmp_path / "run" / "manifest.json").read_text()
    again = _project(tiny_llama, tiny_student).run(tmp_path / "run")
    assert again.report == r
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"] == json.loads(manifest)["stages"]


def test_student_with_another_tokenizer_is_refused(tiny_llama, tmp_path):
    from transformers import AutoTokenizer

    other = make_tiny_llama(tmp_path / "other", layers=2)
    tok = AutoTokenizer.from_pretrained(other)
    tok.add_tokens(["<extra_token>"])
    tok.save_pretrained(other)
    with pytest.raises(DistillError, match="another tokenizer"):
        _project(tiny_llama, other).run(tmp_path / "run")
