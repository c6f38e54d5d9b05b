"""report: report.json, report.md, report.html and the figures (the template's report.png and the shared
tradeoffs.png) from the evaluation, with paired-bootstrap intervals and warnings when a split is too small
for its figures to mean much."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from sdk.rundir import RunDir
from sdk.stages import Context

# Below these counts a figure moves by several points per example; the report says so (see _warnings).
MIN_TEST_POSITIVES = 30
MIN_VAL_POSITIVES = 15
MIN_TEST_PROBLEMS = 100
MIN_GATE_PROBLEMS = 30  # a generation gate on fewer validation problems passes files that lose a fifth on test
MIN_LATENCY_SAMPLES = 100  # a P99 of fewer requests is their maximum
WIDE_RETENTION_CI = 0.2  # a retention interval wider than this cannot tell the student from the teacher


def inputs(ctx: Context) -> Any:
    # everything the report shows besides the evaluation (the upstream hash): the name, the operating
    # point and the other template options
    return [ctx.config.name, ctx.options.model_dump(mode="json"), ctx.config.seed]


def outputs(run: RunDir) -> list[Path]:
    return [run.path(f) for f in ("report.json", "report.md", "report.html", "report.png", "tradeoffs.png")]


def run(ctx: Context) -> dict[str, Any]:
    from evaluation.plots import tradeoff_figure
    from evaluation.report import build_report, write_report
    from sdk.stages.evaluate import load_details

    t, run_dir = ctx.template, ctx.run
    parts = run_dir.splits()
    entries = run_dir.read_json("evaluation/artifacts.json")
    names = [e["name"] for e in entries]
    details = load_details(run_dir, names)
    stages = {k: {"seconds": v.get("seconds", 0), "note": v.get("note", "")}
              for k, v in run_dir.manifest["stages"].items() if k != "report"}
    data = {"n_train": len(parts["train"]), "n_val": len(parts["val"]), "n_test": len(parts["test"])}
    prepared = run_dir.manifest["stages"].get("data", {})  # what the data stage removed (absent in older runs)
    for key in ("duplicates_removed", "label_conflicts"):
        if prepared.get(key) is not None:
            data[key] = prepared[key]
    if t.task == "decision":
        data["test_positives"] = int((parts["test"]["label"] > 0).sum())
        data["val_positives"] = int((parts["val"]["label"] > 0).sum())
        if len(t.label_words) > 2:  # grades: "positive" (above the lowest) says little; each grade's count
            for split in ("val", "test"):
                data[f"{split}_label_counts"] = {t.label_words[k].strip(): int((parts[split]["label"] == k).sum())
                                                 for k in sorted(t.label_words)}
    op = t.operating_point(ctx.options) if hasattr(t, "operating_point") else None
    teacher = next(e["name"] for e in entries if e["role"] == "teacher")
    intervals = paired_intervals(t, ctx.options, entries, details, parts, teacher, seed=ctx.config.seed)
    annotation = run_dir.read_json("annotations/annotations.json")
    report = build_report(
        template=t.name, task=t.task, project=ctx.config.name, primary_metric=t.primary_metric,
        compared=t.retention_metrics, lower_is_better=t.lower_is_better, artifacts=entries, data=data,
        machine={"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        stages=stages, annotation={k: v for k, v in annotation.items() if k != "per_prompt_accepted"},
        operating_point=op, intervals=intervals)
    if t.task == "decision" and hasattr(t, "breakdown"):  # e.g. accuracy per answer type
        report["breakdown"] = t.breakdown(parts["test"], {n: np.asarray(d["probs_test"]) for n, d in details.items()},
                                          {e["name"]: e["metrics"].get("threshold") for e in entries})
    report["warnings"] = report["warnings"] + _warnings(report)  # after build_report's own (the gates')
    if hasattr(t, "report_warnings"):  # what only the template knows (fraud: an operating point too tight to hold)
        report["warnings"] += t.report_warnings(report, ctx.options)
    for who, knob, train in _trainings(run_dir):
        warn, note = training_health(who, knob, train)
        report["warnings"] += warn
        report["notes"] += note
    for w in report["warnings"]:
        print(f"[distill] warning: {w}")
    t.plot(report, details, parts["test"], run_dir.path("report.png"))
    tradeoff_figure(report, run_dir.path("tradeoffs.png"))
    write_report(report, run_dir.root)
    return {"note": "report.json, report.md, report.html, report.png, tradeoffs.png"}


def paired_intervals(t, options, entries: list[dict], details: dict[str, Any], parts, teacher: str,
                     seed: int = 0, resamples: int = 1000) -> dict[str, Any]:
    """Every artifact's metrics recomputed by the template on shared resamples of the test split (its
    threshold fixed as chosen on validation)."""
    from evaluation.uncertainty import paired_bootstrap, with_proportion_intervals

    names = [e["name"] for e in entries if e["name"] in details]
    test = parts["test"]
    if t.task == "decision":
        y = test["label"].to_numpy()
        probs = {n: np.asarray(details[n]["probs_test"]) for n in names}
        thr = {e["name"]: e["metrics"]["threshold"] for e in entries}

        def metrics_on(idx: np.ndarray) -> dict[str, dict[str, float]]:
            return {n: t.metrics(y[idx], probs[n][idx], thr[n], options) for n in names}
    else:
        rows = test.to_dict("records")
        passed = {n: [bool(g["passed"]) for g in details[n]["greedy"]] for n in names}
        sampled = {n: details[n].get("sampled_passed") for n in names}

        def metrics_on(idx: np.ndarray) -> dict[str, dict[str, float]]:
            sub = [rows[i] for i in idx]
            return {n: t.metrics(sub, [passed[n][i] for i in idx],
                                 [sampled[n][i] for i in idx] if sampled[n] else None, options) for n in names}

    iv = paired_bootstrap(len(test), metrics_on, teacher=teacher, compared=t.retention_metrics,
                          lower_is_better=t.lower_is_better, resamples=resamples, seed=seed,
                          progress="bootstrap intervals")
    for per in iv["metrics"].values():  # counts and the fixed threshold have no sampling interval worth showing
        for k in ("threshold", "n", "positives"):
            per.pop(k, None)
    if hasattr(t, "proportion_counts"):  # the template's proportions (fraud: recall, precision, fpr): Wilson
        counts = {e["name"]: t.proportion_counts(e["metrics"]) for e in entries if e["name"] in iv["metrics"]}
        iv = with_proportion_intervals(iv, counts)
    return iv


def _trainings(run_dir: RunDir) -> list[tuple[str, str, dict[str, Any]]]:
    """(who, the config key that lengthens it, its training result) of the teacher's adaptation and the
    student's distillation, where the run has them."""
    out = []
    teacher = run_dir.read_json("teacher/teacher.json") if run_dir.path("teacher", "teacher.json").is_file() else {}
    if teacher.get("train"):
        out.append(("the teacher's adaptation", "teacher.adapt.max_epochs", teacher["train"]))
    distill = run_dir.manifest["stages"].get("distill", {})
    if distill.get("train"):  # in stages: the last stage's training, whose length its own entry may set
        knob = ("the last entry of distill.stages, or distill.max_epochs" if distill.get("stages")
                else "distill.max_epochs")
        out.append(("the student's distillation", knob, distill["train"]))
    return out


def training_health(who: str, knob: str, train: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(warnings, notes) from a training's validation checks: a warning when it never beat its first check
    (a decision model may be answering one label for everything: the education student sat at the majority
    grade for 100-200 steps, and one run stopped there), a note when it was still improving at its end."""
    hist = train.get("history") or []
    if len(hist) < 3 or any(h["val"] is None for h in hist):  # too few checks to tell a trend, or none validated
        return [], []
    first, last, who = hist[0], hist[-1], who[:1].upper() + who[1:]
    if train["best_step"] == first["step"]:
        return [f"{who} never beat its first validation check (step {first['step']}; {len(hist)} checks, "
                f"{train['steps']} steps): it learned nothing the validation metric sees (a decision model may be "
                f"answering one label for everything). Train longer ({knob}, and patience) or look at the data "
                "before using it."], []
    # (validation values are signed so that higher is better; only their order is used)
    if not train.get("stopped_early") and train["best_step"] == last["step"] and last["val"] > hist[-2]["val"]:
        return [], [f"{who} was still improving when it ended (its best validation check was its last, step "
                    f"{last['step']}): more epochs ({knob}) may give a better model."]
    return [], []


def _warnings(r: dict[str, Any]) -> list[str]:
    """Plain-language warnings: the teacher's at annotation, and when the figures rest on too few examples
    (what is too few, and why)."""
    out, d = list((r.get("annotation") or {}).get("warnings", [])), r["data"]  # the teacher's, at annotation
    if d.get("label_conflicts"):
        out.append(f"{d['label_conflicts']} repeated records in the data had another label than their first "
                   "occurrence, whose label was kept: the labels disagree with themselves there; check those "
                   "records (`distill check` names them).")
    if r["task"] == "decision" and "recall" in r["compared_metrics"]:  # rare-positive decisions (fraud)
        pos, vpos = d.get("test_positives", 0), d.get("val_positives", 0)
        if pos < MIN_TEST_POSITIVES:
            out.append(f"only {pos} positive examples in the test split (fewer than {MIN_TEST_POSITIVES}): each one "
                       f"moves recall by {1 / max(pos, 1):.0%}, so recall, precision and their ratios to the "
                       "teacher are rough; use a larger test split (data.n_test) before deciding.")
        if vpos < MIN_VAL_POSITIVES:
            out.append(f"only {vpos} positive examples in the validation split (fewer than {MIN_VAL_POSITIVES}): "
                       "thresholds chosen there meet the operating point only roughly on new data, and the release "
                       "gates decided there: a pass does not show that a file keeps the student's quality; compare "
                       "the test figures, or raise data.n_val.")
    elif d["n_test"] < MIN_TEST_PROBLEMS:
        what = "problems" if r["task"] == "generation" else "examples"
        out.append(f"only {d['n_test']} test {what} (fewer than {MIN_TEST_PROBLEMS}): each one is "
                   f"{1 / d['n_test']:.1%} of the split, so differences of a few points of {r['headline_metric']} "
                   "between artifacts are noise.")
    n = min((g["n"] for g in (r.get("gates") or {}).values() if g.get("n") is not None), default=None)
    rare_positives = r["task"] == "decision" and "recall" in r["compared_metrics"]  # said above, by positives
    if not rare_positives and n is not None and n < MIN_GATE_PROBLEMS:
        what = "problems" if r["task"] == "generation" else "examples"
        out.append(f"the release gates decided on only {n} validation {what} (fewer than {MIN_GATE_PROBLEMS}): "
                   "a pass there does not show that a file keeps the student's quality (on the code student, "
                   "dynamic INT8 passed on 10 problems and lost a fifth of pass@1 on 200); compare the test "
                   "figures, or raise data.n_val.")
    timed = [a["latency_ms"]["n"] for a in r.get("artifacts", []) if (a.get("latency_ms") or {}).get("n")]
    if timed and min(timed) < MIN_LATENCY_SAMPLES:
        out.append(f"latency was timed on only {min(timed)} requests per artifact (fewer than {MIN_LATENCY_SAMPLES}): "
                   "its P99 is about the slowest of them, not a 99th percentile; raise evaluation.latency_samples "
                   "(at most the test split's size) before quoting it.")
    hm = r["headline_metric"]
    for name, s in r["summary"].items():
        ci = s.get("headline_retention_ci")
        if ci and ci[1] - ci[0] > WIDE_RETENTION_CI:
            out.append(f"{name}: its {hm} ratio to the teacher is only known to lie in [{ci[0]:.2f}, {ci[1]:.2f}] "
                       f"(95% interval, wider than {WIDE_RETENTION_CI:.1f}): the test split is too small to measure "
                       f"it to +-{WIDE_RETENTION_CI / 2:.0%}.")
        elif s.get("headline_retention") is None and not s.get("verdict", "").startswith("better than teacher"):
            out.append(f"{name}: its {hm} ratio to the teacher is undefined (the teacher scores 0 or the metric "
                       "is undefined on this split).")
    return out
