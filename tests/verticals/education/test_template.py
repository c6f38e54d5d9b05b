"""The education template on its own: synthesizer, label words per grading scheme, records import, metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from sdk.errors import DistillError
from verticals.base import check_template
from verticals.education.answers import ERROR_TYPES
from verticals.education.template import EducationOptions, EducationTemplate


@pytest.mark.parametrize("grading", ["binary", "rubric"])
def test_check_template_for_each_grading_scheme(grading):
    options = EducationOptions(grading=grading)
    checked = check_template(EducationTemplate(), n=40, options=options)
    assert checked["primary"] == 1.0  # perfect probabilities grade every answer right
    assert len(EducationTemplate().configure(options).label_words) == (2 if grading == "binary" else 3)


def test_synthesized_answers_cover_every_error_type_and_grade():
    options = EducationOptions(grading="rubric")
    df = EducationTemplate().configure(options).synthesize(800, 3, options)
    assert set(df["error_type"]) == set(ERROR_TYPES)
    assert set(df["label"]) == {0, 1, 2}
    assert (df.loc[df["error_type"].isin(["correct", "equivalent"]), "label"] == 2).all()
    assert (df.loc[df["error_type"] == "wrong_operation", "label"] == 0).all()
    assert (df.loc[df["error_type"].isin(["partial", "rounding", "unit_error"]), "label"] == 1).all()
    # "written differently" is what string match cannot grade
    eq = df[df["error_type"] == "equivalent"]
    assert (eq["answer"] != eq["reference"]).all()
    assert df["family"].nunique() == 7 and set(df["difficulty"]) == {1, 2, 3}


def test_gsm_symbolic_problems_come_from_reasoning_gym():
    options = EducationOptions(grading="binary", gsm_share=1.0)
    df = EducationTemplate().configure(options).synthesize(30, 0, options)
    assert (df["source"] == "gsm_symbolic").all()
    assert df["question"].str.len().mean() > 100  # GSM problems are paragraphs, not one-liners
    assert df["label"].isin([0, 1]).all()


def test_rubric_prompts_end_with_the_score_question_and_labels_are_number_words():
    t = EducationTemplate().configure(EducationOptions(grading="rubric", rubric_max=3))
    assert t.label_words == {0: " zero", 1: " one", 2: " two", 3: " three"}
    p = t.prompt({"question": "2+2?", "reference": "4", "answer": "four"})
    assert p.endswith("Student: four\nScore 0-3?")


def _write_jsonl(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def test_records_import_maps_label_spellings_and_keeps_other_fields(tmp_path):
    recs = [{"id": 1, "question": "q1", "reference": "4", "answer": "4", "label": "correct"},
            {"id": "b", "question": "q2", "reference": "4", "answer": "5", "label": False},
            {"question": "q3", "reference": "1/2", "answer": "0.5", "label": 1, "class": {"room": 7}},
            {"question": "q4", "reference": "3", "answer": "2", "label": "Incorrect"}]
    df = EducationTemplate().load(_write_jsonl(tmp_path / "r.jsonl", recs))
    assert df["label"].tolist() == [1, 0, 1, 0]
    assert df["id"].tolist()[:2] == ["1", "b"] and df["class"].iloc[2] == '{"room": 7}'


def test_malformed_records_are_named_by_line_and_field(tmp_path):
    recs = [{"question": "q", "reference": "4", "answer": "4", "label": "correct"},
            "{not json",
            {"question": "q", "reference": "4", "label": 1},
            {"question": "q", "reference": "4", "answer": "4", "label": "maybe"},
            {"question": ["a list"], "reference": "4", "answer": "  ", "label": 0},
            "[1, 2]"]
    with pytest.raises(DistillError) as err:
        EducationTemplate().load(_write_jsonl(tmp_path / "bad.jsonl", recs))
    msg = str(err.value)
    assert "line 2: not valid JSON" in msg
    assert "line 3: field 'answer' is missing" in msg
    assert "line 4: field 'label': 'maybe' is not a binary grade" in msg
    assert "line 5: field 'question' must be text" in msg and "line 5: field 'answer' is empty" in msg
    assert "line 6: expected a JSON object" in msg
    rubric = EducationTemplate().configure(EducationOptions(grading="rubric"))
    _write_jsonl(tmp_path / "r.jsonl", [{"question": "q", "reference": "4", "answer": "4", "label": 3}])
    with pytest.raises(DistillError, match=r"line 1: field 'label': 3 is not a rubric score 0..2 \(for correct"):
        rubric.load(tmp_path / "r.jsonl")


def test_metrics_quadratic_kappa_and_false_accepts():
    t = EducationTemplate().configure(EducationOptions(grading="rubric"))
    y = np.array([0, 1, 2, 2, 1, 0, 2])
    pred = np.array([0, 2, 2, 1, 1, 2, 2])
    probs = np.eye(3)[pred] * 0.9 + 0.1 / 3
    m = t.metrics(y, probs, 0.5, t.options)
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["kappa"] == pytest.approx(cohen_kappa_score(y, pred, weights="quadratic"))
    assert m["false_accept_rate"] == pytest.approx(2 / 4)  # full marks given to 2 of the 4 answers below full
    assert m["false_reject_rate"] == pytest.approx(1 / 3)


def test_binary_threshold_is_chosen_for_validation_accuracy():
    t = EducationTemplate()
    y = np.array([0, 0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.9])  # a model whose "correct" probabilities run low
    thr = t.choose_threshold(y, np.stack([1 - p1, p1], 1), t.options)
    assert 0.3 < thr <= 0.35
    assert t.metrics(y, np.stack([1 - p1, p1], 1), thr, t.options)["accuracy"] == 1.0


def test_breakdown_gives_accuracy_per_answer_type():
    options = EducationOptions(grading="binary")
    t = EducationTemplate().configure(options)
    df = t.synthesize(300, 1, options)
    perfect = np.eye(2)[df["label"].to_numpy()]
    flipped = perfect[:, ::-1]
    b = t.breakdown(df, {"perfect": perfect, "flipped": flipped}, {"perfect": 0.5, "flipped": 0.5})
    assert set(b["perfect"].values()) == {1.0} and set(b["flipped"].values()) == {0.0}
    assert set(b["perfect"]) == set(df["error_type"])
