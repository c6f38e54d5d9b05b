"""The annotate stage's key: it holds what of the distillation decides the annotations (whether some training
needs the teacher's top-k, and in what alignment), not the loss's temperature or alpha; a run keyed the earlier
way stays up to date only where it decided the same."""

from __future__ import annotations

import sdk
from sdk.stages import Context
from sdk.stages import annotate


def _ctx(**distill) -> Context:
    p = sdk.Project.from_template("code", preset="tiny", distill=distill)
    return Context(p.config, p.template, p.options, None)


def test_the_key_follows_the_need_for_top_k_not_the_temperature():
    base = annotate.inputs(_ctx())
    assert annotate.inputs(_ctx(loss={"kind": "response_kd", "temperature": 4.0})) == base
    assert annotate.inputs(_ctx(loss={"kind": "response_kd", "alpha": 1.0})) != base
    # a later stage that weights the teacher's distributions needs them though distill.loss does not
    staged = _ctx(loss={"kind": "response_kd", "alpha": 1.0},
                  stages=[{"name": "seq"}, {"name": "kd", "loss": {"kind": "response_kd", "alpha": 0.5}}])
    assert annotate.inputs(staged) == base and annotate.topk_needed_by(staged.config.distill) == [
        "distill.stages[1].loss"]


def test_a_run_keyed_by_the_whole_loss_stays_up_to_date_only_where_it_decided_alike():
    assert annotate.legacy_inputs(_ctx())  # the same decision: the older run's key is accepted
    # the older rule read distill.loss alone (alpha 1: no top-k), so that run's annotations lack the stage's
    staged = _ctx(loss={"kind": "response_kd", "alpha": 1.0},
                  stages=[{"name": "seq"}, {"name": "kd", "loss": {"kind": "response_kd", "alpha": 0.5}}])
    assert annotate.legacy_inputs(staged) == []


def test_the_stage_is_done_only_while_the_files_its_record_names_are_there(tmp_path):
    from sdk.rundir import RunDir

    run = RunDir(tmp_path)
    run.write_json("annotations/annotations.json", {"kind": "generation", "topk_bytes_per_token": 40.0})
    for name in ("responses.json", "topk.safetensors"):
        run.path("annotations", name).write_text("{}")
    run.record("annotate", "k", 1.0)
    assert run.is_done("annotate", "k", annotate.outputs(run))
    # a deleted top-k file re-runs the stage (the distill stage failed reading it)
    run.path("annotations", "topk.safetensors").unlink()
    assert not run.is_done("annotate", "k", annotate.outputs(run))
    # a run that stored no top-k needs none; a decision run needs its targets
    run.write_json("annotations/annotations.json", {"kind": "generation"})
    assert run.is_done("annotate", "k", annotate.outputs(run))
    run.write_json("annotations/annotations.json", {"kind": "decision_topk"})
    assert not run.is_done("annotate", "k", annotate.outputs(run))
