"""The `distill` command line: templates, init, run. User errors exit with code 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from sdk.errors import DistillError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Distil a teacher LLM into a small student.")


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


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
                                             "synthesized data; sets data.path.")) -> None:
    """Write DIRECTORY/project.yaml for TEMPLATE, ready to edit and run."""
    from sdk import config as cfgmod
    from sdk.registry import get_template

    try:
        t = get_template(template)
        src = t.preset_path(preset)
        if not src.is_file():
            raise DistillError(f"template {template!r} has no preset {preset!r}")
        raw = cfgmod.load_yaml(src)
        if data is not None:
            if not data.is_file():
                raise DistillError(f"--data: file {data} does not exist")
            raw.setdefault("data", {})["path"] = str(data.resolve())
        cfg = cfgmod.validate_config(raw, source=str(src))
        out = directory / "project.yaml"
        if out.exists() and not force:
            raise DistillError(f"{out} exists (use --force to overwrite)")
        directory.mkdir(parents=True, exist_ok=True)
        from sdk.rundir import atomic_write_text

        atomic_write_text(out, f"# distill-sdk project: template {template}, preset {preset}\n"
                               f"# every key is documented in docs/config.md\n" + cfgmod.config_to_yaml(cfg))
    except DistillError as err:
        _fail(err)
    typer.echo(f"wrote {out}")


@app.command()
def run(project_yaml: Path, out: Optional[Path] = typer.Option(None, help="Run folder (default runs/<name>).")) -> None:
    """Run every stage of a project; finished stages are skipped."""
    from sdk.project import Project

    try:
        result = Project.from_yaml(project_yaml).run(out)
    except DistillError as err:
        _fail(err)
    typer.echo(f"report: {result.report_paths['md']}")
    typer.echo(f"report: {result.report_paths['json']}")


# Core commands that live in their own modules (one writer per module); each module keeps heavy imports
# inside the command so `distill` starts fast. A module not present yet is skipped.
CORE_COMMANDS = {"check": "sdk.preflight:check_command", "score": "sdk.scoring:score_command"}


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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
