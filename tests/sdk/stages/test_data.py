"""The data stage's split over a template's rows: identical model inputs are kept once, so no test row is
one the student trained on."""

import json

import pandas as pd

from sdk.config import template_options, validate_config
from sdk.registry import get_template
from sdk.stages.data import prepare

INPUTS = ["question", "reference", "answer"]


def _config(**data):
    return validate_config({"name": "x", "template": "education", "data": {"n_train": 60, "n_val": 20, "n_test": 20,
                                                                          **data}})


def _no_repeats(parts):
    every = pd.concat([parts[n][INPUTS] for n in ("train", "val", "test")])
    return not every.astype(str).duplicated().any()


def test_a_users_file_with_repeated_records_is_split_without_them(tmp_path):
    t = get_template("education")
    cfg = _config()
    rows = t.synthesize(120, 3, template_options(cfg)).drop_duplicates(INPUTS).head(100)
    repeated = pd.concat([rows, rows.head(30)])  # 30 records twice; a split without care leaks some
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps({k: (v if not hasattr(v, "item") else v.item()) for k, v in r.items()}) + "\n"
                            for r in repeated.to_dict("records")))
    p = prepare(_config(path=str(path)), t, template_options(cfg))
    assert p.info["rows_read"] == 130 and p.info["duplicates_removed"] == 30
    assert _no_repeats(p.parts)
    assert [len(p.parts[n]) for n in ("val", "test")] == [20, 20]


def test_synthesized_rows_keep_the_preset_sizes_once_repeats_are_dropped():
    t = get_template("education")
    cfg = _config(n_train=400, n_val=100, n_test=200)
    p = prepare(cfg, t, template_options(cfg))
    assert p.info["duplicates_removed"] > 0  # the synthesizer repeats some triples at this size
    assert [len(p.parts[n]) for n in ("train", "val", "test")] == [400, 100, 200]
    assert _no_repeats(p.parts)


def test_problems_that_differ_only_in_their_id_are_kept_once():
    """The code template's rows carry a task_id: the prompt, not the columns, decides what repeats."""
    t = get_template("code")
    cfg = validate_config({"name": "x", "template": "code", "data": {"n_train": 430, "n_val": 40, "n_test": 60}})
    p = prepare(cfg, t, template_options(cfg))
    assert p.info["duplicates_removed"] > 0  # 530 synthesized problems repeat a few
    prompts = pd.concat([p.parts[n] for n in ("train", "val", "test")]).apply(lambda r: t.prompt(r.to_dict()), axis=1)
    assert not prompts.duplicated().any()


def test_a_decision_split_with_one_label_is_named_before_anything_trains():
    """Synthesized fraud at a rate that leaves no fraud in a split: a threshold would be a guess and ROC-AUC
    undefined, found only after training; the data stage names the split, what it is for, and the fix."""
    import pytest

    from sdk.errors import DistillError

    t = get_template("fraud")
    cfg = validate_config({"name": "x", "template": "fraud", "template_options": {"fraud_rate": 0.02},
                           "data": {"n_train": 60, "n_val": 20, "n_test": 20}})
    with pytest.raises(DistillError, match=r"all 20 rows of the test split have label 0 \(the report is measured "
                                           r"on it.*raise data.n_test or give data with more rows of the rarer label"):
        prepare(cfg, t, template_options(cfg))
