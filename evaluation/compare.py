"""`distill compare RUN RUN ...`: what changed in the configuration and what changed in the figures.

Reads each run folder's config.yaml and report.json only. The first run is the reference: configuration
keys whose values differ in any run are listed, then one row per (run, artifact) with the headline metric
and its interval, the primary metric, size, speed and the ratio to that run's teacher.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import typer
import yaml

from evaluation.report import SPEED_LABEL, _ci, _fmt, headline_rows


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


def load_run(run_dir: Path) -> dict[str, Any]:
    from sdk.errors import DistillError

    run_dir = Path(run_dir)
    rep, cfg = run_dir / "report.json", run_dir / "config.yaml"
    if not rep.is_file() or not cfg.is_file():
        raise DistillError(f"{run_dir} is not a finished run folder (needs report.json and config.yaml)")
    try:
        return {"name": str(run_dir), "report": json.loads(rep.read_text()),
                "config": _flatten(_resolved(yaml.safe_load(cfg.read_text()) or {}))}
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise DistillError(f"{run_dir}: unreadable report.json or config.yaml ({err})") from None


def _resolved(raw: dict[str, Any]) -> dict[str, Any]:
    """The configuration as the run used it, defaults filled in (a run that left template_options out and one
    that wrote the defaults are the same run); a config this version no longer reads is compared as written."""
    from sdk.config import template_options, validate_config
    from sdk.errors import DistillError

    if not isinstance(raw, dict):
        return raw
    try:
        cfg = validate_config(raw)
    except DistillError:
        return raw
    return {**cfg.model_dump(mode="json"), "template_options": template_options(cfg).model_dump(mode="json")}


def compare(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = sorted(set().union(*(r["config"] for r in runs)))
    changed = {k: [r["config"].get(k) for r in runs] for k in keys
               if len({json.dumps(r["config"].get(k), sort_keys=True, default=str) for r in runs}) > 1}
    rows = []
    for r in runs:
        rep = r["report"]
        for h in headline_rows(rep):
            rows.append({"run": r["name"], **h, "headline_metric": rep.get("headline_metric", rep["primary_metric"]),
                         "task": rep["task"]})
    warnings = [f"{r['name']}: {w}" for r in runs for w in r["report"].get("warnings", [])]
    metrics = {r["report"].get("headline_metric", r["report"]["primary_metric"]) for r in runs}
    if len(metrics) > 1:
        warnings.insert(0, f"the runs are compared on different headline metrics ({', '.join(sorted(metrics))}): "
                        "their operating points or templates differ")
    return {"runs": [r["name"] for r in runs], "config_changes": changed, "rows": rows, "warnings": warnings}


def to_markdown(c: dict[str, Any]) -> str:
    lines = ["# Run comparison", "", "Runs: " + ", ".join(f"`{r}`" for r in c["runs"]) + " (first = reference)", ""]
    for w in c["warnings"]:
        lines.append(f"> **Warning:** {w}")
    lines += ["", "## What changed in the configuration", ""]
    if c["config_changes"]:
        lines += ["| key | " + " | ".join(f"run {i + 1}" for i in range(len(c["runs"]))) + " |",
                  "|" + "---|" * (1 + len(c["runs"]))]
        for k, vals in c["config_changes"].items():
            lines.append(f"| `{k}` | " + " | ".join(f"`{v}`" for v in vals) + " |")
    else:
        lines.append("Nothing: the configurations are identical (differences come from the code or the machine).")
    lines += ["", "## What changed in the figures", "",
              "| run | artifact | headline | value | primary | size MB | speed | P99 ms | vs teacher |",
              "|---|---|---|---|---|---|---|---|---|"]
    for h in c["rows"]:
        vs = h["vs_teacher"]
        lines.append(f"| {h['run']} | {h['name']} | {h['headline_metric']} | {_fmt(h['headline'])}"
                     f"{_ci(h['headline_ci'])} | {_fmt(h['primary'])} | {_fmt(h['size_mb'], 1)} | "
                     f"{_fmt(h['speed'], 1)} {SPEED_LABEL[h['task']].split(' ')[0]} | {h['p99_ms']:.0f} | {vs} |")
    return "\n".join(lines) + "\n"


def to_html(c: dict[str, Any]) -> str:
    """The same facts as to_markdown, as one self-contained page."""
    from evaluation.html import _CSS, _table

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Run comparison</title><style>{_CSS}"
             "</style></head><body><h1>Run comparison</h1>",
             "<div class='sub'>" + " · ".join(html.escape(r) for r in c["runs"]) + " (first = reference)</div>"]
    parts += [f"<div class='warn'><b>Warning:</b> {html.escape(w)}</div>" for w in c["warnings"]]
    parts.append("<h2>What changed in the configuration</h2>")
    if c["config_changes"]:
        parts.append(_table(["key", *(f"run {i + 1}" for i in range(len(c["runs"])))],
                            [[k, *(str(v) for v in vals)] for k, vals in c["config_changes"].items()]))
    else:
        parts.append("<p>Nothing: the configurations are identical.</p>")
    parts.append("<h2>What changed in the figures</h2>" + _table(
        ["run", "artifact", "headline", "value", "primary", "size MB", "speed", "P99 ms", "vs teacher"],
        [[h["run"], h["name"], h["headline_metric"], f"{_fmt(h['headline'])}{_ci(h['headline_ci'])}",
          _fmt(h["primary"]), _fmt(h["size_mb"], 1), _fmt(h["speed"], 1), f"{h['p99_ms']:.0f}",
          h["vs_teacher"]] for h in c["rows"]]))
    return "\n".join(parts) + "</body></html>"


def compare_command(runs: list[Path] = typer.Argument(..., help="Finished run folders; the first is the reference."),
                    html_out: Path = typer.Option(None, "--html", help="Also write the comparison as an HTML page.")
                    ) -> None:
    """Compare finished runs: what changed in the configuration and in the figures."""
    from sdk.errors import DistillError
    from sdk.rundir import atomic_write_text

    try:
        if len(runs) < 2:
            raise DistillError("compare needs at least two run folders")
        if html_out is not None and html_out.is_dir():
            raise DistillError(f"--html {html_out}: this is a folder; give a file name")
        c = compare([load_run(r) for r in runs])
        typer.echo(to_markdown(c))
        if html_out:
            atomic_write_text(html_out, to_html(c))
            typer.echo(f"wrote {html_out}")
    except DistillError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2)
