"""The `distill` command line: templates, init, check, run. User errors exit with code 2, Ctrl-C with 130."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import typer

from sdk.errors import DistillError, not_a_file

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
def _options(ctx: typer.Context,
             version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="Print the installed version and exit.")) -> None:
    from sdk.errors import speaking
    from sdk.quiet import quiet_library_noise

    quiet_library_noise()
    # messages name settings as flags (--out) for the whole command, the Python API it calls included; given
    # back when the command ends (a test process invokes the app, then calls the Python API)
    ctx.with_resource(speaking("cli"))


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
         name: Optional[str] = typer.Option(None, help="Project name (default: the preset's); runs go to runs/<name>."),
         set_: list[str] = typer.Option([], "--set", help="Override a preset value: section.key=value, e.g. "
                                        "--set data.n_test=500 (repeatable; values read as YAML; applied after "
                                        "--teacher, so they win)."),
         data: Optional[Path] = typer.Option(None, help="Your own data file instead of synthesized data (fraud: a "
                                             "CSV or Parquet table; code: JSONL; education: JSONL or CSV); sets "
                                             "data.path."),
         label_column: Optional[str] = typer.Option(None, help="With --data (a table): the column holding the "
                                                    "answer (data.label_column; default 'label')."),
         time_column: Optional[str] = typer.Option(None, help="With --data (a table): a time column; the split is "
                                                   "then time-ordered (data.time_column)."),
         id_column: Optional[str] = typer.Option(None, help="With --data (a table): a unique row id, never a model "
                                                 "input (data.id_column)."),
         teacher: str = typer.Option("hf", help="hf (a local model, the preset's) or openai (an OpenAI-compatible "
                                     "endpoint: --base-url, --model)."),
         base_url: Optional[str] = typer.Option(None, help="--teacher openai: the endpoint, e.g. "
                                                "https://api.deepseek.com or http://127.0.0.1:8000/v1."),
         model: Optional[str] = typer.Option(None, help="--teacher openai: the model name it serves."),
         api_key_env: Optional[str] = typer.Option(None, help="--teacher openai: environment variable holding the "
                                                   "API key (default: none, for a server without keys)."),
         positive_label: Optional[str] = typer.Option(None, help="With --data (a table): the label value that means "
                                                      "'yes' when labels are not 0/1, true/false, yes/no "
                                                      "(data.positive_label).")) -> None:
    """Write DIRECTORY/project.yaml for TEMPLATE, ready to edit and run. With --data, the file is checked first
    (every row and column at fault named, exit 2) and nothing is written unless it is usable."""
    from sdk import config as cfgmod
    from sdk.registry import get_template

    facts: list[str] = []
    try:
        t = get_template(template)
        src = t.preset_path(preset)
        if not src.is_file():
            raise DistillError(f"template {template!r} has no preset {preset!r}")
        text = src.read_text()
        table = {"label_column": label_column, "time_column": time_column, "id_column": id_column,
                 "positive_label": _scalar(positive_label)}
        table = {k: v for k, v in table.items() if v is not None}
        if data is None and table:
            raise DistillError(f"--{next(iter(table)).replace('_', '-')} describes your own table: give it with --data")
        out = directory / "project.yaml"
        if directory.exists() and not directory.is_dir():
            raise DistillError(f"{directory} is a file: give a folder for the project")
        if out.exists() and not force:
            raise DistillError(f"{out} exists (use --force to overwrite)")
        import yaml

        if name is not None:
            text = _with_top(text, "name", name, comment="set by distill init --name")
        text = _with_overrides(text, set_)
        # where a bad value may come from, besides the preset: named in every validation error below
        flags = "".join(f" --set {_shown_set(p)}" for p in set_) + (
            " --teacher openai --base-url --model" if teacher == "openai" else "")
        flags += " --api-key-env" if teacher == "openai" and api_key_env else ""
        if teacher == "openai":
            from sdk.teachers.cli import with_openai_teacher

            missing = [flag for flag, v in (("--base-url", base_url), ("--model", model)) if not v]
            if missing:
                raise DistillError(f"--teacher openai needs {' and '.join(missing)}")
            # the overrides above tell it what the user set (student.model keeps student.base unset); it replaces
            # the whole teacher block and sets student.base, so they are applied again: the user's --set wins
            text = _with_overrides(with_openai_teacher(text, base_url.strip(), model, api_key_env), set_)
        elif teacher != "hf":
            raise DistillError(f"--teacher: unknown kind {teacher!r} (hf or openai)")
        if data is not None:
            if not data.is_file():
                raise DistillError(f"--data: {data} {not_a_file(data)}")
            text = _with_data_settings(text, {"path": str(data.resolve()), **table},
                                       comment="set by distill init --data")
            text, facts = _checked_data(text, str(src) + flags)
        # the preset's own text is written (its comments explain the choices); it is validated first
        try:
            merged = yaml.safe_load(text)
        except yaml.YAMLError as err:  # an --set value that YAML cannot hold where it was put
            raise DistillError(f"--set {' '.join(_shown_set(p) for p in set_)}: the project file would not be "
                               f"valid YAML ({getattr(err, 'problem', err)}); set one key at a time: "
                               "section.key=value") from None
        cfgmod.validate_config(merged, source=str(src) + flags)
        directory.mkdir(parents=True, exist_ok=True)
        from sdk.rundir import atomic_write_text

        atomic_write_text(out, f"# distill-sdk project: template {template}, preset {preset}\n"
                               f"# every key and its default is documented in docs/config.md\n" + text)
    except DistillError as err:
        _fail(err)
    typer.echo(f"wrote {out}")
    for fact in facts:
        typer.echo(f"  {fact}")


def _with_top(text: str, key: str, value: Any, comment: str) -> str:
    """The preset's text with a top-level `key:` replaced (or appended), comments kept."""
    import json
    import re

    line = f"{key}: {json.dumps(value)}  # {comment}"
    out, n = re.subn(rf"(?m)^{re.escape(key)}:.*$", lambda _: line, text, count=1)
    return out if n else text.rstrip("\n") + f"\n{line}\n"


def _scalar(text: str | None):
    """A command-line value as YAML reads it (2 -> 2, true -> True), so it compares with the column's values."""
    if text is None:
        return None
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (str, int, float, bool, list)) or value is None else text


def _checked_data(text: str, source: str) -> tuple[str, list[str]]:
    """The project text with the data checked as `distill check` checks it (all problems raised at once).
    A table smaller than the preset's splits gets proportionally smaller data.n_* (said in the file)."""
    import yaml

    from sdk import config as cfgmod
    from sdk.preflight import check_data, format_problems
    from sdk.registry import get_template
    from sdk.tables import TableProblems, is_tabular

    cfg = cfgmod.validate_config(yaml.safe_load(text), source=source)
    options = cfgmod.template_options(cfg)
    t = get_template(cfg.template, options)
    if is_tabular(t):
        from sdk.stages.data import load_data

        try:
            df, _, _ = load_data(cfg, t, options)
        except TableProblems as err:
            raise DistillError(format_problems(err.problems, str(cfg.data.path))) from None
    else:  # the template's own format (records): its loader names every bad record
        from sdk.stages.data import unique_inputs

        try:
            with warnings.catch_warnings():  # the loader's warnings are said once, by check_data's load below
                warnings.simplefilter("ignore")
                df = unique_inputs(t.load(Path(cfg.data.path)), t)  # counted as the data stage counts: repeats once
        except Exception:  # check_data below says it with every other problem (e.g. table settings given)
            df = None
    d = cfg.data
    wanted = d.n_train + d.n_val + d.n_test
    if df is not None and len(df) < wanted:
        scale = len(df) / wanted
        n_test, n_val = max(2, int(d.n_test * scale)), max(2, int(d.n_val * scale))
        sizes = {"n_train": max(1, min(d.n_train, len(df) - n_val - n_test)), "n_val": n_val, "n_test": n_test}
        text = _with_data_settings(text, sizes, comment=f"scaled to the file's {len(df)} rows by distill init")
        cfg = cfgmod.validate_config(yaml.safe_load(text), source=source)
    found = check_data(cfg)
    if found.problems:
        raise DistillError(format_problems(found.problems, str(cfg.data.path)))
    return text, found.facts


def _with_data_settings(text: str, settings: dict[str, Any], comment: str) -> str:
    return _with_settings(text, "data", settings, comment)


def _with_settings(text: str, section: str, settings: dict[str, Any], comment: str) -> str:
    """The preset's YAML text with `<section>.<key>` set for each setting, comments kept: inserted under an
    existing `<section>:` mapping (replacing those keys there), else the section appended."""
    import json
    import re

    new = [f"  {k}: {json.dumps(v)}  # {comment}" for k, v in settings.items()]
    lines = text.splitlines()
    for i, raw in enumerate(lines):
        if re.match(rf"^{re.escape(section)}:\s*(#.*)?$", raw):
            body = i + 1
            while body < len(lines) and (lines[body].startswith(" ") or not lines[body].strip()):
                if any(re.match(rf"^  {re.escape(k)}:", lines[body]) for k in settings):
                    del lines[body]
                    continue
                body += 1
            lines[i + 1:i + 1] = new
            return "\n".join(lines) + "\n"
    return text.rstrip("\n") + f"\n{section}:\n" + "\n".join(new) + "\n"


def _with_overrides(text: str, pairs: list[str]) -> str:
    """`--set section.key=value` (or `key=value` at the top level), values read as YAML."""
    import yaml

    for pair in pairs:
        key, sep, raw = pair.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts) or len(parts) > 2:
            raise DistillError(f"--set {pair!r}: use section.key=value (e.g. data.n_test=500) or key=value; deeper "
                               "keys are edited in project.yaml")
        value = _scalar(raw)
        try:
            current = (yaml.safe_load(text) or {}).get(parts[0])
        except yaml.YAMLError:
            raise DistillError(f"--set {pair!r}: an earlier --set made the project file invalid YAML; set one "
                               "key at a time: section.key=value") from None
        if len(parts) == 1 and (isinstance(current, dict) or isinstance(value, dict)):
            raise DistillError(f"--set {pair!r}: {parts[0]} is a section; set its keys one at a time "
                               f"({parts[0]}.<key>=value)")
        if len(parts) == 2 and current is not None and not isinstance(current, dict):
            raise DistillError(f"--set {pair!r}: {parts[0]} is a value, not a section (use {parts[0]}=value)")
        if len(parts) == 2:
            text = _with_settings(text, parts[0], {parts[1]: value}, comment="set by distill init --set")
        else:
            text = _with_top(text, parts[0], value, comment="set by distill init --set")
    return text


@app.command()
def run(project_yaml: Path, out: Optional[Path] = typer.Option(None, help="Run folder (default runs/<name>)."),
        keep_checkpoints: bool = typer.Option(False, help="Keep finished stages' training checkpoints "
                                              "(removed by default; their size is printed)."),
        nproc: int = typer.Option(1, min=1, help="Processes for the distill stage, under torchrun: one per GPU "
                                  "(DDP-style, same global batch), or CPU processes with gloo."),
        nnodes: int = typer.Option(1, min=1, help="Machines for the distill stage (--nproc on each); the others "
                                   "run `distill join <run folder>`, which must be on a shared file system."),
        rdzv_endpoint: Optional[str] = typer.Option(None, help="host:port of this machine where the distill "
                                                    "stage's processes meet (torchrun's c10d rendezvous), with --nnodes."),
        until: Optional[str] = typer.Option(None, help="Stop after this stage (data, adapt, annotate, distill, "
                                            "qad, export, evaluate, package, report).")) -> None:
    """Check, then run every stage of a project; finished stages are skipped."""
    from sdk.preflight import check_project, format_problems
    from sdk.project import Project

    try:
        problems = check_project(project_yaml)  # seconds, before any stage; says how relative paths resolved
        if problems:
            raise DistillError(format_problems(problems, str(project_yaml)))
        from sdk.stages import stage_list

        if until is not None and until not in dict(stage_list()):
            raise DistillError(f"--until {until!r}: not a stage (one of {', '.join(n for n, _ in stage_list())})")
        result = Project.from_yaml(project_yaml).run(out, preflight=False, keep_checkpoints=keep_checkpoints,
                                                     nproc=nproc, nnodes=nnodes, rdzv_endpoint=rdzv_endpoint,
                                                     until=until)
        if until is not None:
            typer.echo(f"stopped after the {until} stage ({result.run_dir})")
            return
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
    line = teacher_calls_line(result.report, result.ran)
    if line:
        typer.echo(line)
    for w in result.report.get("warnings", []):
        typer.echo(f"warning: {w}", err=True)
    for kind in ("html", "md", "json"):
        if kind in result.report_paths:
            typer.echo(f"report: {result.report_paths[kind]}")


@app.command()
def join(run_dir: Path, nproc: Optional[int] = typer.Option(None, min=1, help="Processes on this machine "
                                                            "(default: as many as the head machine runs)."),
         wait: float = typer.Option(3600.0, min=0, help="Seconds to wait for the head machine's distill stage.")) -> None:
    """This machine's share of a multi-machine distill stage started with `distill run ... --nnodes`."""
    from sdk.distill.launch import join as join_stage

    if not (run_dir / "manifest.json").is_file():
        _fail(DistillError(f"{run_dir}: no run folder here (manifest.json missing); give the head machine's "
                           "run folder, on a shared file system"))
    try:
        join_stage(run_dir, nproc, wait)
    except DistillError as err:
        _fail(err)
    except KeyboardInterrupt:
        raise typer.Exit(130)
    typer.echo("distill stage finished; the head machine continues with the next stages")


def _shown_set(assignment: str) -> str:
    """An --set value as messages may show it: not where it may be a key pasted by mistake (the config checks
    refuse such values without showing them; this keeps the flag from repeating them)."""
    from sdk.config import looks_like_a_secret

    key, _, value = assignment.partition("=")
    secret = key.strip().endswith(("api_key_env", "base_url")) or looks_like_a_secret(value.strip())
    return f"{key}=..." if secret else assignment


def teacher_calls_line(report: dict[str, Any], ran: list[str]) -> str | None:
    """What this run asked an API teacher, for the end of `distill run`: the annotate stage's calls
    (`annotation.teacher_usage`) when it ran, plus the evaluation's (each artifact's `usage`, the teacher-api
    one) when the evaluate stage ran; both are paid. None for a teacher without usage (a local one)."""
    annotated = (report.get("annotation") or {}).get("teacher_usage")
    evaluated = [a["usage"] for a in report.get("artifacts") or [] if isinstance(a, dict) and a.get("usage")]
    fresh = [u for u in evaluated if not u.get("reused")]  # a result reused from an earlier run: paid then
    steps = [(step, usages, now) for step, usages, now in (
        ("annotate", [annotated] if annotated else [], "annotate" in ran),
        ("evaluate", fresh or evaluated, "evaluate" in ran and bool(fresh))) if usages]
    if not steps:
        return None
    counted = [u for _, usages, now in steps if now for u in usages]
    calls = sum(u.get("calls", 0) for u in counted)
    parts = [f"{step} {sum(u.get('calls', 0) for u in usages)}" if now else f"{step} up to date"
             for step, usages, now in steps]
    line = f"teacher calls this run: {calls} ({', '.join(parts)})"
    if counted:
        line += (f", from cache: {sum(u.get('cache_hits', 0) for u in counted)}, "
                 f"cost: {sum(u.get('cost', 0.0) for u in counted):.4f}")
    return line


def headline_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The report's headline (evaluation.report.headline_rows): headline metric with its interval (at the
    operating point for decision templates), the ratio to the teacher read as a verdict, speed-up, size."""
    from evaluation.report import _ci, _fmt, headline_rows

    hm = report.get("headline_metric", report["primary_metric"])
    header = ["artifact", hm + (" @ op" if report.get("operating_point") else ""), f"{hm} vs teacher",
              "speed-up", "size MB"]
    rows = [[h["name"], f"{_fmt(h['headline'])}{_ci(h['headline_ci'])}",
             h["vs_teacher"],
             "-" if h["speedup"] is None else f"{h['speedup']:.2f}x", _fmt(h["size_mb"], 1)]
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
                 "compare": "evaluation.compare:compare_command", "data": "sdk.datainfo:data_command",
                 "annotate": "sdk.teachers.cli:annotate_command", "serve": "deployment.serving.server:serve_command",
                 "bundle": "sdk.bundle:bundle_command"}


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

# Command groups (`distill <group> <command>`), likewise in their own modules.
CORE_GROUPS = {"signals": "sdk.distill.signals_cli:app"}


def _add_core_groups() -> None:
    import importlib

    for name, target in CORE_GROUPS.items():
        module, attr = target.split(":")
        app.add_typer(getattr(importlib.import_module(module), attr), name=name)


_add_core_groups()


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


def _plain_warnings() -> None:
    """The SDK's own warnings (a repeated record's conflicting label, a cache moved aside) read as `warning: ...`
    on the CLI, like its errors; Python's default adds the SDK's file, line and source line, which are about us,
    not about the user's data. Others keep the default. (warnings.formatwarning is the documented hook.)"""
    ours = tuple(str(Path(__file__).resolve().parents[1] / pkg) + os.sep
                 for pkg in ("sdk", "verticals", "evaluation", "deployment"))
    default = warnings.formatwarning

    def formatwarning(message, category, filename, lineno, line=None):
        if str(Path(filename).resolve()).startswith(ours):
            return f"warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = formatwarning


def main() -> None:
    from sdk.quiet import quiet_warnings

    # library deprecation notices repeat through a run and say nothing to the user (the Python API silences
    # them only during its calls: sdk.quiet.quieted)
    quiet_warnings()
    _plain_warnings()
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
