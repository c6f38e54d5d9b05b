"""The CLI contract: init/run/templates, and exit code 2 with a named field or file for bad input."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from verticals.fraud import FraudTemplate


def distill(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sdk.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd)


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
