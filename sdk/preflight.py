"""Preflight: what a run needs, checked in seconds before any stage runs (`distill check`, and the start
of `distill run` and `Project.run`).

- config: unknown keys (with a suggestion) and bad values, named by their field path (`sdk.config`);
- data (`data.path`): the file exists and the template loads it; its values row by row (missing values,
  numbers that are not numbers, labels outside the template's labels, a prompt that cannot be built);
  a table template's file is read as the data stage reads it (`sdk.tables`: label, time, id and listed
  columns, duplicate ids, every row and column at fault named at once);
  enough rows for data.n_train + data.n_val + data.n_test, and a dry run of the split;
- models: teacher and student are found and their config and tokenizer files load (weights are never
  read); a student cut from the teacher is not deeper than it; a given student shares its vocabulary;
  a decision template's label words are single tokens of the teacher's tokenizer.

Every problem is collected, so one check lists them all; the CLI exits 2 when there is any.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from sdk.errors import DistillError

MAX_PROMPT_ROWS = 200_000  # prompts built as a smoke test: a few µs each, bounded for huge files


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)  # what was checked, for the OK summary


@dataclass
class _Model:
    spec: str
    layers: int | None
    tokenizer: Any  # None when it could not be loaded (already reported)


# ---- entry points

def check_project(path: str | Path, sends: bool = True) -> list[str]:
    """Every problem of a project file, its data and its models; [] when it is ready to run. sends=False: for
    a command that calls no API teacher (an estimate), which needs no key."""
    return inspect_project(path, sends).problems


def inspect_project(path: str | Path, sends: bool = True) -> Findings:
    from sdk import config as cfgmod

    path = Path(path)
    try:
        cfg = cfgmod.load_config(path)
    except DistillError as err:  # nothing further can be checked without a valid config
        return Findings(problems=[str(err)])
    # the file as written, to say how a relative path was resolved when it points nowhere
    return check_config(cfg, hints=_relative_hints(cfgmod.load_yaml(path), path.parent), sends=sends)


def check_config(cfg, hints: dict[str, str] | None = None, sends: bool = True, until: str | None = None) -> Findings:
    """Checks of a validated ProjectConfig (paths already absolute). `hints` maps a field path to a note
    appended to its "does not exist" message."""
    from sdk import config as cfgmod
    from sdk.registry import get_template

    hints = hints or {}
    f = Findings()
    options = cfgmod.template_options(cfg)
    template = get_template(cfg.template, options)
    f.facts.append(f"config: template {cfg.template!r} ({template.task}), seed {cfg.seed}")
    if cfg.teacher.kind == "hf" and cfg.teacher.adapt.enabled and template.task != "decision":
        f.problems.append(f"teacher.adapt.enabled: adapting the teacher is implemented for decision templates; "
                          f"template {template.name!r} is a generation template (set teacher.adapt.enabled: false)")
    _check_data(cfg, template, options, hints.get("data.path", ""), f)
    layers = _check_models(cfg, template, hints, f, sends)
    _check_training(cfg, template, layers, f)
    _check_llama_cpp(f)
    _training_fact(cfg, f, trains_here=_runs_stage("distill", until))
    return f


def alongside_problem(setting: str, teacher_kind: str) -> str:
    """Why `distill.features` / `distill.on_policy` cannot train: they run the teacher beside the student,
    which needs its weights and a student cut from it (with student.base / student.model the distill stage
    loads that model, not the teacher)."""
    why = (f"a {teacher_kind} teacher has no weights here" if teacher_kind != "hf" else
           "with student.base or student.model the student is not cut from the teacher, which the distill stage "
           "then does not load")
    return (f"distill.{setting}: runs the teacher beside the student during training; {why} (remove it, or cut "
            "the student from a local teacher: teacher.kind hf without student.base / student.model)")


def _check_training(cfg, template, layers: dict[str, int | None], f: Findings) -> None:
    """The distillation settings against the template and the models: each loss's task, what needs the
    teacher's weights beside the student, the feature layer map. layers: decoder layers of the teacher and the
    student where known."""
    from sdk.distill.features import layer_map_problem
    from sdk.distill.schedules import schedule_problems
    from sdk.stages.distill import loss_problems

    d = cfg.distill
    if d.stages is not None and not d.stages:  # trained as if absent: said, in case the list lost its entries
        f.problems.append("distill.stages: an empty list; leave it out (or null) to train once with "
                          "distill.loss, or give the stages")
    f.problems += loss_problems(d, template.task, trained_student=bool(cfg.student.model))
    for where, loss in d.trained_losses():
        f.problems += schedule_problems({k: v for k, v in loss.items() if k != "kind"}, where)
    if d.features is not None:
        f.problems += schedule_problems(d.features.model_dump(), "distill.features")
    # more micro-batches than examples would be capped silently at one example each
    own = [(f"distill.stages[{i}]", x) for i, x in enumerate(d.stages or []) if x.grad_accum or x.batch_size]
    for where, st in [("distill", d)] + own:  # a stage setting neither is the top-level check's
        accum, batch = st.grad_accum or d.grad_accum, st.batch_size or d.batch_size
        if accum > batch:
            f.problems.append(f"{where}.grad_accum: {accum} is more than batch_size {batch}: a micro-batch holds at "
                              "least one example")
    if d.compare_sequence_kd and template.task != "generation":
        f.problems.append("distill.compare_sequence_kd: generation templates only (sequence-level KD trains on "
                          "completions); for a decision template, compare_fine_tuning trains the twin on the labels "
                          "alone")
    alongside = [k for k in ("features", "on_policy") if getattr(d, k) is not None]
    if alongside and (cfg.teacher.kind != "hf" or cfg.student.base or cfg.student.model):
        f.problems.append(alongside_problem(alongside[0], cfg.teacher.kind))
        return
    if d.features is None:
        return
    if d.features.layers is not None and not d.features.layers:
        f.problems.append("distill.features.layers: an empty layer map distils no layer: give student layer: "
                          "teacher layer pairs, or omit it for the layers the student was cut from")
        return
    if d.features.layers is None:
        if cfg.student.model:
            f.problems.append("distill.features.layers: give the layer map (student layer: teacher layer) for a "
                              "student that is not cut from the teacher")
        return
    problem = layer_map_problem(d.features.layers, layers.get("student"), layers.get("teacher"))
    if problem:
        f.problems.append(problem)


def _runs_stage(stage: str, until: str | None) -> bool:
    """Whether a run stopping after `until` (None: every stage) runs `stage`."""
    from sdk.stages import stage_list

    names = [n for n, _ in stage_list()]
    return until is None or until not in names or names.index(until) >= names.index(stage)


def _training_fact(cfg, f: Findings, trains_here: bool = True) -> None:
    """Where and in what arithmetic training will run on this machine (distill.device / precision: auto)."""
    from sdk.distill.recipe import cpu_has_amx_bf16, pick_device, resolve_precision

    try:
        device = pick_device(cfg.distill.device)
    except DistillError as err:
        if trains_here:  # the distill stage would refuse it after the teacher's annotation was paid for
            from sdk.errors import option

            f.problems.append(f"{err}; a run that trains on another machine can stop before it here "
                              f"({option('until', 'annotate')})")
        else:  # a run that stops before the distill stage (the training happens on another machine)
            f.facts.append(f"training: {err}")
        return
    precision = resolve_precision(cfg.distill.precision, device)
    why = ("" if cfg.distill.precision != "auto" else " (CUDA)" if device.type == "cuda" else
           " (the CPU has AMX-BF16)" if cpu_has_amx_bf16() else " (no AMX-BF16 on this CPU)")
    f.facts.append(f"training: on {device}, {'bf16 autocast' if precision == 'bf16' else 'fp32'}{why}")


def _check_llama_cpp(f: Findings) -> None:
    """A llama.cpp build that would segfault on quantized models (every run exports or teaches through GGUF
    by default), found before any stage rather than as a worker dying without a message."""
    from deployment.runtimes.llama_cpp_runtime import check_build

    try:
        check_build()
    except DistillError as err:
        f.problems.append(str(err))
    except Exception:  # llama_cpp not installed, or its library does not load: the stages that need it say so
        pass


def require_ready(cfg, source: str = "config", until: str | None = None) -> None:
    """Raise one DistillError listing every problem (Project.run calls this before any stage; `until`: the last
    stage the run will run)."""
    problems = check_config(cfg, until=until).problems
    if problems:
        raise DistillError(format_problems(problems, source))


def format_problems(problems: list[str], source: str) -> str:
    if len(problems) == 1:
        return problems[0]
    return f"{source}: {len(problems)} problems, found before any stage ran:\n" + "\n".join(
        "  - " + p.replace("\n", "\n    ") for p in problems)


def check_command(project_yaml: Path) -> None:
    """Check a project (config, data, models) in seconds, before running it; exit 2 naming each problem. An API
    teacher's endpoint is asked for its model list (free): reachable, key accepted, model served."""
    found = inspect_project(project_yaml)
    _probe_api_teacher(project_yaml, found)
    if found.problems:
        typer.echo(f"error: {format_problems(found.problems, str(project_yaml))}", err=True)
        raise typer.Exit(2)
    typer.echo(f"ok: {project_yaml} is ready to run")
    for fact in found.facts:
        typer.echo(f"  {fact}")


def _probe_api_teacher(project_yaml: Path, found: Findings) -> None:
    # only here (an explicit check), not before every run: the first call of a run finds the same, and a run
    # resumed from the cache calls nothing
    from sdk import config as cfgmod

    try:
        t = cfgmod.load_config(project_yaml).teacher
    except DistillError:
        return  # already a problem
    if t.kind != "openai":
        return
    from sdk.teachers.openai_api import probe_endpoint

    problems, facts = probe_endpoint(t.base_url, t.model, t.api_key_env)
    found.problems += problems
    found.facts += facts


def _relative_hints(raw: dict[str, Any], base: Path) -> dict[str, str]:
    """'(relative path ... resolved against ...)' for each relative path the file holds."""
    out = {}
    for section, key in (("data", "path"), ("teacher", "model"), ("student", "model"), ("student", "base")):
        value = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
        if isinstance(value, str) and not value.startswith("embedded:") and not Path(value).expanduser().is_absolute():
            out[f"{section}.{key}"] = (f" (relative path {value!r} resolved against the project file's folder "
                                       f"{base.resolve()})")
    return out


# ---- data

def check_data(cfg, hint: str = "") -> Findings:
    """The data checks alone (`distill init --data` runs them before writing anything)."""
    from sdk import config as cfgmod
    from sdk.registry import get_template

    f = Findings()
    options = cfgmod.template_options(cfg)
    _check_data(cfg, get_template(cfg.template, options), options, hint, f)
    return f


def table_settings_problem(d, template) -> str | None:
    """Table settings (data.label_column, time_column, ...) given for a template with its own file format, which
    would ignore them; None when there are none."""
    table_settings = [k for k in ("positive_label", "time_column", "id_column", "columns")
                      if getattr(d, k) is not None] + (["drop_columns"] if d.drop_columns else []) + (
                      ["label_column"] if d.label_column != "label" else [])
    if not table_settings:
        return None
    return (f"data.{table_settings[0]}: template {template.name!r} reads its own file format; the table settings "
            f"({', '.join('data.' + k for k in table_settings)}) apply to table templates")


def _check_data(cfg, template, options, hint: str, f: Findings) -> None:
    from sdk.tables import is_tabular

    d = cfg.data
    wanted = d.n_train + d.n_val + d.n_test
    if d.path is None:
        f.facts.append(f"data: synthesized by template {template.name!r}, {wanted} rows "
                       f"(train {d.n_train}, val {d.n_val}, test {d.n_test})")
        return
    path = Path(d.path)
    if not path.is_file():
        f.problems.append(f"data.path: {path} is a folder, not a file" if path.is_dir()
                          else f"data.path: file {path} does not exist{hint}")
        return
    if is_tabular(template):
        _check_table(cfg, template, options, f)
        return
    misplaced = table_settings_problem(d, template)
    if misplaced:
        f.problems.append(misplaced)
    before = len(f.problems)
    try:
        df = template.load(path)
    except DistillError as err:
        f.problems.append(str(err))
        df = None
    except Exception as err:  # a template's loader should raise DistillError; still name the file
        f.problems.append(f"data.path: template {template.name!r} cannot load {path}: {type(err).__name__}: {err}")
        df = None
    # the loader stops at its first problem; the raw table shows every row at fault
    table = df if df is not None else _read_plain_table(path)
    if table is not None and len(table):
        f.problems += _value_problems(table, template, options, path, cfg.seed)
    if df is None or len(f.problems) > before:
        return
    from sdk.stages.data import split_data

    # rows counted as the data stage counts them: after repeats are dropped, by the template's loader
    # (df.attrs, e.g. education's repeated records) or by the stage (identical prompts kept once)
    read = int(df.attrs.get("records_read", len(df)))
    try:  # the data stage's own split, on the same rows and seed: a label too rare to stratify shows here
        prepared = split_data(cfg, template, df, str(path))
    except DistillError as err:
        f.problems.append(str(err))
        return
    dropped = prepared.info["duplicates_removed"]  # the loader's repeats and the stage's, from records_read
    conflicts = int(df.attrs.get("label_conflicts", 0))
    repeats = (f"{dropped} repeated records dropped"
               + (f", {conflicts} of them with another label than the one kept" if conflicts else ""))
    if read - dropped < wanted:
        why = f" ({read} read, {repeats})" if dropped else ""
        f.problems.append(f"data.path: {path} has {read - dropped} rows{why}, fewer than data.n_train + data.n_val + "
                          f"data.n_test = {d.n_train} + {d.n_val} + {d.n_test} = {wanted}; lower them or add rows")
        return
    parts = prepared.parts
    f.facts.append(f"data: {path}, {read} rows ({repeats + '; ' if dropped else ''}train {len(parts['train'])}, "
                   f"val {len(parts['val'])}, test {len(parts['test'])})")


def _check_table(cfg, template, options, f: Findings) -> None:
    """A table template's file, read as the data stage reads it (sdk.tables: every row and column at fault
    named at once), then its split made and every prompt of the splits built."""
    from sdk.stages.data import load_data, split_data
    from sdk.tables import TableProblems, prompt_function

    d = cfg.data
    wanted = d.n_train + d.n_val + d.n_test
    try:
        df, source, table = load_data(cfg, template, options)
    except TableProblems as err:
        f.problems += err.problems
        return
    except DistillError as err:
        f.problems.append(str(err))
        return
    if len(df) < wanted:
        dup = f" ({table.duplicates_removed} exact duplicates removed)" if table.duplicates_removed else ""
        f.problems.append(f"data.path: {source} has {len(df)} rows{dup}, fewer than data.n_train + data.n_val + "
                          f"data.n_test = {d.n_train} + {d.n_val} + {d.n_test} = {wanted}; lower them or add rows")
        return
    try:  # the data stage's own split, on the same rows and seed: a label too rare to stratify shows here
        prepared = split_data(cfg, template, df, source, table)
    except DistillError as err:
        f.problems.append(str(err))
        return
    prompt = prompt_function(template, prepared.spec)
    bad = 0
    for part in prepared.parts.values():  # the rows the run will use: a value the prompt cannot use shows here
        for i, row in zip(part.index, part.to_dict("records")):
            try:
                text = prompt(row)
                if not isinstance(text, str) or not text.strip():
                    raise ValueError("the prompt is empty")
            except Exception as err:
                f.problems.append(f"{source}: template {template.name!r} cannot build the prompt of a row "
                                  f"({_row_label(row, table)}): {type(err).__name__}: {err}")
                bad += 1
                if bad == 3:
                    return
    spec, info = prepared.spec, prepared.info
    f.facts.append(f"data: {source}, {info['rows_read']} rows ({info['duplicates_removed']} exact duplicates removed; "
                   f"train {len(prepared.parts['train'])}, val {len(prepared.parts['val'])}, "
                   f"test {len(prepared.parts['test'])}"
                   + (f", ordered by {d.time_column}" if d.time_column else "") + ")")
    f.facts.append(f"input columns ({'the template' + chr(39) + 's prompt' if spec.mode == 'template' else 'rendered'}):"
                   f" {', '.join(spec.names)}")


def _row_label(row: dict, table) -> str:
    id_col = table.spec.id_column
    return f"{id_col} {row[id_col]!r}" if id_col and id_col in row else "values " + ", ".join(
        f"{k}={v!r}" for k, v in list(row.items())[:4])


def _read_plain_table(path: Path):
    """The file as pandas reads it (CSV/Parquet only), or None."""
    import pandas as pd

    try:
        if path.suffix == ".csv":
            return pd.read_csv(path)
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
    except Exception:  # unreadable: the loader's own message already says so
        return None
    return None


def _rows(path: Path, positions: list[int]) -> str:
    """'file: rows 3 (line 4), 9 (line 10) and 2 more': 1-based rows; a CSV's line counts its header."""
    from sdk.tables import is_csv, where_rows

    return where_rows(str(path), positions, is_csv(path))


def _value_problems(df, template, options, path: Path, seed: int) -> list[str]:
    """Row-level problems; the expected kind of each column (number, true/false, text) is read from a few
    rows of the template's own synthesizer, so any tabular template is covered without a schema."""
    sample = _synthesized_sample(template, options, seed)
    problems = []
    for col in template.columns:
        if col in df.columns:
            expected = sample[col] if sample is not None and col in sample.columns else None
            problems += _column_problems(df[col], expected, col, path)
    if template.task == "decision" and "label" in df.columns:
        problems += _label_problems(df["label"], template, path)
    if not problems and all(c in df.columns for c in template.columns):  # a missing column is the loader's to say
        problems += _prompt_problems(df, template, path)
    return problems


def _synthesized_sample(template, options, seed: int):
    try:
        return template.synthesize(8, seed, options)
    except Exception:  # a synthesizer that needs more rows: no type expectations, other checks still run
        return None


def _column_problems(values, expected, col: str, path: Path) -> list[str]:
    import numpy as np
    import pandas as pd

    out = []
    missing = values.isna().to_numpy()
    if missing.any():
        out.append(f"{_rows(path, list(np.flatnonzero(missing)))}, column {col!r}: missing value")
    if expected is None:
        return out
    present = values[~missing]
    if pd.api.types.is_bool_dtype(expected):
        ok = present.map(lambda v: str(v).strip().lower() in {"true", "false", "0", "1", "0.0", "1.0"})
        bad, want = ~ok.to_numpy(dtype=bool), "true/false"
    elif pd.api.types.is_numeric_dtype(expected):
        bad, want = pd.to_numeric(present, errors="coerce").isna().to_numpy(), "a number"
    elif pd.api.types.is_numeric_dtype(present) and len(present):
        # every value parsed as a number where the template expects text (e.g. a category column of codes)
        return out + [f"{path}: column {col!r} holds numbers (e.g. {_show(present.iloc[0])}); the template expects "
                      f"text (e.g. {_show(expected.iloc[0])})"]
    else:
        return out
    if bad.any():
        pos = list(np.flatnonzero(~missing)[bad])
        out.append(f"{_rows(path, pos)}, column {col!r}: {_show(values.iloc[pos[0]])} is not {want}")
    return out


def _show(value) -> str:
    """A cell as the user wrote it: 'noon', 7 (not np.int64(7))."""
    from sdk.tables import show

    return show(value)


def _label_problems(labels, template, path: Path) -> list[str]:
    import numpy as np
    import pandas as pd

    n = len(template.label_words)
    words = "0/1" if n == 2 else f"0..{n - 1}"
    missing = labels.isna().to_numpy()
    bad = ~missing & ~pd.to_numeric(labels, errors="coerce").isin(list(range(n))).to_numpy()
    out = []
    if missing.any():
        out.append(f"{_rows(path, list(np.flatnonzero(missing)))}, column 'label': missing label")
    if bad.any():
        found = sorted({_show(v) for v in labels.to_numpy()[bad]})
        out.append(f"{_rows(path, list(np.flatnonzero(bad)))}, column 'label': {', '.join(found[:5])} "
                   f"{'is not a label' if len(found) == 1 else 'are not labels'} of template {template.name!r} "
                   f"(its {n} labels are {words}: "
                   + ", ".join(f"{k} = {w.strip()!r}" for k, w in sorted(template.label_words.items())) + ")")
    return out


def _prompt_problems(df, template, path: Path, limit: int = 3) -> list[str]:
    """Build the prompt of each row, as the data stage will: a value the prompt cannot use shows here."""
    out = []
    for i, row in enumerate(df.head(MAX_PROMPT_ROWS).to_dict("records")):
        try:
            text = template.prompt(row)
            if not isinstance(text, str) or not text.strip():
                raise ValueError("the prompt is empty")
        except Exception as err:
            out.append(f"{_rows(path, [i])}: template {template.name!r} cannot build the prompt: "
                       f"{type(err).__name__}: {err}")
            if len(out) == limit:
                break
    return out


# ---- models

def _check_remote_teacher(cfg, template, hints: dict[str, str], f: Findings, sends: bool = True) -> None:
    """A teacher without local weights: its settings, and the local model the student comes from."""
    import os

    from sdk.teachers.openai_backend import check_distill_loss

    t, s = cfg.teacher, cfg.student
    if t.kind == "llamacpp":
        from sdk.teachers.llamacpp import gguf_path

        try:
            gguf_path(t.model)
        except DistillError as err:
            f.problems.append(str(err) + hints.get("teacher.model", ""))
            return
        f.facts.append(f"teacher: {t.model} (GGUF, llama.cpp)")
        field = "student.model" if s.model else "student.base" if s.base else "teacher.model"
        local = _inspect_model(field, s.model or s.base or t.model, False, hints.get(field, ""), f)
        if local is not None and template.task == "decision" and local.tokenizer is not None:
            f.problems += _label_word_problems(template, local, field)
        if local is not None and not s.model and local.layers is not None and s.layers > local.layers:
            f.problems.append(f"student.layers ({s.layers}) is more than the {local.layers} decoder layers of "
                              f"{field} {local.spec!r}, which the student is cut from")
        return
    if not t.base_url.startswith(("http://", "https://")):
        f.problems.append(f"teacher.base_url: {t.base_url!r} is not an http(s) URL")
    if sends and t.api_key_env and not os.environ.get(t.api_key_env):
        f.problems.append(f"teacher.api_key_env: environment variable {t.api_key_env} is not set (it must hold the "
                          "API key; set teacher.api_key_env: null for a server without keys)")
    try:
        check_distill_loss(t.kind, cfg.distill.trained_losses(), template.task)
    except DistillError as err:
        f.problems.append(str(err))
    f.facts.append(f"teacher: {t.model} at {t.base_url} (openai-compatible, {t.api} API)")
    field = "student.model" if s.model else "student.base"
    local = _inspect_model(field, s.model or s.base, False, hints.get(field, ""), f)
    if local is None:
        return
    if s.base and local.layers is not None and s.layers > local.layers:
        f.problems.append(f"student.layers ({s.layers}) is more than the {local.layers} decoder layers of student.base "
                          f"{local.spec!r}, which the student is cut from")
    f.facts.append(f"student: {'whole ' + local.spec if s.model else f'{s.layers} layers of {local.spec}'} "
                   f"({_layers(local)}; its tokenizer is the run's)")
    if template.task == "decision" and local.tokenizer is not None:
        f.problems += _label_word_problems(template, local, field)


def _check_models(cfg, template, hints: dict[str, str], f: Findings, sends: bool = True) -> dict[str, int | None]:
    """Checks of the teacher and the student's model; their decoder layers where known."""
    if cfg.teacher.kind != "hf":
        _check_remote_teacher(cfg, template, hints, f, sends)
        return {}
    trust = cfg.teacher.trust_remote_code
    s = cfg.student
    teacher = _inspect_model("teacher.model", cfg.teacher.model, trust, hints.get("teacher.model", ""), f)
    # the student's own model, whole (student.model) or cut from (student.base), is checked with a local
    # teacher as with the others: a missing base or one shallower than student.layers fails only at distill
    field = "student.model" if s.model else "student.base" if s.base else None
    student = _inspect_model(field, s.model or s.base, trust, hints.get(field, ""), f) if field else None
    if s.base and student is not None and student.layers is not None and s.layers > student.layers:
        f.problems.append(f"student.layers ({s.layers}) is more than the {student.layers} decoder layers of "
                          f"student.base {student.spec!r}, which the student is cut from")
    layers = {"teacher": teacher.layers if teacher is not None else None,
              "student": student.layers if s.model and student is not None else s.layers}
    if teacher is None:
        return layers
    f.facts.append(f"teacher: {teacher.spec} ({_layers(teacher)}, vocabulary "
                   f"{len(teacher.tokenizer) if teacher.tokenizer is not None else '?'})")
    if teacher.tokenizer is not None and cfg.annotate.top_k > len(teacher.tokenizer):
        f.problems.append(f"annotate.top_k ({cfg.annotate.top_k}) is more than the teacher's vocabulary "
                          f"({len(teacher.tokenizer)} tokens): at most {len(teacher.tokenizer)} (all of them)")
    if field is None:
        if teacher.layers is not None and s.layers > teacher.layers:
            f.problems.append(f"student.layers ({s.layers}) is more than the teacher's {teacher.layers} decoder layers "
                              f"(teacher.model {teacher.spec!r}): the student is cut from the teacher, so it can "
                              f"keep at most {teacher.layers}")
        else:
            f.facts.append(f"student: {s.layers} of the teacher's layers"
                           + (f", bottom {s.frozen_bottom} frozen" if s.frozen_bottom else ""))
    elif student is not None and student.tokenizer is not None and teacher.tokenizer is not None:
        what = f"{student.spec} ({_layers(student)})" if s.model else f"{s.layers} layers of {student.spec}"
        mine, theirs = student.tokenizer.get_vocab(), teacher.tokenizer.get_vocab()
        if mine != theirs:
            from sdk.distill.schedules import uses_teacher_distributions

            # alpha may be a schedule: token-level KD whenever it is below 1 at some step
            token_level = [(where, loss) for where, loss in cfg.distill.trained_losses()
                           if template.task == "generation" and uses_teacher_distributions(loss)]
            unaligned = [where for where, loss in token_level if loss.get("alignment", "vocabulary") != "uld"]
            if unaligned:
                f.problems.append(f"{field} {student.spec!r} uses another tokenizer than the teacher ({len(mine)} vs "
                                  f"{len(theirs)} tokens): token-level KD then needs {unaligned[0]}.alignment: uld "
                                  "(or alpha: 1.0, sequence-level KD alone)")
            else:
                f.facts.append(f"student: {what}, another tokenizer than the teacher's "
                               f"({len(mine)} vs {len(theirs)} tokens): "
                               + ("label-word probabilities" if template.task == "decision" else
                                  "ULD at character-aligned positions" if token_level else "sequence-level KD"))
            if template.task == "decision":  # the run's tokenizer (the student's) reads the label words too
                f.problems += _label_word_problems(template, student, field)
        else:
            f.facts.append(f"student: {what}, same vocabulary as the teacher")
    if template.task == "decision" and teacher.tokenizer is not None:
        f.problems += _label_word_problems(template, teacher)
    return layers


def teacher_tokenizer(cfg):
    """The run's tokenizer (the teacher's, or the local model's for a teacher without weights) from its files
    alone (no weights), or None when it cannot be loaded."""
    from sdk.teachers import base_model_spec, trust_remote_code

    found = Findings()
    m = _inspect_model("teacher.model", base_model_spec(cfg), trust_remote_code(cfg), "", found)
    return None if m is None else m.tokenizer


def _layers(m: _Model) -> str:
    return f"{m.layers} layers" if m.layers is not None else "layers unknown"


def _label_word_problems(template, model: _Model, field: str = "teacher.model") -> list[str]:
    out = []
    whose = "the teacher's" if field == "teacher.model" else "the student's"
    for label, word in sorted(template.label_words.items()):
        ids = model.tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            out.append(f"template {template.name!r}: label word {word!r} (label {label}) is {len(ids)} tokens for "
                       f"{whose} tokenizer ({field} {model.spec!r}); label words must be single tokens")
    return out


def _inspect_model(field_name: str, spec: str, trust_remote_code: bool, hint: str, f: Findings) -> _Model | None:
    """Config and tokenizer of a model, from its files only (no weights)."""
    try:
        where, gguf_file = _locate(field_name, spec, hint)
    except DistillError as err:
        f.problems.append(str(err))
        return None
    from transformers import AutoConfig, AutoTokenizer

    kw: dict[str, Any] = {"trust_remote_code": trust_remote_code, **({"gguf_file": gguf_file} if gguf_file else {})}
    try:
        config = AutoConfig.from_pretrained(where, **kw)
    except Exception as err:  # transformers raises many types; all mean "unusable config"
        f.problems.append(f"{field_name}: cannot read the configuration of {spec!r} ({where}): "
                          f"{type(err).__name__}: {err}")
        return None
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kw)
    except Exception as err:
        f.problems.append(f"{field_name}: cannot load the tokenizer of {spec!r} ({where}): {type(err).__name__}: {err}")
        tokenizer = None
    return _Model(spec, _num_layers(config), tokenizer)


def _num_layers(config) -> int | None:
    n = getattr(config, "num_hidden_layers", None)
    if n is None and hasattr(config, "get_text_config"):  # multimodal configs keep it in the text part
        n = getattr(config.get_text_config(), "num_hidden_layers", None)
    return n


def _locate(field_name: str, spec: str, hint: str) -> tuple[str | Path, str | None]:
    """(folder or hub id, GGUF file name or None) to read a model's config and tokenizer from, the way
    `sdk.models.resolve_model` finds the model but without converting or downloading weights."""
    from sdk import models

    if spec in models.EMBEDDED:
        try:
            gguf = models._embedded_gguf(spec)  # names the missing package or file
        except DistillError as err:
            msg = str(err).removeprefix("teacher.model ")  # its message assumes the teacher
            raise DistillError(f"{field_name}: {msg}") from None
        # resolve_model's converted copy when a run made it already, else the GGUF's own metadata
        cached = models.cache_dir() / "models" / f"{spec.split(':', 1)[1]}-{models.file_sha256(gguf)[:16]}"
        return (cached, None) if (cached / "config.json").is_file() else (gguf.parent, gguf.name)
    if spec.startswith("embedded:"):
        raise DistillError(f"{field_name}: unknown embedded model {spec!r} (known: {', '.join(models.EMBEDDED)})")
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":  # read from the GGUF's metadata (no dequantizing here)
        return path.parent, path.name
    if path.exists() or spec.startswith((".", "/", "~")):
        if not path.exists():
            raise DistillError(f"{field_name}: model folder {path} does not exist{hint}")
        if not (path / "config.json").is_file():
            raise DistillError(f"{field_name}: model folder {path} has no config.json (not a Hugging Face model "
                               f"folder){hint}")
        return path, None
    # a hub id, as resolve_model treats it: the local HF cache, or the hub where the network allows
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(spec, "config.json")
    except Exception:  # not even a valid repo id: hf_hub_download below says why
        cached = None
    if isinstance(cached, str):  # downloaded before: read locally, no network round trip
        return Path(cached).parent, None
    try:
        hf_hub_download(spec, "config.json")
    except Exception as err:
        raise DistillError(f"{field_name}: model {spec!r} is neither a local folder nor a reachable hub id: "
                           f"{type(err).__name__}: {err}") from None
    return spec, None
