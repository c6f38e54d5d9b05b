import pytest

from sdk.data import check_columns, label_token_ids, split
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


def test_missing_column_is_named(df):
    with pytest.raises(DistillError, match="amount"):
        check_columns(df.drop(columns=["amount"]), COLS, "d.csv")
    with pytest.raises(DistillError, match="d.csv is empty"):
        check_columns(df.iloc[:0], COLS, "d.csv")


def test_label_words_must_be_single_tokens(tiny_llama):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    ids = label_token_ids(tok, {0: " no", 1: " yes"}, "fraud")
    assert len(set(ids)) == 2
    with pytest.raises(DistillError, match="single tokens"):
        label_token_ids(tok, {0: " no", 1: " certainly fraudulent"}, "fraud")
