"""report.json (versioned schema, see docs/report.md), report.md and the template's plot, written atomically.

Shape-agnostic: which metrics are compared with the teacher and which direction is better come from
the template; the speed figure is decisions/s (decision shape) or generated tokens/s (generation).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sdk.rundir import atomic_write_text

SCHEMA_VERSION = "1.4"  # 1.3: release gates (artifacts[].gate, gates); 1.4: gate verdict, retention_ci, n
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
        if s is None or t is None:  # undefined on the split (null in report.json since NaN is not JSON)
            out[k] = None
            continue
        if s == t:
            out[k] = 1.0  # also when both are 0
        elif _matches(k, lower_is_better):
            out[k] = (t / s) if s > 0 else None
        else:
            out[k] = (s / t) if t > 0 else None
    return out


def better_at_zero(student: float | None, teacher: float | None, lower: bool) -> str | None:
    """The verdict where the ratio is undefined because the student is better at a zero: a student scoring 0
    on a lower-is-better metric (no false positives) or a teacher scoring 0 on a higher-is-better one. None
    when the ratio is undefined for another reason (both undefined, the student at the worst end)."""
    if student is None or teacher is None or not (math.isfinite(student) and math.isfinite(teacher)):
        return None
    if lower and student == 0 < teacher:
        return "better than teacher (the student scores 0, the best value)"
    if not lower and teacher == 0 < student:
        return "better than teacher (the teacher scores 0)"
    return None


def verdict(ratio: float | None, ci: list[float] | None) -> str:
    """How a retention ratio reads: a ratio above 1 is a student better than its teacher (a weak-teacher
    sign), never a retention "gain"; within the interval of 1 it is "as good"."""
    if ratio is None:
        return "undefined"
    if ci and ci[0] > 1.0:
        return "better than teacher"
    if ratio > 1.0:
        return "as good as teacher (higher, within the interval)" if ci else "better than teacher"
    if ci and ci[1] >= 1.0:
        # the interval reaches 1: not shown to be worse, which is not "as good" (at 0% it would read absurdly)
        return f"keeps {ratio:.1%} (not shown to be worse: its interval reaches {ci[1]:.2f})"
    return f"keeps {ratio:.1%}"


def build_report(*, template: str, task: str, project: str, primary_metric: str, compared, lower_is_better,
                 artifacts: list[dict[str, Any]], data: dict[str, Any], machine: dict[str, Any],
                 stages: dict[str, Any], annotation: dict[str, Any] | None = None,
                 operating_point: dict[str, Any] | None = None, intervals: dict[str, Any] | None = None,
                 warnings: list[str] | None = None) -> dict[str, Any]:
    """`operating_point` (decision templates): {kind, value, description, metric}: every artifact's threshold
    was chosen on validation for this point and `metric` is the headline compared there. `intervals`: see
    evaluation.uncertainty.paired_bootstrap."""
    compared = list(compared)
    lower = sorted(lower_is_better)
    teacher = next(a for a in artifacts if a["role"] == "teacher")
    teacher_f16 = 2 * teacher["params"] if teacher.get("params") else None  # an API teacher has no size here
    speed = SPEED_KEY[task]
    headline = (operating_point or {}).get("metric") or primary_metric
    ret_ci = (intervals or {}).get("retention", {})
    rets = {a["name"]: retention(teacher["metrics"], a["metrics"], compared, lower)
            for a in artifacts if a["role"] == "student"}
    summary = {}
    for a in artifacts:
        if a["role"] == "student":
            r = rets[a["name"]]
            ci = ret_ci.get(a["name"], {})
            summary[a["name"]] = {
                "speedup_vs_teacher": a[speed] / teacher[speed] if teacher.get(speed) else None,
                "size_vs_teacher_f16": a["size_bytes"] / teacher_f16 if teacher_f16 else None,
                f"{primary_metric}_retention": r.get(primary_metric),
                f"{primary_metric}_retention_ci": ci.get(primary_metric),
                "headline_metric": headline,
                "headline_retention": r.get(headline),
                "headline_retention_ci": ci.get(headline),
                "verdict": verdict(r.get(headline), ci.get(headline)) if r.get(headline) is not None else (
                    better_at_zero(a["metrics"].get(headline), teacher["metrics"].get(headline),
                                   _matches(headline, lower)) or "undefined"),
            }
    notes = []
    # shown better: above 1 with an interval wholly above it (or none), or better at a zero
    better = [n for n, s in summary.items() if s["verdict"].startswith("better than teacher")]
    if better:
        notes.append(f"{', '.join(better)} score{'s' if len(better) == 1 else ''} higher than the teacher on "
                     f"{headline}: the teacher is weak on this data (the student learned from its filtered or "
                     "verified outputs, or the labels); read the student's own figures, not a retention above "
                     "100%, and compare with a plain baseline before trusting the teacher as the ceiling.")
    t_head = teacher["metrics"].get(headline)
    for b in (a for a in artifacts if a["role"] == "baseline"):
        r = retention(teacher["metrics"], b["metrics"], compared, lower).get(headline)
        b_ci = ret_ci.get(b["name"], {}).get(headline)
        if r is not None and t_head is not None and r > 1.0 and not (b_ci and b_ci[0] <= 1.0):  # shown higher
            notes.append(f"The plain baseline {b['name']} scores higher than the teacher on {headline} "
                         f"({_fmt(b['metrics'][headline])} vs {_fmt(t_head)}), at a fraction of the cost: the "
                         "teacher is not the ceiling on this data; distillation is worth it only where the LLM "
                         "adds what the baseline cannot (free-text fields, explanations, one model for many tasks).")
    gates = {a["name"]: a["gate"] for a in artifacts if a.get("gate")}
    failed = [n for n, g in gates.items() if gate_verdict(g) == "fail"]
    unsure = [n for n, g in gates.items() if gate_verdict(g) == "inconclusive"]
    warnings = list(warnings or [])
    if failed:
        g0 = gates[failed[0]]
        warnings.append(f"release gate failed for {', '.join(failed)}: {g0['metric']} on validation below "
                        f"{g0['min_retention']:.0%} of the unquantized student's; kept out of bundles")
    undefined = [n for n in unsure if gates[n].get("reason")]
    if undefined:
        warnings.append(f"release gate undecided for {', '.join(undefined)}: {gates[undefined[0]]['reason']}; "
                        "judge them by the test figures, or give the validation split both labels. Bundled only "
                        "when named.")
    unsure = [n for n in unsure if n not in undefined]
    if unsure:
        g0 = gates[unsure[0]]
        warnings.append(f"release gate inconclusive for {', '.join(unsure)}: {g0['metric']} on validation is below "
                        f"{g0['min_retention']:.0%} of the unquantized student's, but on {g0.get('n', '?')} examples "
                        "the paired interval of the retention still reaches the floor; judge them by the test "
                        "figures or gate on a larger validation split (data.n_val). Bundled only when named.")
    report = {
        "schema_version": SCHEMA_VERSION,
        "template": template,
        "task": task,
        "project": project,
        "primary_metric": primary_metric,
        "headline_metric": headline,
        "operating_point": operating_point,
        "compared_metrics": compared,
        "lower_is_better": lower,
        "speed_metric": speed,
        "data": data,
        "teacher_f16_bytes": teacher_f16,
        "artifacts": artifacts,
        "retention": rets,
        "summary": summary,
        "intervals": intervals,
        "gates": gates,
        "warnings": warnings,
        "notes": notes,
        "machine": machine,
        "stages": stages,
    }
    if annotation:
        report["annotation"] = annotation
    return report


def _mb(x: int | None) -> str:
    return "-" if x is None else f"{x / 1e6:.1f}"


def _n(x: int | None) -> str:
    return "-" if x is None else f"{x:,}"


def uses_thresholds(r: dict[str, Any]) -> bool:
    """Whether a decision report's artifacts decide by a threshold (a graded template takes the likeliest)."""
    return r.get("task", "decision") == "decision" and any(
        a["metrics"].get("threshold") is not None for a in r["artifacts"])


def class_balance(d: dict[str, Any], split: str) -> str:
    """`12 positive`, or per grade `zero 4, one 6, two 14` for a graded label."""
    counts = d.get(f"{split}_label_counts")
    if counts:
        return ", ".join(f"{word} {n}" for word, n in counts.items())
    return f"{d.get(f'{split}_positives', '?')} positive"


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _ci(ci: list[float] | None, nd: int = 3, pct: bool = False) -> str:
    if not ci:
        return ""
    return f" [{ci[0]:.1%}, {ci[1]:.1%}]" if pct else f" [{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]"


def _ratio(x: float | None, ci: list[float] | None = None, who: str = "student") -> str:
    """A retention ratio as read by a manager: above 1 is a better student, not a retention above 100%."""
    if x is None:
        return "-"
    if x > 1.0 and ci and ci[0] <= 1.0:  # higher here, but the interval holds 1: not shown better (verdict())
        return f"as good (x{x:.2f}){_ci(ci, 2)}"
    if x > 1.0:
        return f"{who} better (x{x:.2f}){_ci(ci, 2)}"
    return f"{x:.1%}{_ci(ci, pct=True)}"


def headline_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per artifact with what a manager reads first (also used by the HTML report)."""
    task, hm, pm = r.get("task", "decision"), r.get("headline_metric", r["primary_metric"]), r["primary_metric"]
    speed = r.get("speed_metric", SPEED_KEY[task])
    ivs = (r.get("intervals") or {}).get("metrics", {})
    cm = (r.get("operating_point") or {}).get("constraint_metric")
    teacher = next(a for a in r["artifacts"] if a["role"] == "teacher")
    rows = []
    for a in r["artifacts"]:
        s = r["summary"].get(a["name"], {})
        if a["role"] == "teacher":
            vs = "reference"
        elif a["role"] == "baseline":  # compared too, but it is not a distilled artifact: no "retention"
            vs = _ratio(retention(teacher["metrics"], a["metrics"], r["compared_metrics"], r["lower_is_better"])
                        .get(hm), ((r.get("intervals") or {}).get("retention", {}).get(a["name"], {})).get(hm),
                        who="baseline")
        else:
            vs = _ratio(s.get("headline_retention"), s.get("headline_retention_ci"))
            if s.get("headline_retention") is None and s.get("verdict", "").startswith("better than teacher"):
                vs = f"student {s['verdict']}"  # better at a zero, where no ratio exists
        rows.append({
            "name": a["name"], "role": a["role"], "format": a["format"], "quant": a["quant"],
            "variant": a.get("variant"),
            "headline": a["metrics"].get(hm), "headline_ci": ivs.get(a["name"], {}).get(hm),
            "primary": a["metrics"].get(pm), "primary_ci": ivs.get(a["name"], {}).get(pm),
            "threshold": a["metrics"].get("threshold"),
            "constraint": a["metrics"].get(cm) if cm else None,
            "size_mb": None if a.get("size_bytes") is None else a["size_bytes"] / 1e6, "p99_ms": a["latency_ms"]["p99"], "speed": a.get(speed),
            "speedup": s.get("speedup_vs_teacher"), "retention": s.get("headline_retention"),
            "retention_ci": s.get("headline_retention_ci"), "verdict": s.get("verdict", "reference"),
            "vs_teacher": vs, "gate": gate_verdict(a["gate"]) if a.get("gate") else None,
        })
    return rows


def gate_verdict(g: dict[str, Any]) -> str:
    """pass / fail / inconclusive (reports written before gates had three verdicts: pass / fail)."""
    return g.get("verdict") or ("pass" if g["passed"] else "fail")


def gate_rows(r: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The release gates as a table: every export against the unquantized student on validation."""
    gates = r.get("gates") or {}
    if not gates:
        return [], []
    any_gate = next(iter(gates.values()))
    metric = any_gate["metric"]
    parity_keys = list(any_gate.get("parity", {}))
    header = ["artifact", "gate", f"{metric} (val)", "student-torch", "retention [95%]", "floor", "n",
              *parity_keys]
    shown = {"pass": "pass", "fail": "FAILED", "inconclusive": "inconclusive"}

    def kept(g: dict[str, Any]) -> str:
        ci = g.get("retention_ci")
        return ("-" if g["retention"] is None else f"{g['retention']:.3f}") + (
            f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
    rows = [[name, shown[gate_verdict(g)], _fmt(g["value"]), _fmt(g["reference_value"]), kept(g),
             f"{g['min_retention']:.2f}", str(g.get("n", "-")),
             *(_fmt(g.get("parity", {}).get(k)) for k in parity_keys)] for name, g in gates.items()]
    return header, rows


def qad_rows(r: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Quantization-aware distillation side by side, per GGUF type: the control student (trained as many
    steps without fake quantization) in torch and in that GGUF type, the QAD student in it, and the share of
    the control's quantization loss that QAD won back ((QAD - GGUF) / (torch - GGUF); '-' when quantization
    lost nothing)."""
    pm = r["primary_metric"]
    lower = _matches(pm, r.get("lower_is_better", []))
    arts = r["artifacts"]
    qad = [a for a in arts if a.get("variant") == "qad"]
    control = {a["quant"]: a for a in arts if a.get("variant") == "qad_control"}
    main = {a["quant"]: a for a in arts if a["role"] == "student" and not a.get("variant")}
    if not qad:
        return [], []
    ref = control.get(None)
    header = ["GGUF type", f"{pm}: control torch", "control GGUF (no QAD)", "QAD GGUF", "loss recovered",
              "main student GGUF"]
    rows = []
    for a in qad:
        base, q = control.get(a["quant"]), a["metrics"].get(pm)
        recovered = None
        if ref is not None and base is not None and q is not None:
            lost = ref["metrics"][pm] - base["metrics"][pm]
            gained = q - base["metrics"][pm]
            if lower:
                lost, gained = -lost, -gained
            recovered = gained / lost if lost > 0 else None
        m = main.get(a["quant"])
        rows.append([a["quant"], _fmt(ref["metrics"][pm]) if ref else "-", _fmt(base["metrics"][pm]) if base else "-",
                     _fmt(q), "-" if recovered is None else f"{recovered:.0%}", _fmt(m["metrics"][pm]) if m else "-"])
    return header, rows


def breakdown_rows(b: dict[str, dict[str, float]] | None) -> tuple[list[str], list[list[str]]]:
    """The template's per-group accuracy ({artifact: {group: accuracy}}) as a header and rows."""
    if not b:
        return [], []
    groups = list(next(iter(b.values())))
    return ["artifact", *groups], [[name, *(_fmt(per.get(g)) for g in groups)] for name, per in b.items()]


def breakdown_lines(b: dict[str, dict[str, float]] | None) -> list[str]:
    header, rows = breakdown_rows(b)
    if not rows:
        return []
    return ["", "## Accuracy per group (test split)", "", "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header), *("| " + " | ".join(row) + " |" for row in rows)]


def to_markdown(r: dict[str, Any]) -> str:
    pm, task = r["primary_metric"], r.get("task", "decision")
    hm = r.get("headline_metric", pm)
    op = r.get("operating_point")
    skip = {"threshold", "positives", "n"}
    metric_names = [k for k in r["artifacts"][0]["metrics"] if k not in skip]
    compared = [k for k in metric_names if _matches(k, r["compared_metrics"])]
    d = r["data"]
    if task == "decision":
        held = (f"Held-out test: {d['n_test']} examples ({class_balance(d, 'test')}); "
                + ("thresholds chosen per artifact on" if uses_thresholds(r)
                   else "each artifact's decision is its most probable label; release gates judged on")
                + f" {d['n_val']} validation examples ({class_balance(d, 'val')}).")
    else:
        held = f"Held-out test: {d['n_test']} problems; completions generated greedily and checked by the verifier."
    lines = [f"# Distillation report: {r['project']} ({r['template']})", "",
             f"{held} Machine: {r['machine']['cpus']} CPUs, {r['machine']['platform']}.", ""]
    for w in r.get("warnings", []):
        lines += [f"> **Warning:** {w}", ""]
    if op:
        lines += [f"**Operating point:** {op['description']}. Every artifact's threshold is chosen on the validation "
                  f"split for this point; artifacts are compared on `{hm}` there.", ""]
    iv = r.get("intervals")
    ci_note = (f" Brackets: {iv['level']:.0%} intervals ({iv['method']}, {iv['resamples']} resamples)." if iv else "")
    lines += ["## Headline", "", f"`{hm}`" + (" at the operating point" if op else "") + (f", `{pm}`" if pm != hm else "")
              + ", cost and speed."
              + ci_note, ""]
    speed_label = SPEED_LABEL[task]
    cm = (op or {}).get("constraint_metric")
    hdr = (f"| artifact | {hm} | " + (f"{cm} on test | " if cm else "") + (f"{pm} | " if pm != hm else "")
           + ("threshold | " if uses_thresholds(r) else ""))
    hdr += f"size MB | P99 ms | {speed_label} | speed-up | {hm} vs teacher |"
    lines += [hdr, "|" + "---|" * (hdr.count("|") - 1)]
    for h in headline_rows(r):
        row = f"| {h['name']} | {_fmt(h['headline'])}{_ci(h['headline_ci'])} | "
        if cm:
            row += f"{_fmt(h['constraint'])} | "
        if pm != hm:
            row += f"{_fmt(h['primary'])}{_ci(h['primary_ci'])} | "
        if uses_thresholds(r):
            row += f"{_fmt(h['threshold'], 4)} | "
        sp = "-" if h["speedup"] is None else f"{h['speedup']:.2f}x"
        vs = h["vs_teacher"]
        row += f"{_fmt(h['size_mb'], 1)} | {h['p99_ms']:.1f} | {_fmt(h['speed'], 1)} | {sp} | {vs} |"
        lines.append(row)
    for n in r.get("notes", []):
        lines += ["", f"> **Note:** {n}"]
    lines += ["", "![report figure](report.png)", ""]
    header, rows = gate_rows(r)
    if rows:
        lines += ["## Release gates (validation split, against the unquantized student)", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                  *("| " + " | ".join(row) + " |" for row in rows), ""]
    ann = r.get("annotation")
    if ann and ann.get("kind") == "generation":
        lines += ["## Teacher completions (rejection sampling)", "",
                  f"The teacher ({ann['teacher_runtime']}) sampled {ann['samples']} completions for {ann['prompts']} "
                  f"training prompts; the verifier accepted {ann['accepted_samples']} ({ann['yield']:.1%}); "
                  f"{ann['prompts_with_accepted']} prompts ({ann['prompt_yield']:.1%}) have at least one; "
                  f"{ann['training_examples']} distinct accepted completions became training targets."
                  + (f" Teacher top-k targets take {ann['topk_bytes_per_token']:.0f} bytes per response token in "
                     "training" if ann.get("topk_bytes_per_token") else "")
                  + (f", {ann['signals']['store_bytes_per_token']:.1f} in the teacher-signal store (compressed; "
                     f"DistillKit publishes ~300); {ann['signals']['rows_from_store']} of "
                     f"{ann['signals']['rows_from_store'] + ann['signals']['rows_scored_by_teacher']} rows came from "
                     "the store" if (ann.get("signals") or {}).get("store_bytes_per_token") else "")
                  + ("." if ann.get("topk_bytes_per_token") else ""), ""]
    al = (ann or {}).get("alignment")
    if al:
        lines += [f"**The teacher's tokenizer is not the student's** (teacher vocabulary {al['teacher_vocab']:,}): its "
                  f"targets are aligned by {al['method']}"
                  + (f" ({al['aligned_positions']:,} of {al['student_positions']:,} response positions, "
                     f"{al['aligned_share']:.0%})" if "aligned_share" in al else "") + ".", ""]
    lines += ["## Quality" + (" at the operating point" if op else ""), "",
              "| artifact | role | format | quant | " + " | ".join(metric_names) + " |",
              "|" + "---|" * (4 + len(metric_names))]
    for a in r["artifacts"]:
        lines.append(f"| {a['name']} | {a['role']} | {a['format']} | {a['quant'] or '-'} | "
                     + " | ".join(_fmt(a["metrics"].get(m)) for m in metric_names) + " |")
    lines += breakdown_lines(r.get("breakdown"))
    ret_ci = (iv or {}).get("retention", {})
    lines += ["", "## Student vs teacher (student/teacher; where lower is better teacher/student: 1.0 = as good, "
              "above 1 = student better)", "",
              "| artifact | " + " | ".join(compared) + " |", "|" + "---|" * (1 + len(compared))]
    for name, ret in r["retention"].items():
        lines.append(f"| {name} | " + " | ".join(_ratio(ret.get(m), ret_ci.get(name, {}).get(m)) for m in compared)
                     + " |")
    if task == "decision":
        lines += ["", "## Cost", "",
                  "| artifact | params | size MB | bits/weight | P50 ms | P99 ms | decisions/s (batch 1) "
                  "| batched/s | peak RSS MiB | threads |", "|" + "---|" * 10]
        for a in r["artifacts"]:
            lines.append(f"| {a['name']} | {_n(a['params'])} | {_mb(a.get('size_bytes'))} | "
                         f"{_fmt(a.get('bits_per_weight'), 2)} | {a['latency_ms']['p50']:.1f} | "
                         f"{a['latency_ms']['p99']:.1f} | {a['decisions_per_s']:.1f} | "
                         f"{a['batched_decisions_per_s']:.1f} | {_fmt(a['peak_rss_mb'], 0)} | {a['threads']} |")
    else:
        lines += ["", "## Cost (latency per problem at batch 1, greedy)", "",
                  "| artifact | params | size MB | bits/weight | P50 ms | P99 ms | tokens/s (batch 1) | TTFT ms "
                  "| batched tokens/s | peak RSS MiB | threads |", "|" + "---|" * 11]
        for a in r["artifacts"]:
            lines.append(f"| {a['name']} | {_n(a['params'])} | {_mb(a.get('size_bytes'))} | "
                         f"{_fmt(a.get('bits_per_weight'), 2)} | {a['latency_ms']['p50']:.0f} | "
                         f"{a['latency_ms']['p99']:.0f} | {a['tokens_per_s']:.1f} | {a['ttft_ms']['p50']:.1f} | "
                         f"{a['batched_tokens_per_s']:.1f} | {_fmt(a['peak_rss_mb'], 0)} | {a['threads']} |")
    usage = [(a["name"], a["usage"]) for a in r["artifacts"] if a.get("usage")]
    annotated = (r.get("annotation") or {}).get("teacher_usage")
    if annotated or usage:
        lines += ["", "## Teacher API usage", "", "| step | calls | from cache | prompt tokens | completion tokens "
                  "| reasoning tokens | cost |", "|---|---|---|---|---|---|---|"]
        for step, u in ([("annotate", annotated)] if annotated else []) + usage:
            lines.append(f"| {step} | {u['calls']} | {u['cache_hits']} | {u['prompt_tokens']:,} | "
                         f"{u['completion_tokens']:,} | {u.get('reasoning_tokens', 0):,} | {u['cost']:.4f} |")
    f16 = r.get("teacher_f16_bytes")
    lines += ["", "## Summary" + (f" (teacher F16 size {f16 / 1e6:.1f} MB)" if f16 else " (the teacher is an API)"), "",
              f"| student | speed-up vs teacher ({SPEED_LABEL[task]}) | size vs teacher F16 | {hm} vs teacher |"
              + ("" if hm == pm else f" {pm} vs teacher |"), "|---|---|---|---|" + ("" if hm == pm else "---|")]
    vs = {h["name"]: h["vs_teacher"] for h in headline_rows(r)}  # one wording: the headline table's
    for name, s in r["summary"].items():
        size, sp = s["size_vs_teacher_f16"], s["speedup_vs_teacher"]
        lines.append(f"| {name} | {'-' if sp is None else f'{sp:.2f}x'} | {'-' if size is None else f'{size:.1%}'} | "
                     f"{vs.get(name) or _ratio(s.get('headline_retention'), s.get('headline_retention_ci'))} |"
                     + ("" if hm == pm else f" {_ratio(s[f'{pm}_retention'], s.get(f'{pm}_retention_ci'))} |"))
    twins = {"sequence_kd": "sequence-level KD alone", "fine_tuned": "labels alone (plain fine-tuning)"}
    variants = [a for a in r["artifacts"] if a.get("variant") in twins]
    if variants:
        kinds = sorted({a["variant"] for a in variants})
        lines += ["", "## What the teacher's distributions add (same student, same data, same steps)", "",
                  f"| quant | {' / '.join(twins[k] for k in kinds)}: {pm} | with the teacher's distributions: {pm} |",
                  "|---|---|---|"]
        main = {a["quant"]: a for a in r["artifacts"] if a["role"] == "student" and not a.get("variant")}
        ivm = (iv or {}).get("metrics", {})
        for v in variants:
            m = main.get(v["quant"])
            lines.append(f"| {v['quant'] or 'torch'} | {_fmt(v['metrics'][pm])}{_ci(ivm.get(v['name'], {}).get(pm))} | "
                         + (f"{_fmt(m['metrics'][pm])}{_ci(ivm.get(m['name'], {}).get(pm))} |" if m else "- |"))
    header, rows = qad_rows(r)
    if rows:
        lines += ["", "## Quantization-aware distillation (same student, same total steps)", "",
                  "The control continues training as many steps as the QAD student, without fake quantization; "
                  "both are exported by llama.cpp's quantizer.", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "## Stages", "", "| stage | seconds | note |", "|---|---|---|"]
    for name, st in r["stages"].items():
        lines.append(f"| {name} | {st.get('seconds', 0):.0f} | {st.get('note', '')} |")
    return "\n".join(lines) + "\n"


def _finite(x: Any) -> Any:
    """x with every NaN or infinite float replaced by None."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def write_report(report: dict[str, Any], run_dir: Path) -> dict[str, Path]:
    """report.json, report.md and report.html (the figures report.png and tradeoffs.png are written first,
    by the report stage, and embedded in the HTML)."""
    from evaluation.html import to_html

    paths = {"json": run_dir / "report.json", "md": run_dir / "report.md", "html": run_dir / "report.html"}
    # NaN (a metric undefined on a split: ROC-AUC of one class) as null: NaN is not JSON (browsers' parsers refuse it)
    atomic_write_text(paths["json"], json.dumps(_finite(report), indent=2, allow_nan=False))
    atomic_write_text(paths["md"], to_markdown(report))
    atomic_write_text(paths["html"], to_html(report, run_dir))
    return paths
