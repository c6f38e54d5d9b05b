"""A user's own table: typed without per-column code, labels mapped to 0/1, every row and column at fault
named, exact duplicates and cross-split leakage removed, a time-ordered split, compact prompts, baselines
over the prompt's own columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from sdk.errors import DistillError
from sdk.tables import (Feature, TableOptions, TableProblems, classic_models, coerce_rows, compact_number,
                        format_value, load_table, prepare_table, remove_leakage, render_features, split_table)
from tests.tables import SETTINGS, mixed_table, write

OPTS = TableOptions(**SETTINGS)


def load(df: pd.DataFrame, tmp_path, opts: TableOptions = OPTS, name: str = "tx.csv"):
    return load_table(write(df, tmp_path / name), opts)


@pytest.mark.parametrize("name", ["tx.csv", "tx.parquet"])
def test_a_mixed_table_is_typed_and_labelled(tmp_path, name):
    df = mixed_table()
    table = load(df, tmp_path, name=name)
    kinds = {f.name: f.kind for f in table.spec.features}
    assert kinds == {"when": "timestamp", "amount": "number", "merchant": "category", "card_present": "bool",
                     "note": "text", "score": "number"}
    assert table.spec.names == ["when", "amount", "merchant", "card_present", "note", "score"]  # file order
    assert table.spec.ignored == {"tx_id": "data.id_column", "currency": "constant ('EUR' in every row)"}
    assert table.spec.labels == {"no": 0, "yes": 1} and table.spec.mode == "columns"
    assert (table.df["label"].to_numpy() == (df["is_fraud"] == "yes").to_numpy()).all()
    assert "is_fraud" not in table.df and table.df["amount"].isna().sum() == 2  # missing values stay missing
    assert pd.api.types.is_datetime64_any_dtype(table.df["when"]) and table.duplicates_removed == 0


def test_a_column_with_one_value_in_some_rows_and_none_in_the_others_is_kept(tmp_path):
    # 'customer wrote' on a quarter of the rows: whether a note exists tells rows apart; it was dropped as constant
    df = mixed_table()
    df["remark"] = ["customer wrote" if i % 4 == 0 else None for i in range(len(df))]
    df["blank"] = None
    table = load(df, tmp_path)
    assert "remark" in table.spec.names and table.spec.ignored["blank"] == "empty"
    assert table.spec.ignored["currency"] == "constant ('EUR' in every row)"


@pytest.mark.parametrize("labels, positive, expected", [
    ([True, False, True], None, [1, 0, 1]),
    ([1, 0, 0], None, [1, 0, 0]),
    (["Yes", "no ", "NO"], None, [1, 0, 0]),
    (["fraud", "legit", "fraud"], "fraud", [1, 0, 1]),
    ([2, 7, 7], 2, [1, 0, 0]),
])
def test_label_values_map_to_0_1(labels, positive, expected):
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": labels})
    table = prepare_table(df, TableOptions(label_column="y", positive_label=positive), source="t")
    assert table.df["label"].tolist() == expected


def _bad(df: pd.DataFrame, tmp_path, opts: TableOptions = OPTS) -> str:
    with pytest.raises(TableProblems) as err:
        load(df, tmp_path, opts)
    return str(err.value)


def test_malformed_tables_name_the_file_row_and_column(tmp_path):
    csv = tmp_path / "tx.csv"
    df = mixed_table()
    bad = df.copy()
    bad.loc[7, "is_fraud"] = "maybe"
    bad.loc[9, "is_fraud"] = None
    msg = _bad(bad, tmp_path)
    assert f"{csv}: row 8 (line 9), column 'is_fraud': 'maybe' is not a label" in msg
    assert f"{csv}: row 10 (line 11), column 'is_fraud': missing label" in msg
    assert "set data.positive_label" in msg
    bad = df.copy()
    bad.loc[11, "tx_id"] = "tx00003"
    assert f"{csv}: rows 4 (line 5), 12 (line 13), column 'tx_id': duplicate ids ('tx00003' appears 2 times" \
        in _bad(bad, tmp_path)
    bad = df.copy()
    bad.loc[12, "when"] = "yesterday"
    assert f"{csv}: row 13 (line 14), column 'when': 'yesterday' is not a date or time" in _bad(bad, tmp_path)
    bad = df.copy().astype({"score": object})
    bad.loc[20, "score"] = "12,5"
    assert f"{csv}: row 21 (line 22), column 'score': '12,5' is not a number" in _bad(bad, tmp_path)
    assert "lacks column 'is_frau' (data.label_column)" in _bad(df, tmp_path, TableOptions(label_column="is_frau"))
    assert "did you mean 'is_fraud'?" in _bad(df, tmp_path, TableOptions(label_column="is_frau"))
    msg = _bad(df.assign(is_fraud="no"), tmp_path)
    assert "column 'is_fraud' holds a single class: every row is label 0 ('no')" in msg
    msg = _bad(df.assign(is_fraud=np.where(df.index % 3 == 0, "fraud", np.where(df.index % 3 == 1, "ok", "?"))),
               tmp_path, TableOptions(**{**SETTINGS, "positive_label": "fraud"}))
    assert "column 'is_fraud': '?' is neither data.positive_label 'fraud' nor 'ok'" in msg


def test_every_problem_of_a_table_is_listed_at_once(tmp_path):
    df = mixed_table()
    df.loc[1, "is_fraud"] = "maybe"
    df.loc[2, "when"] = "soon"
    df.loc[3, "tx_id"] = "tx00004"
    assert len(_table_problems(df, tmp_path)) == 3


def _table_problems(df, tmp_path):
    with pytest.raises(TableProblems) as err:
        load(df, tmp_path)
    return err.value.problems


def test_an_empty_table_is_named(tmp_path):
    (tmp_path / "empty.csv").write_text("tx_id,when,is_fraud\n")
    with pytest.raises(Exception, match="empty.csv is empty"):
        load_table(tmp_path / "empty.csv", OPTS)
    (tmp_path / "blank.csv").write_text("")
    with pytest.raises(Exception, match="blank.csv is empty"):
        load_table(tmp_path / "blank.csv", OPTS)


def test_exact_duplicates_are_removed(tmp_path):
    df = mixed_table()
    twice = pd.concat([df, df.iloc[[10, 11, 12]]], ignore_index=True)
    table = load(twice, tmp_path, TableOptions(label_column="is_fraud", time_column="when"))
    assert table.rows_read == 403 and table.duplicates_removed == 3 and len(table.df) == 400


def test_time_split_trains_on_the_past_and_tests_on_the_future(tmp_path):
    df = mixed_table().sample(frac=1.0, random_state=0)  # file order is not time order
    table = load(df, tmp_path)
    parts = split_table(table.df, n_train=100, n_val=50, n_test=80, seed=0, source="tx.csv", time_column="when")
    assert [len(parts[s]) for s in ("train", "val", "test")] == [100, 50, 80]
    assert parts["train"]["when"].max() <= parts["val"]["when"].min()
    assert parts["val"]["when"].max() <= parts["test"]["when"].min()
    assert parts["test"]["when"].max() == table.df["when"].max()  # the latest rows are the test
    # train is the 100 rows right before validation
    assert parts["train"]["when"].min() == table.df["when"].sort_values().iloc[400 - 80 - 50 - 100]


def test_leakage_across_splits_is_removed():
    train = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"], "label": [0, 1, 0]})
    val = pd.DataFrame({"a": [1, 5], "b": ["x", "y"], "label": [1, 0]})
    test = pd.DataFrame({"a": [5, 3, 9], "b": ["y", "z", "q"], "label": [0, 1, 1]})
    parts, removed = remove_leakage({"train": train, "val": val, "test": test}, ["a", "b"])
    assert removed == {"val": 1, "test": 2}
    assert parts["val"]["a"].tolist() == [5] and parts["test"]["a"].tolist() == [9]


def test_columns_keep_list_drop_list_and_cap():
    df = pd.DataFrame({f"c{i}": np.arange(6) * (i + 1) for i in range(6)}).assign(label=[0, 1] * 3)
    assert prepare_table(df, TableOptions(columns=("c3", "c1")), source="t").spec.names == ["c3", "c1"]
    spec = prepare_table(df, TableOptions(drop_columns=("c0",)), source="t").spec
    assert spec.names == ["c1", "c2", "c3", "c4", "c5"] and spec.ignored == {"c0": "data.drop_columns"}
    spec = prepare_table(df, TableOptions(max_prompt_columns=4), source="t").spec
    assert spec.names == ["c0", "c1", "c2", "c3"] and "over data.max_prompt_columns (4)" in spec.ignored["c5"]
    with pytest.raises(TableProblems, match="data.columns: 'label' is data.label_column"):
        prepare_table(df, TableOptions(columns=("c1", "label")), source="t")


def test_hidden_columns_are_never_inputs():
    df = pd.DataFrame({"a": [1, 2, 3, 4], "pattern": ["none", "skim", "none", "ato"], "label": [0, 1, 0, 1]})
    spec = prepare_table(df, TableOptions(), source="t", hidden_columns=("pattern",)).spec
    assert spec.names == ["a"] and "never a model input" in spec.ignored["pattern"]
    with pytest.raises(TableProblems, match="'pattern' is a hidden column"):
        prepare_table(df, TableOptions(columns=("a", "pattern")), source="t", hidden_columns=("pattern",))


@pytest.mark.parametrize("x, shown", [(24900, "24900"), (1234.5, "1234.5"), (38.58894, "38.589"), (-89.99038, "-89.99"),
                                      (0.000123, "1.2e-4"), (35_000_000.5, "3.5e7"), (123456.7, "123457"),
                                      (0.5, "0.5"), (2.0, "2"), (True, "yes")])
def test_numbers_are_compact(x, shown):
    assert compact_number(x) == shown


def test_values_render_compactly_and_missing_ones_as_na():
    assert format_value(pd.Timestamp("2024-03-05 14:37:12"), "timestamp") == "2024-03-05 14h"
    assert format_value(pd.Timestamp("2024-03-05"), "date") == "2024-03-05"
    assert format_value(False, "bool") == "no" and format_value(pd.NA, "bool") == "n/a"
    assert format_value(float("nan"), "number") == "n/a" and format_value(None, "category") == "n/a"
    assert format_value("x" * 500, "text").endswith("…") and len(format_value("x" * 500, "text")) == 160
    row = {"amount": 1234.5, "night": True, "when": pd.Timestamp("2024-03-05 02:10"), "shop": "grocery  store"}
    feats = [Feature("amount", "number"), Feature("night", "bool"), Feature("when", "timestamp"),
             Feature("shop", "category")]
    assert render_features(row, feats) == "amount: 1234.5; night: yes; when: 2024-03-05 02h; shop: grocery store"


def test_new_rows_are_read_as_the_training_table_was(tmp_path):
    table = load(mixed_table(), tmp_path)
    new = pd.DataFrame({"when": ["2024-05-01T03:00:00"], "amount": ["12.5"], "merchant": ["fuel"],
                        "card_present": ["no"], "note": ["hello"], "score": [0.1]})
    rows = coerce_rows(new, table.spec, "new.csv")
    assert rows["amount"].iloc[0] == 12.5 and bool(rows["card_present"].iloc[0]) is False
    assert rows["when"].iloc[0] == pd.Timestamp("2024-05-01 03:00")
    with pytest.raises(TableProblems, match=r"new.csv: row 1, column 'amount': 'lots' is not a number") as err:
        coerce_rows(new.assign(amount="lots"), table.spec, "new.csv")
    assert err.value.field == "amount"  # the field a server names as the error's `param`
    with pytest.raises(Exception, match=r"lacks column\(s\) \['note'\]") as err:
        coerce_rows(new.drop(columns=["note"]), table.spec, "new.csv")
    assert err.value.field == "note"


def test_classic_models_learn_from_every_column_kind(tmp_path):
    table = load(mixed_table(1200, seed=1), tmp_path)
    parts = split_table(table.df, 700, 100, 400, seed=0, source="t", time_column="when")
    models = classic_models(table.spec.features, seed=0)
    assert list(models) == ["baseline-gradient-boosting", "baseline-logistic-regression"]
    cols = table.spec.names
    for name, model in models.items():
        model.fit(parts["train"][cols], parts["train"]["label"])
        probs = model.predict_proba(parts["test"][cols])
        assert probs.shape == (400, 2)
        assert roc_auc_score(parts["test"]["label"], probs[:, 1]) > 0.8, name
        steps = str(model)
        assert "TfidfVectorizer" in steps and "OneHotEncoder" in steps  # the note as text, merchant one-hot


def test_a_header_naming_a_column_twice_is_refused(tmp_path):
    from sdk.errors import DistillError
    from sdk.tables import read_table_file

    path = tmp_path / "t.csv"
    path.write_text("amount,hour,amount,label\n1,2,3,0\n4,5,6,1\n")
    with pytest.raises(DistillError, match=r"t.csv: the header names column\(s\) \['amount'\] more than once"):
        read_table_file(path)
    path.write_text("amount,hour,label\n1,2,0\n")
    assert list(read_table_file(path).columns) == ["amount", "hour", "label"]
    path.write_text("amount,hour,label,,\n1,2,0,,\n")  # a spreadsheet's trailing commas: unnamed, not twice
    assert list(read_table_file(path).columns)[:3] == ["amount", "hour", "label"]


def _stray_quote_csv(path, n: int = 12):
    """label,amount,note rows; a stray " opens row 3's note and the next " (row 9's note) closes it."""
    lines = ["amount,note,label"] + [f"{i},note {i},{i % 2}" for i in range(n)]
    lines[3] = '2,"forgot to close,0'
    lines[9] = '8,note" 8,0'
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_stray_quote_that_swallows_rows_is_named_with_its_row_and_line(tmp_path):
    from sdk.errors import DistillError
    from sdk.tables import read_table_file

    path = _stray_quote_csv(tmp_path / "t.csv")
    # pandas alone reads 6 rows of 12 without a word: rows 3 to 9 became one
    assert len(pd.read_csv(path)) == 6
    with pytest.raises(DistillError) as err:
        read_table_file(path)
    msg = str(err.value)
    assert f"{path}: row 3 (line 4), column 'note': a quoted value runs over lines 4 to 10" in msg
    assert "holds 5 line(s) that look like whole rows (e.g. '3,note 3,1')" in msg and 'stray "' in msg


def test_quoted_values_over_several_lines_are_still_read(tmp_path):
    from sdk.tables import read_csv, read_table_file

    # a student's work over several lines, with commas: a value that holds line breaks, not rows
    df = pd.DataFrame({"question": ["2+2, then x3?", "1+1?", "3-1?"],
                       "answer": ["2+2 = 4,\nthen 4 x 3 = 12,\nso 12", "2", "first 3,\nminus 1, gives 2"],
                       "label": [1, 1, 1]})
    path = tmp_path / "work.csv"
    df.to_csv(path, index=False)
    assert read_table_file(path)["answer"].tolist() == df["answer"].tolist()
    assert read_csv(path, dtype=str, keep_default_na=False)["answer"].iloc[0] == "2+2 = 4,\nthen 4 x 3 = 12,\nso 12"


def test_row_errors_name_the_line_where_the_row_starts_after_multiline_values(tmp_path):
    from sdk.tables import load_table

    df = mixed_table()
    df["note"] = ""
    df.loc[1, "note"] = "called the bank,\nthen the shop,\nthen us"  # a quoted note over three lines
    df.loc[4, "when"] = "later"
    out = write(df, tmp_path / "tx.csv")
    with pytest.raises(TableProblems) as err:
        load_table(out, TableOptions(**SETTINGS))
    # header line 1, rows 1-2 on lines 2-5, rows 3-4 on 6-7: row 5 starts on line 8 (was "line 6")
    assert "row 5 (line 8), column 'when': 'later' is not a date or time" in str(err.value)
    assert "later" in out.read_text().splitlines()[7]


def test_a_multiline_value_with_commas_is_not_taken_for_swallowed_rows(tmp_path):
    from sdk.tables import read_csv

    # a middle line of the answer splits into as many fields as the header has, but its last field is no label
    path = tmp_path / "r.csv"
    rows = [["What fruit?", "apples", "My answer:\nbananas, kiwis, grapes\nthat is all", "incorrect"]] + [
        [f"q{i}", "4", "4", "correct" if i % 2 else "incorrect"] for i in range(8)]
    pd.DataFrame(rows, columns=["question", "reference", "answer", "label"]).to_csv(path, index=False)
    df = read_csv(path, dtype=str, keep_default_na=False)
    assert len(df) == 9 and df.attrs["row_breaks"] == ((0, 2),)
    # the same shape with a label where the label belongs: a row swallowed by a stray quote
    text = path.read_text().replace("bananas, kiwis, grapes", "q9,4,4,correct")
    path.write_text(text)
    with pytest.raises(DistillError, match=r"row 1 \(line 2\), column 'answer': a quoted value runs over lines 2 to 4"):
        read_csv(path, dtype=str, keep_default_na=False)
