"""The CLI contract: init/run/templates, and exit code 2 with a named field or file for bad input."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.cli import run_cli
from verticals.fraud import FraudTemplate


def distill(*args) -> subprocess.CompletedProcess:
    return run_cli(*args)  # in this process; `--version` as installed uses distill_process, Ctrl-C its own


def distill_process(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sdk.cli", *map(str, args)], capture_output=True, text=True)


def _project(tmp_path: Path, **changes) -> Path:
    assert distill("init", "fraud", tmp_path, "--preset", "tiny").returncode == 0
    p = tmp_path / "project.yaml"
    cfg = yaml.safe_load(p.read_text())
    for dotted, value in changes.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = value
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_templates_lists_fraud():
    out = distill("templates")
    assert out.returncode == 0 and "fraud" in out.stdout


def test_init_writes_a_valid_project_and_refuses_to_overwrite(tmp_path):
    p = _project(tmp_path)
    assert yaml.safe_load(p.read_text())["template"] == "fraud"
    again = distill("init", "fraud", tmp_path)
    assert again.returncode == 2 and "exists" in again.stderr


def test_init_keeps_the_presets_comments_and_sets_the_data_path(tmp_path):
    from verticals.fraud import FraudTemplate

    preset = FraudTemplate().preset_path("default").read_text()
    csv = tmp_path / "tx.csv"
    FraudTemplate().synthesize(4000, 0, FraudTemplate.Options()).to_csv(csv, index=False)
    assert distill("init", "fraud", tmp_path / "p", "--data", csv).returncode == 0
    text = (tmp_path / "p" / "project.yaml").read_text()
    comments = [x for x in preset.splitlines() if x.lstrip().startswith("#") or " # " in x]
    assert comments and all(c in text for c in comments)
    cfg = yaml.safe_load(text)
    assert cfg["data"]["path"] == str(csv.resolve()) and cfg["data"]["n_test"] == yaml.safe_load(preset)["data"]["n_test"]


def test_a_bad_set_value_with_data_names_the_flag_not_only_the_preset(tmp_path):
    from typer.testing import CliRunner

    from sdk.cli import app
    from verticals.fraud import FraudTemplate

    csv = tmp_path / "tx.csv"
    FraudTemplate().synthesize(400, 0, FraudTemplate.Options()).to_csv(csv, index=False)
    out = CliRunner().invoke(app, ["init", "fraud", str(tmp_path / "p"), "--preset", "tiny", "--data", str(csv),
                                   "--set", "data.n_tset=6"])
    assert out.exit_code == 2 and "data.n_tset: unknown key" in out.output
    assert "--set data.n_tset=6" in out.output and not (tmp_path / "p").exists()


def test_unknown_template_exits_2(tmp_path):
    out = distill("init", "astrology", tmp_path)
    assert out.returncode == 2 and "unknown template 'astrology'" in out.stderr and "fraud" in out.stderr


def test_unknown_yaml_key_exits_2_naming_it(tmp_path):
    p = _project(tmp_path, distill__temprature=2.0)
    out = distill("run", p, "--out", tmp_path / "run")
    assert out.returncode == 2
    assert "distill.temprature: unknown key" in out.stderr
    assert not (tmp_path / "run").exists()


def test_unknown_template_in_yaml_exits_2(tmp_path):
    p = _project(tmp_path, template="astrology")
    out = distill("run", p, "--out", tmp_path / "run")
    assert out.returncode == 2 and "astrology" in out.stderr


def test_missing_model_folder_exits_2_naming_it(tmp_path):
    p = _project(tmp_path, teacher__model=str(tmp_path / "no-such-model"))
    out = distill("run", p, "--out", tmp_path / "run")
    assert out.returncode == 2 and "no-such-model" in out.stderr
    assert not list((tmp_path / "run").glob(".*partial")) and not (tmp_path / "run" / "teacher").exists()


def test_unreadable_model_file_exits_2_naming_it(tmp_path, tiny_llama):
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_llama, broken)
    (broken / "model.safetensors").write_bytes(b"this is not a safetensors file")
    p = _project(tmp_path, teacher__model=str(broken))
    out = distill("run", p, "--out", tmp_path / "run")
    assert out.returncode == 2 and "broken-model" in out.stderr
    assert not (tmp_path / "run" / "teacher").exists()


def test_empty_dataset_exits_2_naming_the_file(tmp_path):
    csv = tmp_path / "transactions.csv"
    pd.DataFrame(columns=[*FraudTemplate.columns, "label"]).to_csv(csv, index=False)
    p = _project(tmp_path, data__path=str(csv))
    out = distill("run", p, "--out", tmp_path / "run")
    assert out.returncode == 2 and "transactions.csv is empty" in out.stderr
    assert not (tmp_path / "run" / "data").exists()


def test_missing_config_file_exits_2(tmp_path):
    out = distill("run", tmp_path / "nope.yaml")
    assert out.returncode == 2 and "nope.yaml" in out.stderr


def test_version_prints_the_installed_version():
    from importlib.metadata import version

    out = distill_process("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"distill-sdk {version('distill-sdk')}"


def test_run_suggests_the_key_meant_and_leaves_no_folder(tmp_path):
    p = _project(tmp_path, student__layrs=3)
    out = distill("run", p, "--out", tmp_path / "run")
    assert out.returncode == 2 and "student.layrs: unknown key; did you mean `student.layers`?" in out.stderr
    assert not (tmp_path / "run").exists()


def test_run_checks_the_teacher_depth_before_any_stage(tmp_path, tiny_llama):
    p = _project(tmp_path, teacher__model=str(tiny_llama), student__layers=9)
    out = distill("run", p, "--out", tmp_path / "run")
    assert out.returncode == 2 and "student.layers (9) is more than the teacher's 4 decoder layers" in out.stderr
    assert not (tmp_path / "run").exists()


def test_check_exits_0_on_a_valid_project(tmp_path, tiny_llama):
    out = distill("check", _project(tmp_path, teacher__model=str(tiny_llama)))
    assert out.returncode == 0 and "ready to run" in out.stdout, out.stderr


def test_ctrl_c_exits_130_with_a_hint_and_keeps_only_finished_stages(tmp_path, tiny_llama):
    import json
    import os
    import signal

    p = _project(tmp_path, teacher__model=str(tiny_llama))
    proc = subprocess.Popen([sys.executable, "-m", "sdk.cli", "run", str(p), "--out", str(tmp_path / "run")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            # a suite started in the background (nohup, `&`) ignores SIGINT, and a child inherits
                            # that: Python then installs no KeyboardInterrupt handler and every press is lost
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:  # interrupt once the data stage has finished, while the teacher adapts
        if "[distill] adapt: running" in line:
            break
    for _ in range(20):  # a Ctrl-C that lands while a library loads can go unseen (rare): press it again, as a user would
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=5)
            break
        except subprocess.TimeoutExpired:
            continue
    else:
        proc.kill()
        raise AssertionError("the run did not exit after 20 Ctrl-C presses")
    assert proc.returncode == 130, err
    assert f"interrupted; re-run `distill run {p}` to resume from the last finished stage" in err
    assert "Traceback" not in err
    stages = json.loads((tmp_path / "run" / "manifest.json").read_text())["stages"]
    assert list(stages) == ["data"] and not (tmp_path / "run" / "teacher").exists()
    assert not list((tmp_path / "run").glob(".*partial"))


def _report():
    from evaluation.report import build_report
    from tests.evaluation.test_report import _art

    arts = [_art("teacher-torch", "teacher", 0.91, 0.8, 0.05, 4.0),
            _art("student-gguf-Q4_K_M", "student", 0.89, 0.76, 0.06, 14.08, "gguf", "Q4_K_M")]
    return build_report(template="fraud", task="decision", project="demo", primary_metric="roc_auc",
                        compared=("roc_auc", "recall"), lower_is_better={"fpr"}, artifacts=arts,
                        data={"n_train": 1, "n_val": 2, "n_test": 3}, machine={"cpus": 2, "platform": "linux"},
                        stages={}, operating_point={"kind": "fpr", "value": 0.02, "description": "d",
                                                    "metric": "recall"})


def test_headline_table_reads_the_report():
    from sdk.cli import headline_table

    header, rows = headline_table(_report())
    assert header[:3] == ["artifact", "recall @ op", "recall vs teacher"]
    assert rows == [["teacher-torch", "0.800", "reference", "-", "0.0"],
                    ["student-gguf-Q4_K_M", "0.760", "95.0%", "3.52x", "0.0"]]


def test_headline_table_is_printed(capsys):
    from sdk.cli import print_headline

    print_headline(_report())
    out = capsys.readouterr().out
    assert "recall vs teacher" in out and "student-gguf-Q4_K_M" in out and "3.52x" in out and "95.0%" in out


# ---- init over the user's own table: checked before anything is written

def init_table(tmp_path: Path, df, *args):
    from typer.testing import CliRunner

    from sdk.cli import app
    from tests.tables import write

    csv = write(df, tmp_path / "tx.csv")
    out = CliRunner().invoke(app, ["init", "fraud", str(tmp_path / "proj"), "--preset", "tiny", "--data", str(csv),
                                   *map(str, args)])
    return out, csv


TABLE_ARGS = ("--label-column", "is_fraud", "--time-column", "when", "--id-column", "tx_id")


def test_init_over_a_mixed_table_writes_a_project_that_checks(tmp_path):
    from tests.tables import mixed_table

    out, csv = init_table(tmp_path, mixed_table(), *TABLE_ARGS, "--name", "my-fraud")
    assert out.exit_code == 0, out.output
    cfg = yaml.safe_load((tmp_path / "proj" / "project.yaml").read_text())
    assert cfg["name"] == "my-fraud"
    assert cfg["data"] | {"path": None} == {"path": None, "label_column": "is_fraud", "time_column": "when",
                                            "id_column": "tx_id", "n_train": 48, "n_val": 24, "n_test": 24}
    assert cfg["data"]["path"] == str(csv.resolve())
    assert "ordered by when" in out.output and "when, amount, merchant, card_present, note, score" in out.output


def test_init_scales_the_splits_to_a_small_table(tmp_path):
    from tests.tables import mixed_table

    out, _ = init_table(tmp_path, mixed_table(80), *TABLE_ARGS)  # the tiny preset asks for 96 rows
    assert out.exit_code == 0, out.output
    text = (tmp_path / "proj" / "project.yaml").read_text()
    assert "n_test: 20  # scaled to the file's 80 rows by distill init" in text
    assert yaml.safe_load(text)["data"]["n_train"] == 80 - 20 - 20


def _malformed():
    from tests.tables import mixed_table

    df = mixed_table()
    bad_label = df.copy()
    bad_label.loc[7, "is_fraud"] = "maybe"
    bad_time = df.copy()
    bad_time.loc[12, "when"] = "yesterday"
    bad_number = df.astype({"score": object})
    bad_number.loc[20, "score"] = "12,5"
    dup_ids = df.copy()
    dup_ids.loc[11, "tx_id"] = "tx00003"
    no_label = df.copy()
    no_label.loc[30, "is_fraud"] = None
    return {
        "label value": (bad_label, "row 8 (line 9), column 'is_fraud': 'maybe' is not a label"),
        "missing label": (no_label, "row 31 (line 32), column 'is_fraud': missing label"),
        "time value": (bad_time, "row 13 (line 14), column 'when': 'yesterday' is not a date or time"),
        "wrong type": (bad_number, "row 21 (line 22), column 'score': '12,5' is not a number"),
        "duplicate ids": (dup_ids, "rows 4 (line 5), 12 (line 13), column 'tx_id': duplicate ids"),
        "single class": (df.assign(is_fraud="no"), "column 'is_fraud' holds a single class"),
        "missing column": (df.drop(columns=["when"]), "lacks column 'when' (data.time_column)"),
        "empty file": (df.iloc[:0], "tx.csv is empty"),
    }


@pytest.mark.parametrize("case", list(_malformed()))
def test_init_over_a_malformed_table_exits_2_naming_it_and_writes_nothing(tmp_path, case):
    df, message = _malformed()[case]
    out, csv = init_table(tmp_path, df, *TABLE_ARGS)
    assert out.exit_code == 2 and message in out.output, out.output
    assert str(csv) in out.output
    assert not (tmp_path / "proj").exists()


def test_init_sets_preset_values(tmp_path):
    from typer.testing import CliRunner

    from sdk.cli import app

    out = CliRunner().invoke(app, ["init", "fraud", str(tmp_path / "p"), "--preset", "tiny", "--set", "data.n_test=50",
                                   "--set", "student.layers=3", "--set", "seed=7"])
    assert out.exit_code == 0, out.output
    text = (tmp_path / "p" / "project.yaml").read_text()
    cfg = yaml.safe_load(text)
    assert (cfg["data"]["n_test"], cfg["student"]["layers"], cfg["seed"]) == (50, 3, 7)
    assert "n_test: 50  # set by distill init --set" in text and "# Smallest end-to-end run" in text
    out = CliRunner().invoke(app, ["init", "fraud", str(tmp_path / "q"), "--set", "student.layrs=3"])
    assert out.exit_code == 2 and "student.layrs: unknown key" in out.output and not (tmp_path / "q").exists()
    for pair, says in (("student=5", "student is a section"), ("data={n_train: 5}", "data is a section"),
                       ("seed.x=1", "seed is a value, not a section"), ("seed=-1", "seed")):
        out = CliRunner().invoke(app, ["init", "fraud", str(tmp_path / "q"), "--set", pair])
        assert out.exit_code == 2 and says in out.output, (pair, out.output)
    assert not (tmp_path / "q").exists()


def test_a_file_where_a_folder_belongs_exits_2(tmp_path):
    from typer.testing import CliRunner

    from sdk.cli import app

    a_file = tmp_path / "afile"
    a_file.write_text("mine")
    out = CliRunner().invoke(app, ["init", "fraud", str(a_file)])
    assert out.exit_code == 2 and "is a file" in out.output
    CliRunner().invoke(app, ["init", "fraud", str(tmp_path / "p"), "--preset", "tiny"])
    out = CliRunner().invoke(app, ["run", str(tmp_path / "p" / "project.yaml"), "--out", str(a_file)])
    assert out.exit_code == 2 and "is a file" in out.output
    assert a_file.read_text() == "mine"


def test_table_options_need_a_table(tmp_path):
    from typer.testing import CliRunner

    from sdk.cli import app

    out = CliRunner().invoke(app, ["init", "fraud", str(tmp_path / "proj"), "--time-column", "when"])
    assert out.exit_code == 2 and "--time-column describes your own table" in out.output
    assert not (tmp_path / "proj").exists()


def test_several_machines_without_a_rendezvous_exit_2_before_any_stage(tmp_path):
    p = _project(tmp_path)
    for extra in ([], ["--rdzv-endpoint", "node-a"]):
        out = distill("run", p, "--out", tmp_path / "run", "--nnodes", "2", *extra)
        assert out.returncode == 2 and "--rdzv-endpoint" in out.stderr and "host:port" in out.stderr, out.stderr
        assert not (tmp_path / "run").exists()  # no stage ran


def test_the_sdks_own_warnings_read_as_warning_lines(tmp_path):
    import json

    from verticals.education.template import EducationOptions, EducationTemplate

    # Python's default format printed the SDK's file, line number and `warnings.warn(` source line
    options = EducationOptions(grading="binary")
    rows = EducationTemplate().configure(options).synthesize(60, 3, options).to_dict("records")
    rows.append({**rows[0], "label": 1 - int(rows[0]["label"])})
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps({k: rows[i][k] for k in ("question", "reference", "answer")}
                                       | {"label": int(rows[i]["label"])}) + "\n" for i in range(len(rows))))
    out = distill_process("init", "education", tmp_path / "p", "--data", path, "--set",
                          "template_options.grading=binary")
    assert out.returncode == 0, out.stderr
    assert out.stderr.count(f"warning: dataset {path}: 1 of 1 repeated records") == 1  # init reads the file twice
    assert "UserWarning" not in out.stderr and "warnings.warn" not in out.stderr
