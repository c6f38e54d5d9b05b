"""report.html: one self-contained page (inline CSS, figures embedded as data URIs, no network assets)
with what a manager reads first: warnings, the operating point, a card per artifact, the figures, the
tables of report.md and the stage timeline. Built from report.json alone, so it carries the same facts."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from evaluation.report import (SPEED_LABEL, _ci, _fmt, _n, _ratio, breakdown_rows, class_balance, gate_rows,
                               headline_rows, qad_rows, uses_thresholds)

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;
color:#1d2330;background:#fff;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
.sub{color:#5a6475;margin-bottom:14px}
.warn{background:#fff4e0;border-left:5px solid #e69500;padding:8px 12px;margin:8px 0}
.note{background:#eef5ff;border-left:5px solid #3b7dd8;padding:8px 12px;margin:8px 0}
.op{background:#f3f6fa;border:1px solid #dde2ea;padding:8px 12px;border-radius:6px;margin:10px 0}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:12px;margin:12px 0}
.card{border:1px solid #dde2ea;border-radius:8px;padding:12px 14px;background:#fafbfd}
.card.teacher{background:#f6f3ff;border-color:#cfc4f2}.card.baseline{background:#f4f8f1;border-color:#c9dcbc}
.card h3{font-size:14px;margin:0 0 6px;word-break:break-all}
.big{font-size:28px;font-weight:650}.ci{color:#5a6475;font-size:13px}
.kv{display:grid;grid-template-columns:auto auto;gap:2px 10px;font-size:13px;margin-top:8px}
.kv span:nth-child(odd){color:#5a6475}
.verdict{font-size:13px;margin-top:6px;font-weight:600}
.good{color:#1d7a3a}.bad{color:#b3261e}
table{border-collapse:collapse;font-size:13px;margin:6px 0;width:100%}
th,td{border:1px solid #dde2ea;padding:4px 7px;text-align:right}th{background:#f3f6fa}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;border:1px solid #eef0f4;margin:6px 0}
.tl{display:flex;height:28px;border-radius:4px;overflow:hidden;margin:8px 0;border:1px solid #dde2ea}
.tl div{color:#fff;font-size:11px;line-height:28px;text-align:center;overflow:hidden;white-space:nowrap}
"""
_STAGE_COLORS = ["#3b7dd8", "#6a4fc8", "#1d9a8a", "#d8833b", "#c84f7a", "#5a8f29", "#8a6d3b", "#4f6ac8"]


def _img(path: Path, alt: str) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(header: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _card(h: dict[str, Any], hm: str, task: str, op: dict[str, Any] | None) -> str:
    role = h["role"]
    verdict = {"teacher": "reference (the teacher)", "baseline": "plain baseline (no LLM)"}.get(role, h["verdict"])
    # green: keeps 90% of the teacher (or is better at a zero) and did not fail its release gate
    kept = (h["retention"] or 0) >= 0.9 or str(h["verdict"]).startswith("better than teacher")
    cls = ("good" if kept and h.get("gate") != "fail" else "bad") if role == "student" else ""
    ci = h["headline_ci"]
    kv = [(f"{hm} vs teacher", "-" if role == "teacher" else h["vs_teacher"]),
          ("size", "- (an API)" if h["size_mb"] is None else f"{h['size_mb']:.1f} MB"), ("P99 latency", f"{h['p99_ms']:.1f} ms"),
          (SPEED_LABEL[task], _fmt(h["speed"], 1)),
          ("speed-up", "-" if h["speedup"] is None else f"{h['speedup']:.2f}x")]
    if task == "decision" and h["threshold"] is not None:
        kv.append(("threshold", f"{h['threshold']:.4g}"))
    if h.get("gate"):
        kv.append(("release gate", {"fail": "FAILED"}.get(h["gate"], h["gate"])))
    if op and op.get("constraint_metric") and h["constraint"] is not None:
        kv.insert(0, (f"{op['constraint_metric']} on test", _fmt(h["constraint"])))
    rows = "".join(f"<span>{html.escape(k)}</span><span>{html.escape(str(v))}</span>" for k, v in kv)
    return (f'<div class="card {role}"><h3>{html.escape(h["name"])}</h3>'
            f'<div class="big">{_fmt(h["headline"])}</div>'
            f'<div class="ci">{html.escape(hm)}{" at the operating point" if op else ""}'
            f'{"<br>95% interval " + html.escape(_ci(ci).strip()) if ci else ""}</div>'
            f'<div class="verdict {cls}">{html.escape(verdict)}</div><div class="kv">{rows}</div></div>')


def _timeline(stages: dict[str, Any]) -> str:
    total = sum(max(s.get("seconds", 0), 0) for s in stages.values()) or 1.0
    parts = []
    for i, (name, s) in enumerate(stages.items()):
        sec = max(s.get("seconds", 0), 0)
        width = 100 * sec / total
        if width <= 0:
            continue
        parts.append(f'<div style="width:{width:.2f}%;background:{_STAGE_COLORS[i % len(_STAGE_COLORS)]}" '
                     f'title="{html.escape(name)}: {sec:.0f} s">{html.escape(name) if width > 6 else ""}</div>')
    rows = [[n, f"{s.get('seconds', 0):.0f}", f"{100 * s.get('seconds', 0) / total:.0f}%", s.get("note", "")]
            for n, s in stages.items()]
    return (f'<div class="tl">{"".join(parts)}</div><div class="sub">total {total / 60:.1f} min</div>'
            + _table(["stage", "seconds", "share", "note"], rows))


def to_html(r: dict[str, Any], run_dir: Path) -> str:
    task, pm = r.get("task", "decision"), r["primary_metric"]
    hm, op = r.get("headline_metric", pm), r.get("operating_point")
    d = r["data"]
    held = (f"{d['n_test']} held-out examples ({class_balance(d, 'test')}), "
            + ("thresholds chosen on " if uses_thresholds(r) else "most probable label decides, gates judged on ")
            + f"{d['n_val']} validation examples" if task == "decision" else f"{d['n_test']} held-out problems")
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>Distillation report: "
           f"{html.escape(r['project'])}</title><style>{_CSS}</style></head><body>",
           f"<h1>Distillation report: {html.escape(r['project'])}</h1>",
           f"<div class='sub'>template {html.escape(r['template'])} · {html.escape(held)} · "
           f"{r['machine']['cpus']} CPUs · schema {r['schema_version']}</div>"]
    out += [f"<div class='warn'><b>Warning:</b> {html.escape(w)}</div>" for w in r.get("warnings", [])]
    if op:
        out.append(f"<div class='op'><b>Operating point:</b> {html.escape(op['description'])}. Every artifact's "
                   f"threshold is chosen on validation for this point; they are compared on <b>{html.escape(hm)}"
                   f"</b> there.</div>")
    out.append("<h2>Summary</h2><div class='cards'>"
               + "".join(_card(h, hm, task, op) for h in headline_rows(r)) + "</div>")
    out += [f"<div class='note'><b>Note:</b> {html.escape(n)}</div>" for n in r.get("notes", [])]
    iv = r.get("intervals")
    if iv:
        out.append(f"<div class='sub'>Intervals: {iv['level']:.0%}, {html.escape(iv['method'])}, "
                   f"{iv['resamples']} resamples.</div>")
    out.append("<h2>Domain figures</h2>" + _img(run_dir / "report.png", "domain figure"))
    out.append("<h2>Quality vs speed and size</h2>" + _img(run_dir / "tradeoffs.png", "quality vs speed and size"))
    skip = {"threshold", "positives", "n"}
    names = [k for k in r["artifacts"][0]["metrics"] if k not in skip]
    out.append("<h2>Quality" + (" at the operating point" if op else "") + "</h2>" + _table(
        ["artifact", *names], [[a["name"], *(_fmt(a["metrics"].get(m)) for m in names)] for a in r["artifacts"]]))
    header, rows = gate_rows(r)
    if rows:
        out.append("<h2>Release gates</h2><div class='sub'>every export against the unquantized student on the "
                   "validation split; a failed one is kept out of bundles, an inconclusive one (too few validation "
                   "examples to tell) goes in only when named.</div>" + _table(header, rows))
    header, rows = breakdown_rows(r.get("breakdown"))
    if rows:
        out.append("<h2>Accuracy per group</h2>" + _table(header, rows))
    header, rows = qad_rows(r)
    if rows:
        out.append("<h2>Quantization-aware distillation</h2><div class='sub'>same student, same total steps: the "
                   "control trains as long without fake quantization; both exported by llama.cpp's quantizer."
                   "</div>" + _table(header, rows))
    ret_ci = (iv or {}).get("retention", {})
    compared = [k for k in names if any(k in ret for ret in r["retention"].values())]
    out.append("<h2>Student vs teacher</h2><div class='sub'>student/teacher (teacher/student where lower is "
               "better): 1.0 = as good; above 1 = student better.</div>" + _table(
                   ["artifact", *compared],
                   [[n, *(_ratio(ret.get(m), ret_ci.get(n, {}).get(m)) for m in compared)]
                    for n, ret in r["retention"].items()]))
    speed = r["speed_metric"]
    out.append("<h2>Cost</h2>" + _table(
        ["artifact", "params", "size MB", "bits/weight", "P50 ms", "P99 ms", SPEED_LABEL[task], "peak RSS MiB",
         "threads"],
        [[a["name"], f"{_n(a['params'])}", _fmt(None if a.get("size_bytes") is None else a["size_bytes"] / 1e6, 1), _fmt(a.get("bits_per_weight"), 2),
          f"{a['latency_ms']['p50']:.1f}", f"{a['latency_ms']['p99']:.1f}", _fmt(a.get(speed), 1),
          f"{_fmt(a['peak_rss_mb'], 0)}", str(a["threads"])] for a in r["artifacts"]]))
    ann = r.get("annotation")
    if ann and ann.get("kind") == "generation":
        out.append(f"<h2>Teacher completions</h2><p>The teacher sampled {ann['samples']} completions for "
                   f"{ann['prompts']} training prompts; the verifier accepted {ann['accepted_samples']} "
                   f"({ann['yield']:.1%}); {ann['training_examples']} became training targets.</p>")
    out.append("<h2>Stage timeline</h2>" + _timeline(r["stages"]))
    out.append("</body></html>")
    return "\n".join(out)
