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


def _init(tmp_path, data, *flags):
    """`distill init education` with --data, binary grading: what the user sees, and the project written."""
    from typer.testing import CliRunner

    from sdk.cli import app

    return CliRunner().invoke(app, ["init", "education", str(tmp_path / "p"), "--data", str(data),
                                    "--set", "template_options.grading=binary", *flags])


def _graded(n: int) -> list[dict]:
    return [{"question": f"What is {i} + 1?", "reference": str(i + 1), "answer": str(i + 1 if i % 2 else i),
             "label": "correct" if i % 2 else "incorrect"} for i in range(n)]


def test_gzipped_jsonl_records_are_read_as_jsonl(tmp_path):
    import gzip

    import pandas as pd

    recs = _graded(4)
    with gzip.open(tmp_path / "r.jsonl.gz", "wt", encoding="utf-8") as fh:  # was read as a CSV (suffix .gz)
        fh.write("\n".join(json.dumps(r) for r in recs) + "\n")
    assert EducationTemplate().load(tmp_path / "r.jsonl.gz")["label"].tolist() == [0, 1, 0, 1]
    pd.DataFrame(recs).to_csv(tmp_path / "r.csv.gz", index=False)  # a gzipped CSV stays a CSV
    assert EducationTemplate().load(tmp_path / "r.csv.gz")["answer"].tolist() == ["0", "2", "2", "4"]
    (tmp_path / "bad.jsonl.gz").write_bytes(gzip.compress(b'{"question": "q"}\n')[:20])  # cut short
    with pytest.raises(DistillError, match=r"bad.jsonl.gz: cannot read it as JSON Lines"):
        EducationTemplate().load(tmp_path / "bad.jsonl.gz")


def test_csv_records_are_numbered_as_a_table_s_rows(tmp_path):
    import pandas as pd

    df = pd.DataFrame(_graded(4))
    df.loc[2, "label"] = "maybe"
    df.to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(DistillError) as err:
        EducationTemplate().load(tmp_path / "r.csv")
    # the third record: row 3 as the fraud template's tables say, line 4 with the header (was "row 4")
    assert "row 3 (line 4): field 'label': 'maybe' is not a binary grade" in str(err.value)


def test_grades_under_another_field_name_are_refused_naming_label_column(tmp_path):
    import pandas as pd

    pd.DataFrame(_graded(60)).rename(columns={"label": "grade"}).to_csv(tmp_path / "g.csv", index=False)
    out = _init(tmp_path, tmp_path / "g.csv", "--label-column", "grade")
    assert out.exit_code == 2 and not (tmp_path / "p" / "project.yaml").exists()
    # one line, not one "field 'label' is missing" per record
    assert "no record has a 'label' field (fields: answer, grade, question, reference)" in out.output
    assert "data.label_column and --label-column apply to table templates" in out.output
    assert "is missing" not in out.output


def test_repeated_records_are_dropped_counted_and_conflicts_named(tmp_path):
    recs = _graded(40)
    repeats = [dict(recs[3]), dict(recs[5]), dict(recs[7], label="incorrect"), dict(recs[8], label="correct")]
    path = _write_jsonl(tmp_path / "r.jsonl", recs + repeats)
    with pytest.warns(UserWarning) as caught:
        df = EducationTemplate().load(path)
    assert len(df) == 40 and df.attrs == {"records_read": 44, "repeats_dropped": 4, "label_conflicts": 2}
    assert df["label"].iloc[7] == 1  # the first record's label stands
    msg = str(caught[0].message)
    assert "2 of 4 repeated records (same question, reference and answer) have another label" in msg
    assert "line 43 (label 'incorrect') repeats line 8 (label 'correct'); line 44 (label 'correct') repeats line 9" \
        in msg
    # init sizes the splits from the 40 records left and says what was dropped (it counted 44)
    with pytest.warns(UserWarning, match="2 of 4 repeated records"):
        out = _init(tmp_path, path)
    assert out.exit_code == 0, out.output
    assert f"data: {path}, 44 rows (4 repeated records dropped, 2 of them with another label than the one kept; " \
           "train 20, val 4, test 16)" in out.output


def test_a_stray_quote_in_csv_records_is_named_and_multiline_answers_are_read(tmp_path):
    import pandas as pd

    df = pd.DataFrame(_graded(8))
    df.loc[1, "answer"] = "1 + 1 = 2,\nso 2"  # work over two lines, quoted by pandas: a value, not rows
    df.to_csv(tmp_path / "ok.csv", index=False)
    assert EducationTemplate().load(tmp_path / "ok.csv")["answer"].iloc[1] == "1 + 1 = 2,\nso 2"
    lines = (tmp_path / "ok.csv").read_text().splitlines()
    lines[4] = lines[4].replace(",3,", ',"3,', 1)  # record 3 (line 5 after the two-line answer): a stray quote
    lines[8] = lines[8].replace(",7,", ',7",', 1)  # ...closed four lines on
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DistillError, match=r"bad.csv: row 3 \(line 5\), column 'reference': a quoted value runs over "
                                           r"lines 5 to 9 and holds 3 line\(s\) that look like whole rows"):
        EducationTemplate().load(tmp_path / "bad.csv")


def test_table_settings_are_refused_even_when_the_records_also_fail_to_load(tmp_path):
    from typer.testing import CliRunner

    from sdk.cli import app

    # binary words under the default rubric grading: the loader fails, and the --time-column given for a table
    # template was hidden behind that error
    path = _write_jsonl(tmp_path / "r.jsonl", _graded(30))
    out = CliRunner().invoke(app, ["init", "education", str(tmp_path / "p"), "--data", str(path),
                                   "--set", "template_options.grading=rubric", "--time-column", "when"])
    assert out.exit_code == 2 and not (tmp_path / "p" / "project.yaml").exists()
    assert "data.time_column: template 'education' reads its own file format" in out.output
    assert "is not a rubric score" in out.output


def test_csv_line_numbers_count_the_lines_of_a_multiline_answer(tmp_path):
    import pandas as pd

    df = pd.DataFrame(_graded(4))
    df.loc[0, "answer"] = "First 0 + 1 = 1,\nso the answer\nis 0"  # a student's work over three lines
    df.loc[2, "label"] = "maybe"
    df.to_csv(tmp_path / "r.csv", index=False)
    with pytest.raises(DistillError) as err:
        EducationTemplate().configure(EducationOptions(grading="binary")).load(tmp_path / "r.csv")
    # header line 1, row 1 on lines 2-4, row 2 on line 5: row 3 starts on line 6 (was "line 4")
    assert "row 3 (line 6): field 'label': 'maybe' is not a binary grade" in str(err.value)
    assert (tmp_path / "r.csv").read_text().splitlines()[5].endswith(",maybe")
