"""The whole pipeline on tiny random models given by path (teacher folder, student folder): seconds,
no embedded model; checks the Python API, stage skipping and a student with another tokenizer."""

import json

import pytest

import sdk
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
    # a lost output makes its stage run again; a run stopped right after it (a kill before the next stage
    # finished) must not leave the stages below looking up to date: they were made from the old output
    (tmp_path / "run" / "annotations" / "annotations.json").unlink()
    assert _project(tiny_llama, tiny_student).run(tmp_path / "run", until="annotate").ran == ["annotate"]
    assert "distill" not in json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    assert _project(tiny_llama, tiny_student).run(tmp_path / "run").ran[0] == "distill"


def test_a_student_with_another_tokenizer_learns_from_label_words(tiny_llama, tmp_path):
    """Cross-tokenizer distillation on the fraud tiny preset: the student's tokenizer (a BPE trained to another
    vocabulary) is the run's; the teacher is adapted and annotates on the same texts in its own tokens, and
    its label-word probabilities (which do not depend on the tokenizer) are the student's targets; the teacher
    is evaluated in its own tokens too, and the report names the alignment."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.sdk.distill.test_cross_tokenizer import _tokenizer

    other = make_tiny_llama(tmp_path / "other", layers=2, seed=3)
    tok = _tokenizer(300, 1)
    tok.save_pretrained(other)
    model = AutoModelForCausalLM.from_pretrained(other)
    model.resize_token_embeddings(len(tok))
    model.config.update({"bos_token_id": tok.eos_token_id, "eos_token_id": tok.eos_token_id,
                         "pad_token_id": tok.pad_token_id})
    model.save_pretrained(other)
    teacher_vocab = len(AutoTokenizer.from_pretrained(tiny_llama))
    assert len(tok) != teacher_vocab
    result = _project(tiny_llama, other).run(tmp_path / "run")
    ann = result.report["annotation"]
    assert ann["source"] == "label_words" and ann["top_k"] == 2 and ann["alignment"]["teacher_vocab"] == teacher_vocab
    arts = {a["name"]: a for a in result.report["artifacts"]}
    assert 0 <= arts["teacher-torch"]["metrics"]["roc_auc"] <= 1 and 0 <= arts["student-gguf-Q8_0"]["metrics"]["roc_auc"] <= 1
    assert "tokenizer is not the student's" in (tmp_path / "run" / "report.md").read_text()
