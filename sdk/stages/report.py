"""report: report.json, report.md and the template's figure (report.png) from the evaluation."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from sdk.rundir import RunDir
from sdk.stages import Context


def inputs(ctx: Context) -> Any:
    return [ctx.config.name]


def outputs(run: RunDir) -> list[Path]:
    return [run.path("report.json"), run.path("report.md"), run.path("report.png")]


def run(ctx: Context) -> dict[str, Any]:
    from evaluation.report import build_report, write_report
    from sdk.stages.evaluate import load_details

    t, run_dir = ctx.template, ctx.run
    parts = run_dir.splits()
    entries = run_dir.read_json("evaluation/artifacts.json")
    stages = {k: {"seconds": v.get("seconds", 0), "note": v.get("note", "")}
              for k, v in run_dir.manifest["stages"].items() if k != "report"}
    data = {"n_train": len(parts["train"]), "n_val": len(parts["val"]), "n_test": len(parts["test"])}
    if "label" in parts["test"]:
        data["test_positives"] = int((parts["test"]["label"] > 0).sum())
    annotation = run_dir.read_json("annotations/annotations.json")
    report = build_report(
        template=t.name, task=t.task, project=ctx.config.name, primary_metric=t.primary_metric,
        compared=t.retention_metrics, lower_is_better=t.lower_is_better, artifacts=entries, data=data,
        machine={"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        stages=stages, annotation={k: v for k, v in annotation.items() if k != "per_prompt_accepted"})
    t.plot(report, load_details(run_dir, [e["name"] for e in entries]), parts["test"], run_dir.path("report.png"))
    write_report(report, run_dir.root)
    return {"note": "report.json, report.md, report.png"}
