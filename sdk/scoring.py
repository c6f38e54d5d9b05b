"""Scoring new data with a finished run, exactly as its evaluation scored the test split.

    run = sdk.Project.load("runs/fraud-demo")
    scored = run.predict(df)                             # the smallest evaluated student GGUF
    scored = run.predict(df, artifact="student-torch")   # any artifact in evaluation/artifacts.json

    distill score runs/fraud-demo new.csv --out scored.csv

Nothing is re-decided here: the prompt is the template's, tokenised by the data stage's own function with
the run's tokenizer; the runtime is built from the evaluation's own artifact spec and runs in a worker
process (evaluation.worker); the label ids come from data/task.json and the threshold from
evaluation/artifacts.json. Decision templates get `score` (probability of the last label word: the
positive one for two labels), `prob_<word>` per label and `decision` (label index); generation templates
get `completion` (greedy, with the evaluation's max_new_tokens and stop strings).
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Optional

import typer

from sdk.errors import DistillError, not_a_file

READ_SUFFIXES = (".csv", ".csv.gz", ".jsonl", ".jsonl.gz", ".parquet")
WRITE_SUFFIXES = (".csv", ".jsonl")


class FinishedRun:
    """A run folder whose evaluation is done: its config, template, task facts and evaluated artifacts."""

    def __init__(self, root: str | Path, python_api: bool = False):
        """`python_api`: made by `Project.load`, so `predict` names settings as Python does (sdk.errors.speaking)."""
        from sdk import config as cfgmod
        from sdk.registry import get_template
        from sdk.rundir import RunDir, rerun_command

        self._python_api = python_api
        root = Path(root)
        if not root.is_dir():
            raise DistillError(f"run folder {root} " + ("is a file, not a folder" if root.exists() else "does not exist"))
        if not (root / "config.yaml").is_file() and (root / "project.yaml").is_file():
            # `distill init`'s folder given for the run's: "run config.yaml --out <project folder>" misled
            raise DistillError(f"{root} is a project folder (it holds project.yaml), not a run folder: give the folder "
                               f"its run wrote (`--out`; default runs/<name>), or run it: `distill run "
                               f"{root / 'project.yaml'}`")
        for rel in ("config.yaml", "data/task.json", "evaluation/artifacts.json"):
            if not (root / rel).is_file():
                raise DistillError(f"{root} is not a finished run: {rel} is missing (run the project to the end: "
                                   f"{rerun_command(root)})")
        self.run = RunDir(root)
        if self.run.manifest_path.is_file() and "evaluate" not in self.run.manifest["stages"]:
            # its files may be another run's: a later run into this folder redid an earlier stage (and stopped
            # before evaluating), so the artifacts and their evaluation no longer belong to its config
            raise DistillError(f"{root} is not a finished run: manifest.json does not record its evaluate stage as "
                               "done (it stopped before, or a later run into this folder changed an earlier stage); "
                               f"run the project to the end: {rerun_command(root)}")
        source = str(root / "config.yaml")
        self.config = cfgmod.validate_config(cfgmod.load_yaml(root / "config.yaml"), source=source)
        self.options = cfgmod.template_options(self.config, source)
        self.template = get_template(self.config.template, self.options)
        self.task = self.run.task()
        if not isinstance(self.task, dict) or ("label_ids" not in self.task and self.template.task == "decision"):
            raise DistillError(f"{self.run.path('data', 'task.json')} is damaged (no label_ids); delete it and run "
                               f"{rerun_command(root)}")
        if self.task.get("task", self.template.task) != self.template.task:
            raise DistillError(f"{root / 'data/task.json'}: task {self.task.get('task')!r} but template "
                               f"{self.template.name!r} is a {self.template.task} template")
        self.entries: list[dict[str, Any]] = self.run.read_json("evaluation/artifacts.json")
        if not isinstance(self.entries, list) or not all(
                isinstance(e, dict) and {"name", "role", "format", "size_bytes"} <= e.keys() for e in self.entries):
            raise DistillError(f"{self.run.path('evaluation', 'artifacts.json')} is damaged (expected a list of "
                               "artifact entries with name, role, format, size_bytes); delete it and run "
                               f"{rerun_command(root)} to evaluate again")
        self._tokenizer = None
        from sdk.stages.data import table_spec

        self.table = table_spec(self.run)  # a user table's input columns and kinds (None: the template's columns)
        self._trained_values: dict[str, set[str]] | None = None

    def __repr__(self) -> str:
        return f"FinishedRun({str(self.run.root)!r}, template={self.template.name!r}, artifacts={self.artifacts})"

    # ---- artifacts
    @property
    def artifacts(self) -> list[str]:
        """Names of the evaluated artifacts, in report order."""
        return [e["name"] for e in self.entries]

    @property
    def default_artifact(self) -> str:
        """The smallest evaluated GGUF of the main student that passed its release gate (the most compressed
        quant): what one deploys; else the smallest export that passed, else the unquantized student, else
        the smallest student artifact whose gate did not fail."""
        return self.default_choice()[0]

    def default_choice(self) -> tuple[str, str]:
        """(default_artifact, why it was chosen, in words for the user)."""
        from evaluation.report import gate_verdict

        def main_student(e: dict[str, Any]) -> bool:
            return e["role"] == "student" and not e.get("variant")

        def verdict(e: dict[str, Any]) -> str:
            return gate_verdict(e["gate"]) if e.get("gate") else "pass"

        for pick, why in (
                (lambda e: main_student(e) and e["format"] == "gguf" and verdict(e) == "pass",
                 "the smallest student GGUF that passed its gate"),
                (lambda e: main_student(e) and e.get("gate") and verdict(e) == "pass",
                 "no student GGUF passed its gate: the smallest export that did"),
                (lambda e: e["name"] == "student-torch", "no export passed its gate: the unquantized student"),
                # never a comparison twin (labels alone, sequence KD, QAD): not the student the run distilled
                (lambda e: main_student(e) and verdict(e) != "fail",
                 "no export passed its gate: the smallest student artifact whose gate did not fail")):
            found = [e for e in self.entries if pick(e)]
            if found:
                return min(found, key=lambda e: e["size_bytes"])["name"], why
        raise DistillError(f"{self.run.path('evaluation', 'artifacts.json')}: every artifact of the distilled student "
                           "failed its release gate (the report says by how much); name one with --artifact to use "
                           "it anyway")

    def entry(self, artifact: str | None = None) -> dict[str, Any]:
        """The evaluation's entry of an artifact (metrics, threshold, operating point when present)."""
        name = artifact or self.default_artifact
        for e in self.entries:
            if e["name"] == name and e["role"] == "baseline":
                raise DistillError(f"artifact {name!r} is the template's plain baseline, fitted for the report and "
                                   "not kept; score with the teacher or a student")
            if e["name"] == name:
                return e
        raise DistillError(f"artifact {name!r} was not evaluated in {self.run.root} "
                           f"(evaluated: {', '.join(self.artifacts)})")

    def threshold(self, artifact: str | None = None) -> float | None:
        """The decision threshold the evaluation chose for this artifact on validation (None if the template
        reports none)."""
        t = self.entry(artifact).get("metrics", {}).get("threshold")
        return None if t is None else float(t)

    def _spec(self, name: str, longest: int, where: str = "a prompt") -> tuple[str, dict[str, Any]]:
        """(format, runtime spec) exactly as the evaluate stage built them, with room for longer prompts (up to
        the model's trained context: `where`, the longest prompt's row, is named beyond it)."""
        from sdk.stages import Context
        from sdk.stages.evaluate import artifacts

        ctx = Context(self.config, self.template, self.options, self.run)
        for art in artifacts(ctx):
            if art.name == name:
                spec = dict(art.spec)
                if art.format == "gguf" and art.role == "student":  # scored, served: the evaluated file only
                    from sdk.stages.package import check_packaged, redo_export

                    check_packaged(self.run, name, Path(spec["model"]), redo_export(self.run))
                if "n_ctx" in spec:  # llama.cpp's context must hold the longest new prompt (+ completion)
                    extra = self.config.evaluation.max_new_tokens if self.template.task == "generation" else 0
                    needed = longest + extra + 8
                    trained = _trained_context(Path(spec["model"]))
                    if trained is not None and needed > trained:
                        # llama.cpp would allocate a cache for it (a 3M-character field asked for 750k tokens)
                        # and the model's positions end at its trained context anyway
                        raise DistillError(f"{where}: the prompt is {longest} tokens"
                                           + (f" (+{extra} to generate)" if extra else "")
                                           + f"; the model's context holds {trained}: shorten that row's text")
                    spec["n_ctx"] = max(spec["n_ctx"], needed)
                return art.format, spec
        raise DistillError(f"artifact {name!r} is in evaluation/artifacts.json but its files are no longer in "
                           f"{self.run.root} (artifacts/exports.json, student/ or teacher/)")

    # ---- input
    def read(self, path: str | Path):
        """Rows from a CSV, JSONL or Parquet file, checked for the template's columns."""
        path = Path(path)
        if not path.is_file():
            raise DistillError(f"data file {path} {not_a_file(path)}")
        suffix = "".join(path.suffixes[-2:]) if path.name.endswith((".csv.gz", ".jsonl.gz")) else path.suffix
        if suffix not in READ_SUFFIXES:
            raise DistillError(f"data file {path}: cannot read {suffix or 'files without a suffix'} "
                               f"(use {', '.join(READ_SUFFIXES)})")
        df = _read_jsonl(path) if suffix.startswith(".jsonl") else _read_table(path)
        df = self.check(df, str(path))
        df.attrs["source"] = str(path)  # later errors (a row's prompt, its length) name the file
        return df

    def check(self, data, source: str = "input"):
        """A DataFrame of the rows, with the template's columns, none of them empty (errors name the
        column and the rows)."""
        import pandas as pd

        from sdk.data import check_columns

        if isinstance(data, pd.DataFrame):
            df = data
        elif isinstance(data, Mapping):
            df = pd.DataFrame([dict(data)])
        elif isinstance(data, (str, Path)):  # a file name: rows are read from it by `read`, never guessed here
            raise DistillError(f"{source}: got {str(data)!r}, a {type(data).__name__}, not rows (a DataFrame, a dict "
                               f"or a list of dicts): read the file's rows first, "
                               f"`run.predict(run.read({str(data)!r}))` with run = Project.load(<run folder>) "
                               f"(read takes {', '.join(READ_SUFFIXES)})")
        elif isinstance(data, Iterable) and not isinstance(data, bytes):
            records = list(data)
            for i, r in enumerate(records):
                if not isinstance(r, Mapping):
                    raise DistillError(f"{source}: record {i} (row {i + 1}) is a {type(r).__name__}, not a dict of "
                                       "column values")
            df = pd.DataFrame([dict(r) for r in records])
        else:
            raise DistillError(f"{source}: expected a DataFrame or records (dicts), got {type(data).__name__}")
        if self.table is not None and self.table.mode == "columns":
            from sdk.tables import coerce_rows

            return coerce_rows(df, self.table, source)  # each input column read as the training table's was
        optional = set(getattr(self.template, "text_columns", ()))  # free text may be empty (no note) or left out
        df = df.assign(**{c: None for c in self.template.columns if c in optional and c not in df})
        check_columns(df, self.template.columns, source)
        for col in self.template.columns:
            if col in optional:
                continue
            blank = df[col].isna() | df[col].map(lambda v: isinstance(v, str) and not v.strip())
            empty = df.index[blank].tolist()
            if empty:
                raise DistillError(f"{source}: column {col!r} is empty in {len(empty)} row(s), first row "
                                   f"{_row_number(df, empty[0])}", field=col)
        return df

    def trained_category_values(self) -> dict[str, set[str]]:
        """{column: values as text} of the category columns in the training split (data/train.parquet; kinds
        from data/table.json): what `unseen_values` and a bundle's predict.py compare new rows with."""
        if self._trained_values is None:
            from deployment.bundle_predict import category_text

            cats = [f.name for f in self.table.features if f.kind == "category"] if self.table is not None else []
            self._trained_values = {}
            if cats:
                import pandas as pd

                train = pd.read_parquet(self.run.path("data", "train.parquet"))
                self._trained_values = {c: {category_text(v) for v in train[c].dropna()} for c in cats
                                        if c in train.columns}
        return self._trained_values

    def unseen_values(self, df) -> dict[str, dict[str, int]]:
        """{column: {value: rows}} of the category columns' values that the training split never held. The model
        still scores them (it reads text), but learned from no example of them: `distill score`, `predict`, the
        server and a bundle's predict.py say so rather than score them silently."""
        from deployment.bundle_predict import unseen_values

        trained = self.trained_category_values()
        return unseen_values({c: df[c].dropna().tolist() for c in trained if c in df.columns}, trained)

    def prompts(self, df, source: str = "input") -> list[str]:
        """The template's prompt for every row (a row the template cannot read is named; row 1 = the first)."""
        from sdk.tables import prompt_function

        prompt = prompt_function(self.template, self.table)
        out, bad = [], []
        # rows given in Python (not read from a file) are also named by their index: records[i], df.loc[label]
        labels = None if "source" in df.attrs else df.index.tolist()
        for i, row in enumerate(df.to_dict("records")):
            try:
                out.append(prompt(row))
            except Exception as err:  # a template's own code: any failure means this row's values are unusable
                # the template's message names the column it could not read ("column 'amount': ..."): the one
                # input column it quotes is the field at fault (a template's prompt code is stdlib-only, as it
                # ships in bundles, so it has no structured error to carry it)
                quoted = [c for c in re.findall(r"column '([^']+)'", str(err)) if c in row]
                index = f"; the row's index is {labels[i]!r}" if labels is not None else ""
                bad.append((f"row {i + 1}: cannot build the prompt: {type(err).__name__}: {err}{index}", quoted, err))
        if bad:  # every row the template cannot read, in one error (the first few named): not one per attempt
            fields = {c for _, quoted, _ in bad for c in quoted}
            shown = "; ".join(text for text, _, _ in bad[:MAX_ROWS_NAMED])
            more = f"; and {len(bad) - MAX_ROWS_NAMED} more row(s)" if len(bad) > MAX_ROWS_NAMED else ""
            head = f"{len(bad)} rows cannot be read: " if len(bad) > 1 else ""
            err = bad[0][2]
            raise DistillError(f"{source}: {head}{shown}{more}", field=fields.pop() if len(fields) == 1 else None,
                               detail=str(err) if len(bad) == 1 and isinstance(err, ValueError) else None)
        return out

    def tokenize(self, prompts: list[str]) -> list[list[int]]:
        """Token ids exactly as the data stage made them: the teacher's tokenizer, sdk.data.tokenize_prompts."""
        from sdk.data import tokenize_prompts

        return tokenize_prompts(self._load_tokenizer(), prompts, self.template.chat)

    @property
    def tokenizer(self):
        """The run's tokenizer (the one its prompts were tokenised with)."""
        return self._load_tokenizer()

    def _load_tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            from sdk.data import label_token_ids
            from sdk.models import resolve_model

            from sdk.teachers import base_model_spec, trust_remote_code

            spec = base_model_spec(self.config)
            self._tokenizer = AutoTokenizer.from_pretrained(resolve_model(spec),
                                                            trust_remote_code=trust_remote_code(self.config))
            # the same tokenizer as the run's, or the prompts would not be the ones evaluated
            if self.template.task == "decision":
                ids = label_token_ids(self._tokenizer, self.template.label_words, self.template.name)
                if ids != list(self.task["label_ids"]):
                    raise DistillError(f"the tokenizer of {spec!r} gives label ids {ids}, the run's "
                                       f"data/task.json holds {self.task['label_ids']}: the model changed since the run")
        return self._tokenizer

    # ---- scoring
    def predict(self, data, artifact: str | None = None):
        """The rows (a DataFrame or records) with the model's outputs added (see the module docstring).
        `artifact`: an evaluated artifact's name (default: `default_artifact`). The returned frame's
        `attrs` hold the artifact, its threshold and operating point. The worker process it starts for a torch
        artifact stays for the next call (a run's ends with it), and the libraries' notices are silenced meanwhile
        (sdk.project.api_call)."""
        from sdk.project import api_call

        with api_call(python=self._python_api, end_workers=False):
            return self._predict(data, artifact)

    def _predict(self, data, artifact: str | None):
        import numpy as np

        entry = self.entry(artifact)
        name = entry["name"]
        source = getattr(data, "attrs", {}).get("source", "input")  # the file, for rows read by `read`
        df = self.check(data, source)  # the caller's index is kept, to join the outputs back
        from deployment.runtimes import TEXT_FORMATS

        texts = self.prompts(df, source)
        seqs = self.tokenize(texts)
        longest = max(range(len(seqs)), key=lambda i: len(seqs[i]))
        fmt, spec = self._spec(name, len(seqs[longest]), f"{source}: row {longest + 1}")
        from sdk.stages.package import redo_export

        redo = redo_export(self.run)
        if fmt in TEXT_FORMATS:  # an API tokenises the template's text itself
            seqs = texts
        out = df.copy()
        out.attrs = {"artifact": name, "format": fmt, "quant": entry.get("quant"), "unseen": self.unseen_values(df)}
        if self.template.task == "decision":
            job = {"format": fmt, "spec": spec, "label_ids": list(self.task["label_ids"]), "score": {"input": seqs}}
            probs = np.asarray(_run_job(job, name, redo)["probs_input"], dtype=np.float64)
            threshold = self.threshold(name)
            for label, col in enumerate(_prob_columns(self.template.label_words)):
                out[col] = probs[:, label]
            out["score"] = probs[:, -1]
            out["decision"] = decide_labels(self.template, probs, threshold, self.options)
            out.attrs.update(threshold=threshold, operating_point=entry.get("operating_point"))
        else:
            c = self.config
            params = {"max_new_tokens": c.evaluation.max_new_tokens, "temperature": 0.0, "stop": list(c.annotate.stop)}
            job = {"format": fmt, "spec": spec, "label": name,
                   "generate": {"greedy": {"prompts": seqs, "params": params}}}
            outs = _run_job(job, name, redo)["generations"]["greedy"]["outputs"]
            out["completion"] = [o[0]["text"] for o in outs]
        return out


def load_run(run_dir: str | Path) -> FinishedRun:
    """A finished run, ready to score new rows (`Project.load` returns this)."""
    return FinishedRun(run_dir)


def _run_job(job: dict[str, Any], name: str, redo: str) -> dict[str, Any]:
    """One evaluation worker process (llama.cpp and torch never share a process), in a scratch folder:
    the run folder is only read. `redo`: how to export the artifact again, should its file fail to run."""
    from evaluation.harness import WorkerFailed, run_worker

    with tempfile.TemporaryDirectory(prefix="distill-score-") as work:
        try:
            return run_worker(job, Path(work), name)
        except WorkerFailed as err:
            model = job["spec"].get("model")
            where = f" from {model}" if isinstance(model, str) else ""
            raise DistillError(f"artifact {name} could not be run{where}: {err.reason or f'exit {err.exit_code}'}; "
                               f"if its file was damaged or changed since the evaluation, {redo}") from None


MAX_ROWS_NAMED = 5  # rows named in one error about unreadable rows (the count says how many more)


def decide_labels(template, probs, threshold: float | None, options) -> list[int]:
    """Label index per row. Two labels: label 1 when its probability reaches the evaluation's threshold
    (as the template's metrics count a positive). A template may define decide(probs, threshold, options)
    for more labels; otherwise the most probable label."""
    import numpy as np

    if hasattr(template, "decide"):
        return [int(d) for d in template.decide(probs, threshold, options)]
    if probs.shape[1] == 2 and threshold is not None:
        return (probs[:, 1] >= threshold).astype(int).tolist()
    return np.argmax(probs, axis=1).astype(int).tolist()


def _prob_columns(label_words: dict[int, str]) -> list[str]:
    """prob_<word> per label (prob_no, prob_yes); prob_<label> when words are not distinct names."""
    words = [label_words[i].strip() for i in range(len(label_words))]
    if all(w.isidentifier() for w in words) and len(set(words)) == len(words):
        return [f"prob_{w}" for w in words]
    return [f"prob_{i}" for i in range(len(words))]


def _trained_context(path: Path) -> int | None:
    """A GGUF's `<arch>.context_length` (None when the file does not say, or cannot be read: running it will)."""
    from deployment.gguf_header import read_metadata

    try:
        meta = read_metadata(path)
    except Exception:  # noqa: BLE001 - a damaged file is reported by the worker that opens it, with its reason
        return None
    arch = meta.get("general.architecture")
    value = meta.get(f"{arch}.context_length")
    return int(value) if isinstance(value, int) and value > 0 else None


def _row_number(df, index) -> int:
    return int(df.index.get_loc(index)) + 1


def _read_table(path: Path):
    import pandas as pd

    from sdk.tables import read_csv

    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else read_csv(path)
    except DistillError:
        raise
    except Exception as err:  # pandas raises many kinds; all mean "unreadable"
        raise DistillError(f"data file {path}: cannot read it: {err}") from None


def _read_jsonl(path: Path):
    import pandas as pd

    from sdk.jsonl import json_lines

    return pd.DataFrame([row for _, row in json_lines(path, where=lambda n: f"data file {path}, line {n}")])


def _plain(v: Any) -> Any:
    """A JSON value: numpy scalars as Python ones, NaN as null."""
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def check_out(out: Path) -> Path:
    """`--out` checked before any scoring: its suffix, and a folder it can be written in."""
    import os

    out = Path(out)
    if out.suffix not in WRITE_SUFFIXES:
        raise DistillError(f"--out {out}: write {' or '.join(WRITE_SUFFIXES)}, not {out.suffix or 'no suffix'}")
    if out.is_dir():
        raise DistillError(f"--out {out} is a folder; name a file in it")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise DistillError(f"--out {out}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DistillError(f"--out {out}: folder {parent} is not writable")
    return out


def write_scored(df, out: Path) -> Path:
    """CSV or JSONL by suffix, written atomically (floats at full precision)."""
    from sdk.rundir import atomic_write_text

    out = check_out(out)
    if out.suffix == ".csv":
        text = df.to_csv(index=False)
    else:
        text = "".join(json.dumps({k: _plain(v) for k, v in r.items()}, default=str) + "\n"
                       for r in df.to_dict("records"))
    atomic_write_text(out, text)
    return out


def score_command(
    run_dir: Path = typer.Argument(..., help="A finished run folder (has evaluation/artifacts.json)."),
    data: Path = typer.Argument(..., help="Rows to score: CSV, JSONL or Parquet with the template's columns."),
    out: Path = typer.Option(..., "--out", help="Scored rows: .csv or .jsonl (input columns + outputs)."),
    artifact: Optional[str] = typer.Option(None, help="Evaluated artifact to score with (default: the smallest "
                                           "student GGUF that passed its release gate)."),
) -> None:
    """Score new rows with a finished run's model: the evaluation's prompt, runtime and threshold."""
    try:
        check_out(out)  # before any work
        run = load_run(run_dir)
        name, why = (artifact, "") if artifact else run.default_choice()
        rows = run.read(data)
        typer.echo(f"scoring {len(rows)} rows of {data} with {name}{f' (default: {why})' if why else ''}", err=True)
        scored = run.predict(rows, artifact=name)
        write_scored(scored, out)
    except DistillError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2)
    from deployment.bundle_predict import unseen_warnings

    for line in unseen_warnings(scored.attrs.get("unseen", {}), len(scored), MAX_ROWS_NAMED):
        typer.echo(line, err=True)
    summary = f"{name}: {len(scored)} rows"
    if "decision" in scored:
        words = run.template.label_words
        counts = scored["decision"].value_counts()
        summary += ", " + ", ".join(f"{int(counts.get(k, 0))} {words[k].strip()!r}" for k in sorted(words))
        if scored.attrs.get("threshold") is not None:
            summary += f" (threshold {scored.attrs['threshold']:.4g})"
    typer.echo(f"{summary} -> {out}")
