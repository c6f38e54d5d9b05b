import pytest

import sdk
from sdk.config import load_config
from sdk.errors import DistillError
from verticals.base import check_template


def test_from_template_applies_nested_overrides_and_saves_yaml(tmp_path):
    p = sdk.Project.from_template("fraud", preset="tiny", data={"n_test": 30}, student={"layers": 3})
    assert p.config.data.n_test == 30 and p.config.student.layers == 3
    assert p.config.data.n_val == 24  # untouched preset value kept
    assert p.template.name == "fraud"
    assert load_config(p.to_yaml(tmp_path / "project.yaml")) == p.config


def test_from_template_rejects_unknown_override_and_template():
    with pytest.raises(DistillError, match="student.depth: unknown key"):
        sdk.Project.from_template("fraud", student={"depth": 3})
    with pytest.raises(DistillError, match="unknown template 'astrology'"):
        sdk.Project.from_template("astrology")
    with pytest.raises(DistillError, match="no preset 'huge'"):
        sdk.Project.from_template("fraud", preset="huge")


def test_check_template_names_what_is_missing():
    class Half:
        name = "half"
        columns = ("a",)

    with pytest.raises(TypeError, match="label_words"):
        check_template(Half())


def test_early_stopping_subset_keeps_both_labels_when_positives_abound():
    import pandas as pd

    p = sdk.Project.from_template("fraud", preset="tiny")
    val = pd.DataFrame({"label": [1] * 300 + [0] * 200, "x": range(500)})
    sub = p._val_subset(val)
    assert len(sub) == 240 and sub["label"].sum() == 120
