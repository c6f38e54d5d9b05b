"""report.json (versioned schema, see docs/report.md), report.md and a plot, written atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdk.rundir import atomic_write_text

SCHEMA_VERSION = "1.0"
# metrics where lower is better: their retention is reported as teacher/student so 1.0+ means "as good"
LOWER_IS_BETTER = {"fpr"}
SKIP_RETENTION = {"threshold", "positives", "n"}


def retention(teacher: dict[str, float], student: dict[str, float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k, t in teacher.items():
        if k in SKIP_RETENTION or k not in student:
            continue
        s = student[k]
        if s == t:
            out[k] = 1.0  # also when both are 0
        elif k in LOWER_IS_BETTER or k.startswith("fpr_at"):
            out[k] = (t / s) if s > 0 else None
        else:
            out[k] = (s / t) if t > 0 else None
    return out


def build_report(*, template: str, project: str, primary_metric: str, artifacts: list[dict[str, Any]],
                 data: dict[str, Any], machine: dict[str, Any], stages: dict[str, Any]) -> dict[str, Any]:
    teacher = next(a for a in artifacts if a["role"] == "teacher")
    teacher_f16 = 2 * teacher["params"]
    summary = {}
    for a in artifacts:
        if a["role"] == "student":
            summary[a["name"]] = {
                "speedup_vs_teacher": a["decisions_per_s"] / teacher["decisions_per_s"],
                "size_vs_teacher_f16": a["size_bytes"] / teacher_f16 if teacher_f16 else None,
                f"{primary_metric}_retention": retention(teacher["metrics"], a["metrics"]).get(primary_metric),
            }
    return {
        "schema_version": SCHEMA_VERSION,
        "template": template,
        "project": project,
        "primary_metric": primary_metric,
        "data": data,
        "teacher_f16_bytes": teacher_f16,
        "artifacts": artifacts,
        "retention": {a["name"]: retention(teacher["metrics"], a["metrics"])
                      for a in artifacts if a["role"] == "student"},
        "summary": summary,
        "machine": machine,
        "stages": stages,
    }


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def to_markdown(r: dict[str, Any]) -> str:
    pm = r["primary_metric"]
    metric_names = [k for k in r["artifacts"][0]["metrics"] if k not in SKIP_RETENTION]
    lines = [f"# Distillation report: {r['project']} ({r['template']})", "",
             f"Held-out test: {r['data']['n_test']} examples ({r['data']['test_positives']} positive); "
             f"thresholds chosen on {r['data']['n_val']} validation examples. "
             f"Machine: {r['machine']['cpus']} CPUs, {r['machine']['platform']}.", "",
             "![ROC curves and quality vs speed](report.png)", "",
             "## Quality", "", "| artifact | role | format | quant | " + " | ".join(metric_names) + " |",
             "|" + "---|" * (4 + len(metric_names))]
    for a in r["artifacts"]:
        lines.append(f"| {a['name']} | {a['role']} | {a['format']} | {a['quant'] or '-'} | "
                     + " | ".join(_fmt(a["metrics"][m]) for m in metric_names) + " |")
    lines += ["", "## Retention vs teacher (1.0 = as good; for FPR: teacher/student)", "",
              "| artifact | " + " | ".join(metric_names) + " |", "|" + "---|" * (1 + len(metric_names))]
    for name, ret in r["retention"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(ret.get(m)) for m in metric_names) + " |")
    lines += ["", "## Cost", "",
              "| artifact | params | size MB | bits/weight | P50 ms | P99 ms | decisions/s (batch 1) "
              "| batched/s | peak RSS MB | threads |", "|" + "---|" * 10]
    for a in r["artifacts"]:
        lines.append(f"| {a['name']} | {a['params']:,} | {a['size_bytes'] / 1e6:.1f} | "
                     f"{_fmt(a.get('bits_per_weight'), 2)} | {a['latency_ms']['p50']:.1f} | "
                     f"{a['latency_ms']['p99']:.1f} | {a['decisions_per_s']:.1f} | "
                     f"{a['batched_decisions_per_s']:.1f} | {a['peak_rss_mb']:.0f} | {a['threads']} |")
    lines += ["", f"## Summary (teacher F16 size {r['teacher_f16_bytes'] / 1e6:.1f} MB)", "",
              f"| student | speed-up vs teacher | size vs teacher F16 | {pm} retention |", "|---|---|---|---|"]
    for name, s in r["summary"].items():
        size, ret = s["size_vs_teacher_f16"], s[f"{pm}_retention"]
        lines.append(f"| {name} | {s['speedup_vs_teacher']:.2f}x | {'-' if size is None else f'{size:.1%}'} | "
                     f"{'-' if ret is None else f'{ret:.1%}'} |")
    lines += ["", "## Stages", "", "| stage | seconds | note |", "|---|---|---|"]
    for name, st in r["stages"].items():
        lines.append(f"| {name} | {st.get('seconds', 0):.0f} | {st.get('note', '')} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], run_dir: Path) -> dict[str, Path]:
    paths = {"json": run_dir / "report.json", "md": run_dir / "report.md"}
    atomic_write_text(paths["json"], json.dumps(report, indent=2))
    atomic_write_text(paths["md"], to_markdown(report))
    return paths
