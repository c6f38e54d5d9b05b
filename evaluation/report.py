"""report.json (versioned schema, see docs/report.md), report.md and the template's plot, written atomically.

Shape-agnostic: which metrics are compared with the teacher and which direction is better come from
the template; the speed figure is decisions/s (decision shape) or generated tokens/s (generation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdk.rundir import atomic_write_text

SCHEMA_VERSION = "1.1"
SPEED_KEY = {"decision": "decisions_per_s", "generation": "tokens_per_s"}
SPEED_LABEL = {"decision": "decisions/s (batch 1)", "generation": "tokens/s (batch 1)"}


def _matches(name: str, names) -> bool:
    """`name` is one of `names` or a parameterised form of one (fpr -> fpr_at_recall_0.8 is not: the
    prefix must be followed by '_' and the base name must be listed)."""
    return any(name == n or name.startswith(n + "_") for n in names)


def retention(teacher: dict[str, float], student: dict[str, float], compared, lower_is_better) -> dict[str, float | None]:
    """student/teacher per compared metric; teacher/student where lower is better (1.0 = as good)."""
    out: dict[str, float | None] = {}
    for k, t in teacher.items():
        if not _matches(k, compared) or k not in student:
            continue
        s = student[k]
        if s == t:
            out[k] = 1.0  # also when both are 0
        elif _matches(k, lower_is_better):
            out[k] = (t / s) if s > 0 else None
        else:
            out[k] = (s / t) if t > 0 else None
    return out


def build_report(*, template: str, task: str, project: str, primary_metric: str, compared, lower_is_better,
                 artifacts: list[dict[str, Any]], data: dict[str, Any], machine: dict[str, Any],
                 stages: dict[str, Any], annotation: dict[str, Any] | None = None) -> dict[str, Any]:
    compared = list(compared)
    lower = sorted(lower_is_better)
    teacher = next(a for a in artifacts if a["role"] == "teacher")
    teacher_f16 = 2 * teacher["params"]
    speed = SPEED_KEY[task]
    summary = {}
    for a in artifacts:
        if a["role"] == "student":
            summary[a["name"]] = {
                "speedup_vs_teacher": a[speed] / teacher[speed] if teacher.get(speed) else None,
                "size_vs_teacher_f16": a["size_bytes"] / teacher_f16 if teacher_f16 else None,
                f"{primary_metric}_retention": retention(teacher["metrics"], a["metrics"], compared, lower).get(primary_metric),
            }
    report = {
        "schema_version": SCHEMA_VERSION,
        "template": template,
        "task": task,
        "project": project,
        "primary_metric": primary_metric,
        "compared_metrics": compared,
        "lower_is_better": lower,
        "speed_metric": speed,
        "data": data,
        "teacher_f16_bytes": teacher_f16,
        "artifacts": artifacts,
        "retention": {a["name"]: retention(teacher["metrics"], a["metrics"], compared, lower)
                      for a in artifacts if a["role"] == "student"},
        "summary": summary,
        "machine": machine,
        "stages": stages,
    }
    if annotation:
        report["annotation"] = annotation
    return report


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def to_markdown(r: dict[str, Any]) -> str:
    pm, task = r["primary_metric"], r.get("task", "decision")
    speed = r.get("speed_metric", SPEED_KEY[task])
    skip = {"threshold", "positives", "n"}
    metric_names = [k for k in r["artifacts"][0]["metrics"] if k not in skip]
    compared = [k for k in metric_names if _matches(k, r["compared_metrics"])]
    d = r["data"]
    if task == "decision":
        held = (f"Held-out test: {d['n_test']} examples ({d.get('test_positives', '?')} positive); thresholds chosen "
                f"on {d['n_val']} validation examples.")
    else:
        held = f"Held-out test: {d['n_test']} problems; completions generated greedily and checked by the verifier."
    lines = [f"# Distillation report: {r['project']} ({r['template']})", "",
             f"{held} Machine: {r['machine']['cpus']} CPUs, {r['machine']['platform']}.", "",
             "![report figure](report.png)", ""]
    ann = r.get("annotation")
    if ann and ann.get("kind") == "generation":
        lines += ["## Teacher completions (rejection sampling)", "",
                  f"The teacher ({ann['teacher_runtime']}) sampled {ann['samples']} completions for {ann['prompts']} "
                  f"training prompts; the verifier accepted {ann['accepted_samples']} ({ann['yield']:.1%}); "
                  f"{ann['prompts_with_accepted']} prompts ({ann['prompt_yield']:.1%}) have at least one; "
                  f"{ann['training_examples']} distinct accepted completions became training targets."
                  + (f" Teacher top-k targets take {ann['topk_bytes_per_token']:.0f} bytes per response token."
                     if ann.get("topk_bytes_per_token") else ""), ""]
    lines += ["## Quality", "", "| artifact | role | format | quant | " + " | ".join(metric_names) + " |",
              "|" + "---|" * (4 + len(metric_names))]
    for a in r["artifacts"]:
        lines.append(f"| {a['name']} | {a['role']} | {a['format']} | {a['quant'] or '-'} | "
                     + " | ".join(_fmt(a["metrics"].get(m)) for m in metric_names) + " |")
    lines += ["", "## Retention vs teacher (1.0 = as good; where lower is better: teacher/student)", "",
              "| artifact | " + " | ".join(compared) + " |", "|" + "---|" * (1 + len(compared))]
    for name, ret in r["retention"].items():
        lines.append(f"| {name} | " + " | ".join(_fmt(ret.get(m)) for m in compared) + " |")
    if task == "decision":
        lines += ["", "## Cost", "",
                  "| artifact | params | size MB | bits/weight | P50 ms | P99 ms | decisions/s (batch 1) "
                  "| batched/s | peak RSS MB | threads |", "|" + "---|" * 10]
        for a in r["artifacts"]:
            lines.append(f"| {a['name']} | {a['params']:,} | {a['size_bytes'] / 1e6:.1f} | "
                         f"{_fmt(a.get('bits_per_weight'), 2)} | {a['latency_ms']['p50']:.1f} | "
                         f"{a['latency_ms']['p99']:.1f} | {a['decisions_per_s']:.1f} | "
                         f"{a['batched_decisions_per_s']:.1f} | {a['peak_rss_mb']:.0f} | {a['threads']} |")
    else:
        lines += ["", "## Cost (latency per problem at batch 1, greedy)", "",
                  "| artifact | params | size MB | bits/weight | P50 ms | P99 ms | tokens/s (batch 1) | TTFT ms "
                  "| batched tokens/s | peak RSS MB | threads |", "|" + "---|" * 11]
        for a in r["artifacts"]:
            lines.append(f"| {a['name']} | {a['params']:,} | {a['size_bytes'] / 1e6:.1f} | "
                         f"{_fmt(a.get('bits_per_weight'), 2)} | {a['latency_ms']['p50']:.0f} | "
                         f"{a['latency_ms']['p99']:.0f} | {a['tokens_per_s']:.1f} | {a['ttft_ms']['p50']:.1f} | "
                         f"{a['batched_tokens_per_s']:.1f} | {a['peak_rss_mb']:.0f} | {a['threads']} |")
    lines += ["", f"## Summary (teacher F16 size {r['teacher_f16_bytes'] / 1e6:.1f} MB)", "",
              f"| student | speed-up vs teacher ({SPEED_LABEL[task]}) | size vs teacher F16 | {pm} retention |",
              "|---|---|---|---|"]
    for name, s in r["summary"].items():
        size, ret, sp = s["size_vs_teacher_f16"], s[f"{pm}_retention"], s["speedup_vs_teacher"]
        lines.append(f"| {name} | {'-' if sp is None else f'{sp:.2f}x'} | {'-' if size is None else f'{size:.1%}'} | "
                     f"{'-' if ret is None else f'{ret:.1%}'} |")
    variants = [a for a in r["artifacts"] if a.get("variant") == "sequence_kd"]
    if variants:
        lines += ["", "## What the teacher's distributions add (same steps)", "",
                  f"| quant | sequence-level KD alone: {pm} | + token-level KD: {pm} |", "|---|---|---|"]
        main = {a["quant"]: a for a in r["artifacts"] if a["role"] == "student" and not a.get("variant")}
        for v in variants:
            m = main.get(v["quant"])
            lines.append(f"| {v['quant'] or 'torch'} | {_fmt(v['metrics'][pm])} | "
                         f"{_fmt(m['metrics'][pm]) if m else '-'} |")
    lines += ["", "## Stages", "", "| stage | seconds | note |", "|---|---|---|"]
    for name, st in r["stages"].items():
        lines.append(f"| {name} | {st.get('seconds', 0):.0f} | {st.get('note', '')} |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], run_dir: Path) -> dict[str, Path]:
    paths = {"json": run_dir / "report.json", "md": run_dir / "report.md"}
    atomic_write_text(paths["json"], json.dumps(report, indent=2))
    atomic_write_text(paths["md"], to_markdown(report))
    return paths
