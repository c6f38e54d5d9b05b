import pandas as pd
import pytest

from sdk.data import check_columns, check_labels, label_token_ids, read_table, split
from sdk.errors import DistillError
from verticals.fraud import FraudTemplate

COLS = FraudTemplate.columns


@pytest.fixture(scope="module")
def df():
    from verticals.fraud.template import FraudOptions

    return FraudTemplate().synthesize(1000, seed=3, options=FraudOptions(fraud_rate=0.1))


def test_split_sizes_and_stratification(df):
    parts = split(df, n_train=500, n_val=200, n_test=250, seed=0, source="x", stratify="label")
    assert (len(parts["train"]), len(parts["val"]), len(parts["test"])) == (500, 200, 250)
    rate = df["label"].mean()
    for p in parts.values():
        assert abs(p["label"].mean() - rate) < 0.03


def test_split_needs_enough_rows(df):
    with pytest.raises(DistillError, match="n_val"):
        split(df.head(50), n_train=10, n_val=40, n_test=40, seed=0, source="x")


def test_split_with_a_single_positive_is_a_clear_error(df):
    one = df[df.label == 0].head(60)
    one = one.assign(label=[1] + [0] * 59)
    with pytest.raises(DistillError, match="stratified split"):
        split(one, n_train=20, n_val=10, n_test=10, seed=0, source="one.csv", stratify="label")


def test_empty_csv_is_named(tmp_path):
    p = tmp_path / "tx.csv"
    pd.DataFrame(columns=[*COLS, "label"]).to_csv(p, index=False)
    with pytest.raises(DistillError, match=r"tx.csv is empty"):
        read_table(p, COLS)


def test_missing_column_and_bad_labels(df, tmp_path):
    with pytest.raises(DistillError, match="amount"):
        check_columns(df.drop(columns=["amount"]), COLS, "d.csv")
    with pytest.raises(DistillError, match="0/1"):
        check_labels(df.assign(label=df["label"] * 2), 2, "d.csv")
    with pytest.raises(DistillError, match="0..2"):
        check_labels(df.assign(label=df["label"] * 3), 3, "d.csv")
    with pytest.raises(DistillError, match="needs every label"):
        check_labels(df.assign(label=0), 2, "d.csv")
    with pytest.raises(DistillError, match="does not exist"):
        read_table(tmp_path / "nope.csv", COLS)


def test_label_words_must_be_single_tokens(tiny_llama):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    ids = label_token_ids(tok, {0: " no", 1: " yes"}, "fraud")
    assert len(set(ids)) == 2
    with pytest.raises(DistillError, match="single tokens"):
        label_token_ids(tok, {0: " no", 1: " certainly fraudulent"}, "fraud")
