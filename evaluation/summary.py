"""The README's figures, generated from a run's report.json so they cannot drift from what a run produced.

    python -m evaluation.summary README.md fraud=runs/fraud-demo/report.json code=runs/code-demo/report.json

replaces the block between `<!-- figures:fraud -->` and `<!-- /figures:fraud -->` (and so on) with a table
of every artifact (headline metric with its 95% interval, size, speed, P99, ratio to the teacher) and the
run's facts (date, machine, stage time). `make readme-figures` runs it on the demo folders.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from evaluation.report import SPEED_LABEL, _ci, _fmt, headline_rows


def _brackets(iv: dict[str, Any]) -> str:
    """What the brackets are: the report's own methods (counted proportions get Wilson intervals since
    2026-12-04; reports before have bootstrap intervals throughout)."""
    props = iv.get("proportions") or []
    how = (f"Wilson score intervals of the counts for {', '.join(props)}, paired-bootstrap intervals for the rest"
           if props else "paired-bootstrap intervals")
    return f"Brackets: 95% {how} over the test split, the spread a re-run on new test data would show."


def figures_markdown(r: dict[str, Any], source: str) -> str:
    task, pm = r["task"], r["primary_metric"]
    hm, op = r.get("headline_metric", pm), r.get("operating_point")
    cm = (op or {}).get("constraint_metric")
    minutes = sum(s.get("seconds", 0) for s in r["stages"].values()) / 60
    d = r["data"]
    rare = task == "decision" and "recall" in r.get("compared_metrics", [])  # positives matter (fraud)
    held = (f"{d['n_test']} held-out examples" + (f" ({d.get('test_positives', '?')} positive)" if rare else "")
            if task == "decision" else f"{d['n_test']} held-out problems")
    lines = [f"Generated from `{source}` by `make readme-figures` ({r['machine']['cpus']} CPUs, stages "
             f"{minutes:.0f} min; {held}" + (f"; operating point: {op['description']}" if op else "") + "). "
             + _brackets(r.get("intervals") or {}), "",
             f"| artifact | {hm} | " + (f"{cm} on test | " if cm else "") + (f"{pm} | " if pm != hm else "")
             + f"size MB | {SPEED_LABEL[task]} | P99 ms | speed-up | {hm} vs teacher |",
             "|" + "---|" * (7 + (pm != hm) + bool(cm))]
    for h in headline_rows(r):
        vs = h["vs_teacher"]
        lines.append(f"| {h['name']} | {_fmt(h['headline'])}{_ci(h['headline_ci'])} | "
                     + (f"{_fmt(h['constraint'])} | " if cm else "")
                     + (f"{_fmt(h['primary'])}{_ci(h['primary_ci'])} | " if pm != hm else "")
                     + f"{_fmt(h['size_mb'], 1)} | {_fmt(h['speed'], 1)} | {h['p99_ms']:.0f} | "
                     + ("-" if h["speedup"] is None else f"{h['speedup']:.2f}x") + f" | {vs} |")
    for w in r.get("warnings", []):
        lines += ["", f"Warning from the run: {w}"]
    return "\n".join(lines)


def update_block(text: str, key: str, block: str) -> str:
    start, end = f"<!-- figures:{key} -->", f"<!-- /figures:{key} -->"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"README has no {start} ... {end} block")
    return pattern.sub(lambda _: f"{start}\n{block}\n{end}", text)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    readme = Path(argv[0])
    text = readme.read_text()
    for arg in argv[1:]:
        key, _, path = arg.partition("=")
        report = json.loads(Path(path).read_text())
        text = update_block(text, key, figures_markdown(report, path))
    from sdk.rundir import atomic_write_text

    atomic_write_text(readme, text)
    print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
