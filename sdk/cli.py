"""The `distill` command line: templates, init, check, run. User errors exit with code 2, Ctrl-C with 130."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import typer

from sdk.errors import DistillError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Distil a teacher LLM into a small student.")

PACKAGE = "distill-sdk"  # the distribution name in pyproject.toml


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


def _print_version(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        typer.echo(f"{PACKAGE} {version(PACKAGE)}")
    except PackageNotFoundError:  # run from a source tree that was never installed
        typer.echo(f"{PACKAGE} (not installed)")
    raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="Print the installed version and exit.")) -> None:
    pass


@app.command()
def templates() -> None:
    """List the installed templates."""
    from sdk.registry import TEMPLATES, get_template, names

    for name in names(TEMPLATES):
        try:
            typer.echo(f"{name:12s} {get_template(name).description}")
        except Exception as err:  # a broken third-party template must not hide the others
            typer.echo(f"{name:12s} (cannot load: {err})")


@app.command()
def init(template: str, directory: Path,
         preset: str = typer.Option("default", help="Shipped preset: tiny or default."),
         force: bool = typer.Option(False, help="Overwrite an existing project.yaml."),
         data: Optional[Path] = typer.Option(None, help="Your own data file (the template's format) instead of "
                                             "synthesized data; sets data.path."),
         teacher: str = typer.Option("hf", help="hf (a local model, the preset's) or openai (an OpenAI-compatible "
                                     "endpoint: --base-url, --model)."),
         base_url: Optional[str] = typer.Option(None, help="--teacher openai: the endpoint, e.g. "
                                                "https://api.deepseek.com or http://127.0.0.1:8000/v1."),
         model: Optional[str] = typer.Option(None, help="--teacher openai: the model name it serves."),
         api_key_env: Optional[str] = typer.Option(None, help="--teacher openai: environment variable holding the "
                                                   "API key (default: none, for a server without keys).")) -> None:
    """Write DIRECTORY/project.yaml for TEMPLATE, ready to edit and run."""
    from sdk import config as cfgmod
    from sdk.registry import get_template

    try:
        t = get_template(template)
        src = t.preset_path(preset)
        if not src.is_file():
            raise DistillError(f"template {template!r} has no preset {preset!r}")
        text = src.read_text()
        if data is not None:
            if not data.is_file():
                raise DistillError(f"--data: file {data} does not exist")
            text = _with_data_path(text, data.resolve())
        if teacher == "openai":
            from sdk.teachers.cli import with_openai_teacher

            missing = [flag for flag, v in (("--base-url", base_url), ("--model", model)) if not v]
            if missing:
                raise DistillError(f"--teacher openai needs {' and '.join(missing)}")
            text = with_openai_teacher(text, base_url, model, api_key_env)
        elif teacher != "hf":
            raise DistillError(f"--teacher: unknown kind {teacher!r} (hf or openai)")
        import yaml

        # the preset's own text is written (its comments explain the choices); it is validated first
        cfgmod.validate_config(yaml.safe_load(text), source=str(src))
        out = directory / "project.yaml"
        if out.exists() and not force:
            raise DistillError(f"{out} exists (use --force to overwrite)")
        directory.mkdir(parents=True, exist_ok=True)
        from sdk.rundir import atomic_write_text

        atomic_write_text(out, f"# distill-sdk project: template {template}, preset {preset}\n"
                               f"# every key and its default is documented in docs/config.md\n" + text)
    except DistillError as err:
        _fail(err)
    typer.echo(f"wrote {out}")


def _with_data_path(text: str, path: Path) -> str:
    """The preset's YAML text with `data.path` set, comments kept: inserted under an existing `data:`
    section (replacing a `path:` there), else a `data:` section appended."""
    import json
    import re

    line = f"  path: {json.dumps(str(path))}  # set by distill init --data"
    lines = text.splitlines()
    for i, raw in enumerate(lines):
        if re.match(r"^data:\s*(#.*)?$", raw):
            body = i + 1
            while body < len(lines) and (lines[body].startswith(" ") or not lines[body].strip()):
                if re.match(r"^\s+path:", lines[body]):
                    del lines[body]
                    continue
                body += 1
            lines.insert(i + 1, line)
            return "\n".join(lines) + "\n"
    return text.rstrip("\n") + "\ndata:\n" + line + "\n"


@app.command()
def run(project_yaml: Path, out: Optional[Path] = typer.Option(None, help="Run folder (default runs/<name>)."),
        keep_checkpoints: bool = typer.Option(False, help="Keep finished stages' training checkpoints "
                                              "(removed by default; their size is printed).")) -> None:
    """Check, then run every stage of a project; finished stages are skipped."""
    from sdk.preflight import check_project, format_problems
    from sdk.project import Project

    try:
        problems = check_project(project_yaml)  # seconds, before any stage; says how relative paths resolved
        if problems:
            raise DistillError(format_problems(problems, str(project_yaml)))
        result = Project.from_yaml(project_yaml).run(out, preflight=False, keep_checkpoints=keep_checkpoints)
    except DistillError as err:
        _fail(err)
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted; re-run `distill run {project_yaml}` to resume from the last finished stage",
                   err=True)
        raise typer.Exit(130)
    try:
        print_headline(result.report)
    except (KeyError, TypeError, ValueError) as err:  # a report of another schema: the run itself succeeded
        typer.echo(f"(no headline table: report.json lacks {err})", err=True)
    usage = (result.report.get("annotation") or {}).get("teacher_usage")
    if usage:  # an API teacher: what this run asked it (0 when annotation was up to date)
        calls = usage["calls"] if "annotate" in result.ran else 0
        typer.echo(f"teacher calls this run: {calls}" + (f", from cache: {usage['cache_hits']}, cost: {usage['cost']:.4f}"
                                                         if "annotate" in result.ran else " (annotation up to date)"))
    for w in result.report.get("warnings", []):
        typer.echo(f"warning: {w}", err=True)
    for kind in ("html", "md", "json"):
        if kind in result.report_paths:
            typer.echo(f"report: {result.report_paths[kind]}")


def headline_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The report's headline (evaluation.report.headline_rows): headline metric with its interval (at the
    operating point for decision templates), the ratio to the teacher read as a verdict, speed-up, size."""
    from evaluation.report import _ci, _fmt, headline_rows

    hm = report.get("headline_metric", report["primary_metric"])
    header = ["artifact", hm + (" @ op" if report.get("operating_point") else ""), f"{hm} vs teacher",
              "speed-up", "size MB"]
    rows = [[h["name"], f"{_fmt(h['headline'])}{_ci(h['headline_ci'])}",
             h["vs_teacher"],
             "-" if h["speedup"] is None else f"{h['speedup']:.2f}x", f"{h['size_mb']:.1f}"]
            for h in headline_rows(report)]
    return header, rows


def print_headline(report: dict[str, Any]) -> None:
    """The report's headline at the end of a run (rich when installed, else plain aligned text)."""
    header, rows = headline_table(report)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            typer.echo("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        return
    table = Table(title=f"{report.get('project', '')} ({report.get('template', '')})")
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for r in rows:
        table.add_row(*r)
    console = Console(highlight=False)
    if not console.is_terminal:  # a log file or pipe: rich's default 80 columns would wrap long artifact names
        console.width = 120
    console.print(table)


# Core commands that live in their own modules (one writer per module); each module keeps heavy imports
# inside the command so `distill` starts fast. A module not present yet is skipped.
CORE_COMMANDS = {"check": "sdk.preflight:check_command", "score": "sdk.scoring:score_command",
                 "compare": "evaluation.compare:compare_command", "annotate": "sdk.teachers.cli:annotate_command"}


def _add_core_commands() -> None:
    import importlib

    for name, target in CORE_COMMANDS.items():
        module, attr = target.split(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ModuleNotFoundError, AttributeError):
            continue
        app.command(name=name)(fn)


_add_core_commands()


def _add_plugin_commands() -> None:
    """Commands a template owns (e.g. the code template's `check-solutions`), registered under the
    `distill_sdk.commands` entry point: the core CLI names no template."""
    from sdk.registry import COMMANDS, _load

    for name, ep in sorted(_load(COMMANDS).items()):
        try:
            app.command(name=name)(ep.load())
        except Exception as err:  # a broken plugin must not take the whole CLI down
            typer.echo(f"warning: command {name!r} could not be loaded: {err}", err=True)


_add_plugin_commands()


def _quiet_warnings() -> None:
    """Library deprecation notices (e.g. transformers' `is_gradient_checkpointing` FutureWarning, raised on
    every peft wrap) repeat through a run and say nothing to a user of the CLI; the Python API keeps them."""
    for module in ("transformers", "peft", "torch"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=rf"{module}(\.|$)")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def main() -> None:
    _quiet_warnings()
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
