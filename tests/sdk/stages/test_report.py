from sdk.stages.report import training_health


def _train(vals, stopped_early=False, every=25):
    hist = [{"step": every * (i + 1), "loss": 1.0, "val": v} for i, v in enumerate(vals)]
    best = max(range(len(vals)), key=lambda i: (vals[i], -i))  # the first of equal bests, as the recipe keeps
    return {"best_metric": vals[best], "best_step": hist[best]["step"], "steps": hist[-1]["step"],
            "stopped_early": stopped_early, "history": hist}


def test_a_training_that_never_beat_its_first_check_is_a_warning():
    # the education student of 2026-12-03 (fp32, 3 epochs, patience 4): at the majority grade until it stopped
    warn, note = training_health("the student's distillation", "distill.max_epochs",
                                 _train([0.521, 0.521, 0.517, 0.458, 0.521], stopped_early=True))
    assert note == [] and len(warn) == 1
    assert warn[0].startswith("The student's distillation never beat its first validation check (step 25; 5 checks")
    assert "distill.max_epochs" in warn[0]


def test_a_training_still_rising_at_its_end_is_a_note():
    warn, note = training_health("the teacher's adaptation", "teacher.adapt.max_epochs",
                                 _train([0.52, 0.52, 0.42, 0.55, 0.71, 0.7125]))
    assert warn == [] and len(note) == 1 and "step 150" in note[0] and "teacher.adapt.max_epochs" in note[0]


def test_a_training_that_peaked_or_stopped_early_or_has_few_checks_says_nothing():
    assert training_health("s", "k", _train([0.5, 0.7, 0.8, 0.75])) == ([], [])  # peaked before the end
    assert training_health("s", "k", _train([0.5, 0.7, 0.8, 0.75, 0.74], stopped_early=True)) == ([], [])
    assert training_health("s", "k", _train([0.5, 0.5])) == ([], [])  # two checks: no trend to read
    assert training_health("s", "k", {"history": []}) == ([], [])
    unvalidated = _train([0.0, 0.0, 0.0])  # no held-out prompts: the recipe records no metric
    unvalidated["history"] = [{**h, "val": None} for h in unvalidated["history"]]
    assert training_health("s", "k", unvalidated) == ([], [])


def _report(task, metrics, n_test, headline):
    return {"task": task, "compared_metrics": metrics, "headline_metric": headline, "summary": {},
            "data": {"n_test": n_test, "test_positives": 50, "val_positives": 50}}


def test_small_test_splits_are_warned_about_in_the_templates_own_terms():
    from sdk.stages.report import _warnings

    # an education run (a decision template without recall) once read "only 10 test problems ... pass@1"
    (edu,) = _warnings(_report("decision", ["accuracy", "macro_f1"], 10, "accuracy"))
    assert edu.startswith("only 10 test examples (fewer than 100): each one is 10.0% of the split")
    assert "accuracy" in edu and "pass@1" not in edu and "problems" not in edu
    (code,) = _warnings(_report("generation", ["pass@1"], 40, "pass@1"))
    assert code.startswith("only 40 test problems") and "pass@1" in code
    assert _warnings(_report("decision", ["accuracy"], 400, "accuracy")) == []


def test_gates_on_a_small_validation_split_and_latency_on_few_requests_are_warned_about():
    from sdk.stages.report import _warnings

    # a decision template of rare positives: the positives warning names the gates (the tiny fraud run's
    # Q4_K_M passed on 6 validation positives and lost a sixth of ROC-AUC on test)
    r = _report("decision", ["roc_auc", "recall"], 400, "recall")
    r["data"]["val_positives"] = 6
    (w,) = _warnings(r)
    assert w.startswith("only 6 positive examples in the validation split") and "release gates decided there" in w
    # another decision template: by the gates' examples
    r = {**_report("decision", ["accuracy"], 400, "accuracy"), "gates": {"student-gguf-Q4_K_M": {"n": 20}}}
    (w,) = _warnings(r)
    assert w.startswith("the release gates decided on only 20 validation examples")
    r = {**_report("decision", ["accuracy"], 400, "accuracy"),
         "artifacts": [{"latency_ms": {"p99": 9.0, "n": 5}}, {"latency_ms": {"p99": 9.0, "n": 100}}]}
    (w,) = _warnings(r)
    assert w.startswith("latency was timed on only 5 requests per artifact") and "evaluation.latency_samples" in w


def test_the_fraud_template_warns_of_an_operating_point_too_tight_for_the_validation_split():
    import numpy as np

    from verticals.fraud import FraudTemplate
    from verticals.fraud.template import OperatingPoint, threshold_for

    t = FraudTemplate()
    tiny = {"data": {"n_val": 24, "val_positives": 6}}  # fpr <= 2% of 18 legitimate: none may be flagged
    (w,) = t.report_warnings(tiny, t.Options())
    assert "flag only 0 of the 18 validation legitimate transactions" in w and "at least 250" in w
    assert t.report_warnings({"data": {"n_val": 2000, "val_positives": 90}}, t.Options()) == []
    # a validation split of positives only: no budget to keep, every transaction may be flagged (IndexError)
    scores = np.array([0.2, 0.7, 0.9])
    assert threshold_for(np.ones(3, dtype=int), scores, OperatingPoint(kind="fpr", value=0.02)) == 0.2
