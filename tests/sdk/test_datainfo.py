"""`distill data`: split sizes, label balance, duplicates, leakage and each split's time range, in seconds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml
from typer.testing import CliRunner

from sdk.cli import app
from tests.tables import SETTINGS, mixed_table, write

ROOT = Path(__file__).resolve().parents[2]


def project(tmp_path: Path, df: pd.DataFrame | None, teacher: Path | None = None, **data) -> Path:
    cfg = yaml.safe_load((ROOT / "verticals" / "fraud" / "tiny.yaml").read_text())
    if teacher is not None:
        cfg["teacher"]["model"] = str(teacher)
    if df is not None:
        cfg["data"].update(path=str(write(df, tmp_path / "tx.csv")), **SETTINGS, **data)
    p = tmp_path / "project.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def data(p: Path):
    return CliRunner().invoke(app, ["data", str(p)])


def test_a_time_ordered_table_shows_each_splits_range_balance_and_removals(tmp_path, tiny_llama):
    from transformers import AutoTokenizer

    df = mixed_table()
    df = pd.concat([df, df.iloc[[0, 1]]], ignore_index=True).assign(tx_id=[f"id{i}" for i in range(402)])
    out = data(project(tmp_path, df, teacher=tiny_llama))
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert "(402 rows read, 2 exact duplicates removed)" in lines[0]
    assert "label: column 'is_fraud' ('no' -> 0, 'yes' -> 1)" in out.output
    assert "split: time-ordered by 'when'" in out.output
    ordered = df.drop_duplicates(subset=[c for c in df.columns if c != "tx_id"]).sort_values("when")
    test = ordered.iloc[-24:]
    row = next(x for x in lines if x.strip().startswith("test"))
    assert row.split()[1:4] == ["24", str((test["is_fraud"] == "yes").sum()), f"{(test['is_fraud'] == 'yes').mean():.1%}"]
    assert test["when"].iloc[0].replace("T", " ") in row and test["when"].iloc[-1].replace("T", " ") in row
    assert "leakage: 0 validation and 0 test rows" in out.output
    assert "input columns (6, rendered from your columns): when (timestamp), amount (number)" in out.output
    assert "not an input: tx_id: data.id_column" in out.output
    assert "example prompt" in out.output and out.output.rstrip().endswith("Fraud?")
    # the prompt's length in the teacher's tokens (the cost of every step and decision), on the training split
    from sdk.tables import TableOptions, load_table, split_table
    from verticals.fraud import FraudTemplate

    table = load_table(tmp_path / "tx.csv", TableOptions(**SETTINGS))
    train = split_table(table.df, 48, 24, 24, 0, "t", "when")["train"]
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    lengths = [len(tok(FraudTemplate().table_prompt(r, table.spec.features))["input_ids"])
               for r in train.to_dict("records")]
    assert f"prompt tokens (teacher's tokenizer, training split): mean {sum(lengths) / 48:.0f}, max {max(lengths)}" \
        in out.output


def test_leakage_is_counted(tmp_path):
    df = mixed_table()
    late = df.iloc[[310, 311, 312]].assign(when=["2024-12-30T10:00:00", "2024-12-30T11:00:00", "2024-12-30T12:00:00"],
                                     tx_id=["a", "b", "c"], is_fraud=["yes", "yes", "no"])
    # the same inputs as three training rows (the 48 before validation), later: without the time they collide
    out = data(project(tmp_path, pd.concat([df, late], ignore_index=True), drop_columns=["when"]))
    assert out.exit_code == 0, out.output
    assert "leakage: 0 validation and 3 test rows identical in every input column" in out.output
    test = next(x for x in out.output.splitlines() if x.strip().startswith("test"))
    assert test.split()[1] == "21"  # 24 minus the 3 leaked rows


def test_synthesized_data_is_described_too(tmp_path):
    out = data(project(tmp_path, None))
    assert out.exit_code == 0, out.output
    assert "data: synthesized by template 'fraud'" in out.output and "split: random, stratified" in out.output
    assert "input columns (10, the template's own prompt)" in out.output
    assert "not an input: pattern: describes the answer" in out.output


def test_a_malformed_table_exits_2_naming_the_row_and_column(tmp_path):
    df = mixed_table()
    df.loc[4, "when"] = "later"
    out = data(project(tmp_path, df))
    assert out.exit_code == 2 and "row 5 (line 6), column 'when': 'later' is not a date or time" in out.output


def _template_project(tmp_path: Path, template: str, **options) -> Path:
    cfg = yaml.safe_load((ROOT / "verticals" / template / "tiny.yaml").read_text())
    cfg.setdefault("template_options", {}).update(options)
    p = tmp_path / "project.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_the_split_line_names_the_templates_own_stratification(tmp_path):
    # code said "stratified on the label" and showed a positives column for problems that have no label
    out = data(_template_project(tmp_path, "code"))
    assert out.exit_code == 0, out.output
    assert "split: random, stratified on 'difficulty'" in out.output
    header = next(x for x in out.output.splitlines() if x.strip().startswith("split "))
    assert header.split() == ["split", "rows"]


def test_rubric_grades_are_counted_one_column_each(tmp_path):
    # a 0..K rubric showed "positives" (score > 0) and their share: counts per grade say what the data holds
    from verticals.education.template import RUBRIC_MAX

    out = data(_template_project(tmp_path, "education", grading="rubric"))
    assert out.exit_code == 0, out.output
    assert "split: random, stratified on the label" in out.output
    lines = out.output.splitlines()
    header = next(x for x in lines if x.strip().startswith("split "))
    assert "positives" not in header and len(header.split()) == 2 + RUBRIC_MAX + 1  # one column per grade
    test = next(x for x in lines if x.strip().startswith("test"))
    n = int(test.split()[1].replace(",", ""))
    assert sum(int(c.replace(",", "")) for c in test.split()[2::2]) == n


def test_table_settings_for_a_records_template_are_refused(tmp_path):
    # `distill data` read a code file and silently ignored data.label_column (init and check refuse it)
    from verticals.code.problems import humaneval_path

    cfg = yaml.safe_load((ROOT / "verticals" / "code" / "tiny.yaml").read_text())
    cfg["data"].update(path=str(humaneval_path()), label_column="passed")
    p = tmp_path / "project.yaml"
    p.write_text(yaml.safe_dump(cfg))
    out = data(p)
    assert out.exit_code == 2, out.output
    assert "data.label_column: template 'code' reads its own file format" in out.output
