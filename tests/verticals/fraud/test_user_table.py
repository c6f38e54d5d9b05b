"""The fraud template over a user's own table: prompts rendered from its columns (the synthetic demo's
hand-written prompt unchanged), baselines on the prompt's own columns, and `distill init --data` +
`distill run` end to end on tiny models with the same report contract."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from sdk.tables import Feature, TableOptions, prepare_table, prompt_function, template_spec
from tests.tables import SETTINGS, mixed_table, write
from verticals.fraud import FraudTemplate
from verticals.fraud.template import FraudOptions


@pytest.fixture(scope="module")
def t():
    return FraudTemplate()


def test_the_synthetic_prompt_is_the_hand_written_one(t):
    row = {"amount": 120.4, "merchant_category": "grocery", "channel": "in_store", "hour": 14, "country": "US",
           "account_age_days": 300, "device_change": False, "velocity_1h": 0, "merchant": "KROGER #12 TAMPA FL",
           "note": None, "pattern": "none", "label": 0}
    df = t.synthesize(50, 0, FraudOptions())
    prompt = prompt_function(t, template_spec(t, df))
    assert prompt == t.prompt  # the demo's prompts (and figures) do not change
    assert prompt(row) == "$120 grocery store 14h US, account 300d, same device, 0 tx/h, KROGER #12 TAMPA FL. Fraud?"
    assert prompt({**row, "note": "rent for june"}).endswith('KROGER #12 TAMPA FL. Note: "rent for june". Fraud?')
    assert prompt({**row, "note": float("nan")}) == prompt(row)  # an empty note read back from a CSV


def test_a_synthetic_table_written_to_csv_keeps_the_template_prompt_and_hides_the_pattern(t, tmp_path):
    df = t.synthesize(200, 0, FraudOptions(fraud_rate=0.2))
    table = prepare_table(df, TableOptions(), source="s.csv", template_columns=t.columns,
                          hidden_columns=t.hidden_columns)
    assert table.spec.mode == "template" and table.spec.names == list(t.columns)
    # a column list switches to prompts rendered from the columns; `pattern` stays out
    table = prepare_table(df, TableOptions(drop_columns=("hour",)), source="s.csv", template_columns=t.columns,
                          hidden_columns=t.hidden_columns)
    assert table.spec.mode == "columns" and "pattern" not in table.spec.names and "hour" not in table.spec.names
    p = prompt_function(t, table.spec)(table.df.iloc[0].to_dict())
    assert "pattern" not in p and p.startswith("amount: ") and p.endswith(". Fraud?")


def test_table_prompt_is_name_value_pairs_then_the_question(t):
    features = [Feature("when", "timestamp"), Feature("amount", "number"), Feature("card_present", "bool"),
                Feature("note", "text")]
    row = {"when": pd.Timestamp("2024-02-03 04:59"), "amount": 0.000123, "card_present": False, "note": None,
           "label": 1}
    assert t.table_prompt(row, features) == "when: 2024-02-03 04h; amount: 1.2e-4; card_present: no; note: n/a. Fraud?"


def test_baselines_use_exactly_the_prompts_columns(t, tmp_path):
    table = prepare_table(mixed_table(600, seed=2).assign(pattern="none"), TableOptions(**SETTINGS), source="t",
                          hidden_columns=t.hidden_columns)
    models = t.baselines(table.df, 0, FraudOptions(), table.spec.features)
    assert set(models) == {"baseline-gradient-boosting", "baseline-logistic-regression"}
    for model in models.values():
        assert list(model.feature_names_in_) == table.spec.names  # no label, id, time-free copy or pattern
        assert model.predict_proba(table.df[table.spec.names].iloc[:3]).shape == (3, 2)


# ---- end to end: distill init --data, distill run (tiny models), the same report contract, scoring

@pytest.fixture(scope="module")
def table_run(tmp_path_factory, tiny_llama):
    from sdk.cli import app

    root = tmp_path_factory.mktemp("table-run")
    csv = write(mixed_table(300), root / "transactions.csv")
    runner = CliRunner()
    out = runner.invoke(app, ["init", "fraud", str(root / "proj"), "--preset", "tiny", "--data", str(csv),
                              "--label-column", "is_fraud", "--time-column", "when", "--id-column", "tx_id"])
    assert out.exit_code == 0, out.output
    p = root / "proj" / "project.yaml"
    cfg = yaml.safe_load(p.read_text())
    cfg["teacher"]["model"] = str(tiny_llama)
    cfg["export"] = {"formats": {"gguf": {"quants": ["Q8_0"]}}}
    cfg["distill"]["compare_fine_tuning"] = False  # the twin has its own test (tests/test_integration.py)
    p.write_text(yaml.safe_dump(cfg))
    out = runner.invoke(app, ["run", str(p), "--out", str(root / "run")])
    assert out.exit_code == 0, out.output
    return root / "run", csv


def test_a_user_table_runs_end_to_end_with_the_same_report_contract(table_run):
    run, _ = table_run
    r = json.loads((run / "report.json").read_text())
    arts = {a["name"]: a for a in r["artifacts"]}
    assert set(arts) == {"teacher-torch", "student-torch", "student-gguf-Q8_0", "baseline-gradient-boosting",
                         "baseline-logistic-regression"}
    for a in arts.values():
        assert 0 <= a["metrics"]["recall"] <= 1 and a["decisions_per_s"] > 0
        assert a["metrics"]["threshold"] is not None  # every artifact at the same operating point
    assert r["headline_metric"] == "recall" and r["data"]["n_test"] == 24
    table = json.loads((run / "data" / "table.json").read_text())
    assert [f["name"] for f in table["spec"]["features"]] == ["when", "amount", "merchant", "card_present", "note",
                                                              "score"]
    assert table["splits"]["test"]["time_range"][1] > table["splits"]["val"]["time_range"][1]
    note = json.loads((run / "manifest.json").read_text())["stages"]["data"]["note"]
    assert "test 24" in note and "[2024-" in note and "exact duplicates" in note
    train = pd.read_parquet(run / "data" / "train.parquet")
    test = pd.read_parquet(run / "data" / "test.parquet")
    assert train["when"].max() < test["when"].min()  # trained on the past, tested on the future


def test_scoring_the_users_rows_reproduces_the_evaluation(table_run):
    from sdk.project import Project

    run, csv = table_run
    test = pd.read_parquet(run / "data" / "test.parquet")
    raw = pd.read_csv(csv).set_index("tx_id").loc[test["tx_id"]].reset_index()  # the rows as the user has them
    scored = Project.load(run).predict(raw.drop(columns=["is_fraud"]), artifact="student-gguf-Q8_0")
    with np.load(run / "evaluation" / "student-gguf-Q8_0.details.npz") as z:
        expected = z["probs_test"][:, 1]
    assert np.allclose(scored["score"].to_numpy(), expected, atol=1e-5)
