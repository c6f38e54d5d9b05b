"""The fraud prompt refuses values outside their column's range: hour 99 was rendered "99h" and scored as if it
meant something (a negative amount, a refund, is kept and written -$5). The prompt function is the one place every path goes
through (data stage, `distill check`, predict, serving, and the bundle's standalone copy), so each of them refuses
the row, by column and with the allowed range."""

from __future__ import annotations

import pytest

from tests.cli import run_cli
from verticals.fraud import FraudTemplate
from verticals.fraud.template import FraudOptions, transaction_prompt


@pytest.fixture(scope="module")
def row():
    t = FraudTemplate()
    return t.synthesize(1, 0, FraudOptions()).iloc[0].to_dict()


@pytest.mark.parametrize("column, value, allowed", [
    ("hour", 99, "a whole hour of the day, 0 to 23"), ("hour", 24, "a whole hour of the day, 0 to 23"),
    ("hour", -1, "a whole hour of the day, 0 to 23"), ("hour", 3.5, "a whole hour of the day, 0 to 23"),
    ("account_age_days", -3, "a whole number of days, 0 or more"),
    ("velocity_1h", -1, "a whole number of transactions, 0 or more"),
    ("velocity_1h", 2.7, "a whole number of transactions, 0 or more"),  # was read as 2
    ("amount", 1e300, "a sum between -$1e9 and $1e9"),  # a 300-digit amount went into the prompt
])
def test_a_value_out_of_range_is_named_with_its_range(row, column, value, allowed):
    message = f"column '{column}': {value!r} is out of range (allowed: {allowed})"
    with pytest.raises(ValueError) as err:
        transaction_prompt({**row, column: value})
    assert str(err.value) == message
    # the copy a bundle ships (standard library only) refuses it the same way
    scope: dict = {}
    exec(FraudTemplate().standalone_prompt(), scope)
    with pytest.raises(ValueError) as err:
        scope["prompt"]({**row, column: value})
    assert str(err.value) == message


@pytest.mark.parametrize("column, value, message", [
    ("amount", True, "column 'amount': True is not a number"),  # was $1
    ("channel", 7, "column 'channel': 7 is not a category name (text)"),  # was an AttributeError
    ("country", "  ", "column 'country': '  ' is not a category name (text)"),
    ("merchant", True, "column 'merchant': True is not text"),
])
def test_a_value_of_the_wrong_kind_is_named(row, column, value, message):
    with pytest.raises(ValueError) as err:
        transaction_prompt({**row, column: value})
    assert str(err.value) == message


def test_an_empty_merchant_descriptor_is_left_out_never_written_none_or_nan(row):
    full = transaction_prompt(row)
    assert f", {row['merchant']}." in full
    import pandas as pd

    for empty in (None, float("nan"), pd.NA, "", "  "):
        prompt = transaction_prompt({**row, "merchant": empty})
        assert prompt == full.replace(f", {row['merchant']}.", ".") and "None" not in prompt and "nan" not in prompt


def test_the_ends_of_each_range_and_every_synthesized_row_are_accepted(row):
    for column, value, shown in [("hour", 0, " 00h "), ("hour", 23, " 23h "), ("hour", "7", " 07h "),
                                 ("hour", 7.0, " 07h "), ("amount", 0, "$0 "), ("amount", -25.0, "-$25 "),
                                 ("amount", "-5", "-$5 "), ("amount", -0.4, "$0 "), ("amount", -0.0, "$0 "),
                                 ("amount", -0.6, "-$1 "), ("account_age_days", 0, "account 0d"),
                                 ("velocity_1h", 0, " 0 tx/h")]:
        assert shown in transaction_prompt({**row, column: value})
    t = FraudTemplate()
    for seed in range(3):
        df = t.synthesize(3000, seed, FraudOptions(fraud_rate=0.3))
        assert all(transaction_prompt(r).endswith("Fraud?") for r in df.to_dict("records"))


def test_a_users_table_with_an_hour_out_of_range_is_refused_before_the_run(tmp_path):
    t = FraudTemplate()
    df = t.synthesize(60, 0, FraudOptions(fraud_rate=0.2)).drop(columns=["pattern"])
    df.loc[4, "hour"] = 99
    df.to_csv(tmp_path / "tx.csv", index=False)
    out = run_cli("init", "fraud", tmp_path / "proj", "--data", tmp_path / "tx.csv")
    assert out.returncode == 2
    assert "hour=99" in out.stderr and "column 'hour': 99 is out of range (allowed: a whole hour" in out.stderr
    assert not (tmp_path / "proj").exists()
