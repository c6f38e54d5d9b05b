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


def test_template_options_are_validated_by_the_template():
    with pytest.raises(DistillError, match=r"template_options.fraud_rat: unknown key \(template 'fraud'\)"):
        sdk.Project.from_template("fraud", template_options={"fraud_rat": 0.1})
    with pytest.raises(DistillError, match="template_options.fraud_rate"):
        sdk.Project.from_template("fraud", template_options={"fraud_rate": 2})


def test_loss_parameters_are_validated_by_the_loss():
    with pytest.raises(DistillError, match="distill.loss"):
        sdk.Project.from_template("fraud", distill={"loss": {"kind": "soft_target_kd", "temprature": 2}})
    with pytest.raises(DistillError, match="unknown loss 'hinge'"):
        sdk.Project.from_template("fraud", distill={"loss": {"kind": "hinge"}})
    p = sdk.Project.from_template("fraud", preset="tiny", distill={"loss": {"kind": "soft_target_kd", "alpha": 0.2}})
    assert p.config.distill.loss == {"kind": "soft_target_kd", "temperature": 2.0, "alpha": 0.2}


def test_check_template_names_what_is_missing():
    class Half:
        name = "half"
        task = "decision"
        columns = ("a",)

    with pytest.raises(TypeError, match="label_words"):
        check_template(Half())

    class NoShape:
        name = "noshape"

    with pytest.raises(TypeError, match="task"):
        check_template(NoShape())


def test_early_stopping_subset_keeps_both_labels_when_positives_abound():
    import pandas as pd

    from sdk.stages.common import decision_val_subset

    val = pd.DataFrame({"label": [1] * 300 + [0] * 200, "x": range(500)})
    sub = decision_val_subset(val, seed=0)
    assert len(sub) == 240 and sub["label"].sum() == 120
    assert (val.loc[sub.index, "x"] == sub["x"]).all()  # the index still points at the rows' prompts
    rare = pd.DataFrame({"label": [1] * 5 + [0] * 995, "x": range(1000)})
    sub = decision_val_subset(rare, seed=0)
    assert sub["label"].sum() == 5 and len(sub) == 240


def test_tensorboard_logging_keeps_the_distill_stage_hash(tmp_path):
    from sdk.rundir import RunDir
    from sdk.stages import Context, distill

    def distill_inputs(**distill_keys):
        p = sdk.Project.from_template("fraud", preset="tiny", distill=distill_keys)
        return distill.inputs(Context(p.config, p.template, p.options, RunDir(tmp_path)))

    assert distill_inputs(tensorboard=True) == distill_inputs()
    assert distill_inputs(lr=1e-4) != distill_inputs()  # what is trained still changes it


def test_the_python_api_checks_its_arguments_and_follows_edits(tmp_path, monkeypatch):
    import json

    import pandas as pd

    p = sdk.Project.from_template("fraud", preset="tiny")
    with pytest.raises(DistillError, match=r"until='evalute': not a stage \(one of data, "):
        p.run(tmp_path / "r", until="evalute")  # a typo used to run every stage
    with pytest.raises(DistillError, match="nproc=0: a number of processes, 1 or more"):
        p.run(tmp_path / "r", nproc=0)
    assert not (tmp_path / "r").exists()
    # options edited after construction are the ones the data is made with (config.yaml recorded them already)
    p.config.template_options["fraud_rate"] = 0.9
    result = p.run(tmp_path / "r", until="data")
    assert pd.read_parquet(tmp_path / "r" / "data" / "train.parquet")["label"].mean() > 0.6
    assert "RunResult(run_dir=" in repr(result) and len(repr(result)) < 300
    # a folder holding another template's run is not overwritten stage by stage
    with pytest.raises(DistillError, match="holds a run of template 'fraud', not 'education'"):
        sdk.Project.from_template("education", preset="tiny").run(tmp_path / "r", until="data")
    # files that look finished but whose evaluate stage the manifest does not record are not scored
    (tmp_path / "r" / "evaluation").mkdir()
    (tmp_path / "r" / "evaluation" / "artifacts.json").write_text(json.dumps([]))
    with pytest.raises(DistillError, match="is not a finished run: manifest.json does not record its evaluate"):
        sdk.Project.load(tmp_path / "r")
    # a relative data path means from the working directory, and is kept absolute in the config
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rows.csv").write_text("x\n")
    q = sdk.Project.from_template("fraud", preset="tiny", data={"path": "rows.csv", "label_column": "x"})
    assert str(q.config.data.path) == str(tmp_path / "rows.csv")


def test_stage_names_must_differ():
    # a second stage of the same name resumed the first one's finished checkpoint and trained nothing
    with pytest.raises(DistillError, match="distill.stages: names must differ .* kd is given more than once"):
        sdk.Project.from_template("code", preset="tiny", distill={"stages": [{"name": "kd"}, {"name": "kd"}]})


def test_a_stage_loss_of_the_same_kind_takes_what_it_omits_from_distill_loss(tmp_path):
    from sdk.config import load_config
    from sdk.stages.distill import loss_problems

    p = sdk.Project.from_template("code", preset="tiny", distill={
        "loss": {"kind": "response_kd", "alpha": 0.5, "temperature": 2.0, "divergence": "reverse_kl"},
        "stages": [{"name": "a", "loss": {"kind": "response_kd", "alpha": 0.0}}, {"name": "b"},
                   {"name": "c", "loss": {"kind": "dpo", "beta": 0.2}},
                   {"name": "d", "loss": {"kind": "response_kd", "divergence": "forward_kl"}}]})
    d_cfg = p.config.distill
    a, b, c, d = d_cfg.stages
    assert a.loss == {"kind": "response_kd", "alpha": 0.0}  # what the stage gives, resolved where it is used
    resolved = dict(d_cfg.trained_losses())
    assert [w for w, _ in d_cfg.trained_losses()] == ["distill.stages[0].loss", "distill.loss",
                                                      "distill.stages[2].loss", "distill.stages[3].loss"]
    first = d_cfg.stage_loss(a)
    assert (first["alpha"], first["temperature"], first["divergence"]) == (0.0, 2.0, "reverse_kl")
    assert resolved["distill.stages[2].loss"]["temperature"] == 1.0  # another kind: dpo's own default
    # a default given on purpose is kept, not replaced by distill.loss's value
    assert d_cfg.stage_loss(d).get("divergence", "forward_kl") == "forward_kl"
    # assigned in Python, resolved as from YAML
    p.config.distill.loss = {"kind": "response_kd", "alpha": 0.5, "temperature": 3.0}
    assert d_cfg.stage_loss(a)["temperature"] == 3.0
    # QAD twins continue with the last stage's loss that distils, not dpo's nor the unused top-level one
    assert d_cfg.continued_loss() == d_cfg.stage_loss(d)
    d_cfg.stages = [a, b, c]
    assert d_cfg.continued_loss() == d_cfg.loss  # stage b trains distill.loss
    assert loss_problems(d_cfg, "generation") == []
    # an alignment loss first would align a student that was never trained (unless it is a trained model)
    d_cfg.stages = [c, a]
    assert "distill.stages[0].loss: dpo in the first stage would align a student cut from the teacher" in \
        loss_problems(d_cfg, "generation")[0]
    assert loss_problems(d_cfg, "generation", trained_student=True) == []
    d_cfg.stages = [a, b, c, d]
    p.to_yaml(tmp_path / "project.yaml")  # the stages read back the same
    assert load_config(tmp_path / "project.yaml").distill.stages == d_cfg.stages


def test_assigning_a_bad_config_value_names_the_field(tmp_path):
    p = sdk.Project.from_template("fraud", preset="tiny", distill={"stages": [{"name": "kd"}]})
    with pytest.raises(DistillError, match=r"invalid configuration: distill.lr: Input should be greater than 0"):
        p.config.distill.lr = -1
    with pytest.raises(DistillError, match=r"distill.stages\[kd\].lr: Input should be greater than 0"):
        p.config.distill.stages[0].lr = 0
    p.config.distill.lr = 1e-3  # a good value is taken
    assert p.config.distill.lr == 1e-3
    # a check across keys runs before the run starts: an entry of a list is checked alone when assigned
    p.config.distill.stages[0].grad_accum = 64
    with pytest.raises(DistillError, match=r"distill.stages\[0\].grad_accum: 64 is more than batch_size"):
        p.run(tmp_path / "r", until="data")
    assert not (tmp_path / "r").exists()
    # a list mutated in place holds what was appended unchecked: the run checks it (it crashed with AttributeError)
    p.config.distill.stages[0].grad_accum = None
    p.config.distill.stages.append({"name": "x", "loss": {"kind": "dpo"}})
    with pytest.raises(DistillError, match=r"distill.stages\[1\].loss: dpo trains generation templates"):
        p.run(tmp_path / "r", until="data")
