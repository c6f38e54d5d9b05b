"""The user's own table (CSV or Parquet) for a decision template, without per-column code.

    read -> check (label, time, id and listed columns; values row by row) -> type each column -> drop exact
    duplicates -> split (time-ordered when a time column is named, else stratified) -> drop val/test rows
    identical to an earlier split in every feature (leakage) -> prompts rendered from (name, value) pairs

Every problem names the file, the row (1-based; a CSV's line counts its header) and the column; all problems
of a table are raised at once (`TableProblems`). A template takes part by defining
`table_prompt(row, features)` (its wording around `render_features`); it may declare `hidden_columns`
(columns that describe the answer, e.g. the synthetic fraud `pattern`: never a model input). When the
table holds all of the template's own `columns` and no column list is configured, the template's own
columns and hand-written `prompt` are used (mode "template"); otherwise every usable column is rendered
(mode "columns"). The classic baselines (`classic_models`) see exactly the prompt's features.
"""

from __future__ import annotations

import difflib
import math
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sdk.errors import DistillError, not_a_file

KINDS = ("number", "bool", "category", "text", "timestamp", "date")
TRUE_WORDS = frozenset({"1", "true", "yes", "y", "t"})
FALSE_WORDS = frozenset({"0", "false", "no", "n", "f"})
MOSTLY_NUMBERS = 0.9  # a text column whose values are at least this share numbers holds numbers: the rest are errors
TEXT_MIN_WORDS, TEXT_MIN_CHARS = 4, 40  # median words / mean characters from which a column is free text
MAX_CHARS = {"category": 40, "text": 160}  # longer values are cut in the prompt (prompts stay short)
MISSING = "n/a"
ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?$")


class TableProblems(DistillError):
    """Every problem found in a table (one line each), raised together."""

    def __init__(self, problems: list[str], field: str | None = None):
        super().__init__("\n".join(problems), field=field)
        self.problems = problems


@dataclass(frozen=True)
class TableOptions:
    """The table settings of `data` (sdk.config.DataConfig), as plain values."""

    label_column: str = "label"
    positive_label: Any = None
    time_column: str | None = None
    id_column: str | None = None
    columns: tuple[str, ...] | None = None
    drop_columns: tuple[str, ...] = ()
    max_prompt_columns: int = 16

    @classmethod
    def of(cls, data: Any) -> "TableOptions":
        """From a DataConfig (or anything with these attributes)."""
        cols = getattr(data, "columns", None)
        return cls(label_column=data.label_column, positive_label=data.positive_label,
                   time_column=data.time_column, id_column=data.id_column,
                   columns=tuple(cols) if cols is not None else None, drop_columns=tuple(data.drop_columns),
                   max_prompt_columns=data.max_prompt_columns)


@dataclass
class Feature:
    name: str
    kind: str  # one of KINDS


@dataclass
class TableSpec:
    """What the data stage decided about a table (data/table.json): the model's input columns and how to
    read new rows the same way (scoring)."""

    mode: str  # "template": the template's own columns and prompt; "columns": rendered from `features`
    features: list[Feature]
    label_column: str = "label"
    labels: dict[str, int] = field(default_factory=dict)  # label value as written -> label index
    time_column: str | None = None
    id_column: str | None = None
    ignored: dict[str, str] = field(default_factory=dict)  # column -> why it is not a model input

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TableSpec":
        return cls(**{**d, "features": [Feature(**f) for f in d["features"]]})


@dataclass
class Table:
    df: pd.DataFrame  # typed columns, `label` as 0..n-1, the label column itself removed, exact duplicates dropped
    spec: TableSpec
    source: str
    rows_read: int
    duplicates_removed: int


# ---- naming rows

def is_csv(path: Path | str) -> bool:
    name = Path(path).name.lower()
    return name.endswith((".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz", ".tsv"))


def where_rows(source: str, positions: Sequence[int], csv: bool,
               breaks: Sequence[tuple[int, int]] | None = None) -> str:
    """'file: rows 3 (line 4), 9 (line 10) and 2 more': 1-based rows; a CSV's line counts its header and the
    line breaks inside earlier rows' quoted values (`breaks`: read_csv's df.attrs["row_breaks"])."""
    positions = list(positions)
    shown = ", ".join(f"{i + 1}" + (f" (line {csv_line(i, breaks)})" if csv else "") for i in positions[:3])
    more = f" and {len(positions) - 3} more" if len(positions) > 3 else ""
    return f"{source}: row{'s' if len(positions) > 1 else ''} {shown}{more}"


def csv_line(row: int, breaks: Sequence[tuple[int, int]] | None = None) -> int:
    """The file line where 0-based data row `row` starts: the header is line 1, and each earlier row's values
    may hold line breaks (`breaks`: (row, line breaks) for the rows that have any; blank lines aside)."""
    return row + 2 + sum(n for r, n in (breaks or ()) if r < row)


def csv_lines(n_rows: int, breaks: Sequence[tuple[int, int]] | None = None) -> list[int]:
    """csv_line of every row 0..n_rows-1 at once."""
    extra = np.zeros(n_rows + 1, dtype=np.int64)
    for r, n in breaks or ():
        extra[r + 1] += n  # the rows after row r start n lines lower
    return (2 + np.arange(n_rows) + np.cumsum(extra)[:n_rows]).tolist()


def show(value: Any) -> str:
    """A cell as the user wrote it: 'noon', 7 (not np.int64(7))."""
    return repr(value.item() if hasattr(value, "item") else value)


# ---- reading

def read_table_file(path: Path) -> pd.DataFrame:
    """A CSV (optionally compressed) or Parquet file as pandas reads it; an empty one is an error."""
    path = Path(path)
    if not path.is_file():
        raise DistillError(f"data.path: {path} {not_a_file(path)}")
    name = path.name.lower()
    parquet = name.endswith((".parquet", ".pq"))
    if not parquet and not is_csv(path):
        raise DistillError(f"data.path: {path}: cannot read a {path.suffix or 'suffix-less'} file as a table; use CSV "
                           "(.csv, .csv.gz) or Parquet (.parquet)")
    try:
        df = pd.read_parquet(path) if parquet else read_csv(path, sep="\t" if name.endswith(".tsv") else ",",
                                                              low_memory=False)
    except DistillError:
        raise
    except pd.errors.EmptyDataError:
        raise DistillError(f"dataset {path} is empty (no header, no rows)") from None
    except Exception as err:  # pandas raises many kinds; all mean "unreadable"
        raise DistillError(f"data.path: cannot read {path}: {err}") from None
    if len(df) == 0:
        raise DistillError(f"dataset {path} is empty")
    return df


def read_csv(path: Path, **kwargs) -> pd.DataFrame:
    """pd.read_csv, refusing a header that names a column twice: pandas renames the second `amount` to
    `amount.1` and reads on, so one of the two would be used unseen."""
    header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False,
                         **{k: v for k, v in kwargs.items() if k == "sep"})
    names = [str(x) for x in (header.iloc[0].tolist() if len(header) else [])]
    twice = sorted({n for n in names if n.strip() and names.count(n) > 1})  # unnamed (trailing commas) aside
    if twice:
        raise DistillError(f"{path}: the header names column(s) {twice} more than once; rename or drop the copies")
    df = pd.read_csv(path, **kwargs)
    breaks = _refuse_swallowed_rows(df, path, kwargs.get("sep", ","))
    if breaks is not None and breaks.any():  # rows after a value with line breaks start further down the file
        # only the rows that have breaks: pandas copies attrs on every operation (a list per row made a 1M-row
        # table's loading 25x slower)
        df.attrs["row_breaks"] = tuple((int(r), int(breaks[r])) for r in np.flatnonzero(breaks))
    return df


def _refuse_swallowed_rows(df: pd.DataFrame, path: Path, sep: str) -> np.ndarray | None:
    """A stray `"` at the start of a field opens a quoted field that runs on to the next `"`, however many
    lines later: pandas reads the lines between as one value, and those rows are gone without a word. A
    value with line breaks is legitimate (a student's work over several lines); one holding a whole line
    that splits into as many fields as the header names is rows swallowed. Raises naming the row and line
    where that field starts; else returns the line breaks inside each row's values."""
    import csv as csvmod

    n_cols = df.shape[1]
    if df.empty:
        return None
    checks = _field_checks(df)
    # a line that splits into the header's fields and whose values fit the columns they would fill (a number
    # where the column holds numbers, a known label where it holds a few values) is a row; with nothing to
    # check, a line of text with the right number of commas is common enough to want two of them
    enough = 1 if checks and n_cols >= 3 else 2
    breaks = np.zeros(len(df), dtype=np.int64)  # line breaks inside each row's values: rows after it start lower
    found: list[tuple[int, str, int, list[str]]] = []  # (row, column, line breaks, the lines that look like rows)
    for c in df.columns:
        s = df[c]
        if not (pd.api.types.is_object_dtype(s) or pd.api.types.is_string_dtype(s)):
            continue
        try:
            counts = s.str.count("\n").fillna(0).to_numpy(dtype=np.int64)
        except AttributeError:  # values that are not text (an object column of booleans)
            continue
        breaks += counts
        for i in np.flatnonzero(counts):
            inner = [line.rstrip("\r") for line in s.iloc[i].split("\n")[1:-1]]  # whole lines of the file
            rows = [line for line in inner if _fits(next(csvmod.reader([line], delimiter=sep), []), n_cols, checks)]
            if len(rows) >= enough:
                found.append((int(i), str(c), int(counts[i]), rows))
    if not found or n_cols < 2:
        return breaks
    found.sort()
    row, col, n_breaks, rows = found[0]
    line = 2 + row + int(breaks[:row].sum())  # the header is line 1 (blank lines aside)
    more = f" ({len(found) - 1} more such value(s) after it)" if len(found) > 1 else ""
    raise DistillError(f"{path}: row {row + 1} (line {line}), column {col!r}: a quoted value runs over lines {line} "
                       f"to {line + n_breaks} and holds {len(rows)} line(s) that look like whole rows (e.g. "
                       f"{rows[0][:80]!r}), read as one value{more}; a stray \" at the start of a field probably "
                       "opens it. Fix that quote (a value with a comma, a quote or a line break is written in quotes, "
                       "its own quotes doubled: \"\")")


def _field_checks(df: pd.DataFrame) -> dict[int, Any]:
    """Per column position, a test a swallowed line's field must pass to be a row of this table: numbers in a
    numeric column, one of the column's few values in a column that holds few (labels, categories)."""
    checks: dict[int, Any] = {}
    for j, c in enumerate(df.columns):
        s = df[c]
        if pd.api.types.is_bool_dtype(s):
            checks[j] = lambda v: v.strip().lower() in ("true", "false", "")
        elif pd.api.types.is_numeric_dtype(s):
            checks[j] = lambda v: not v.strip() or _is_number(v)
        else:
            values = set(s.dropna().astype(str).str.strip())
            if 0 < len(values) <= 20 and len(s) >= 3 * len(values):
                checks[j] = lambda v, known=frozenset(values): v.strip() in known or not v.strip()
    return checks


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _fits(fields: list[str], n_cols: int, checks: dict[int, Any]) -> bool:
    return len(fields) == n_cols and all(check(fields[j]) for j, check in checks.items())


# ---- loading: check, type, deduplicate

def load_table(path: Path, opts: TableOptions, *, template_columns: Sequence[str] = (),
               hidden_columns: Sequence[str] = (), label_words: dict[int, str] | None = None,
               expected: dict[str, str] | None = None) -> Table:
    """The user's table, checked and typed (raises TableProblems naming every row and column at fault).
    `expected`: the kind of each of the template's own columns (see `expected_kinds`), checked when the
    table is read with the template's hand-written prompt."""
    path = Path(path)
    df = read_table_file(path)
    return prepare_table(df, opts, source=str(path), csv=is_csv(path), template_columns=template_columns,
                         hidden_columns=hidden_columns, label_words=label_words, expected=expected)


def prepare_table(df: pd.DataFrame, opts: TableOptions, *, source: str, csv: bool = False,
                  template_columns: Sequence[str] = (), hidden_columns: Sequence[str] = (),
                  label_words: dict[int, str] | None = None, expected: dict[str, str] | None = None) -> Table:
    label_words = label_words or {0: " no", 1: " yes"}
    breaks = df.attrs.get("row_breaks")  # set by read_csv where quoted values span lines
    df = df.reset_index(drop=True)
    problems = _missing_columns(df, opts, source)
    if problems:  # nothing else can be read without these
        raise TableProblems(problems)
    where = lambda pos: where_rows(source, pos, csv, breaks)  # noqa: E731
    labels, mapping, label_problems = map_labels(df[opts.label_column], label_words, opts.positive_label,
                                                 opts.label_column, where, source)
    problems += label_problems
    hidden = [c for c in hidden_columns if c in df.columns]
    template_mode = (bool(template_columns) and all(c in df.columns for c in template_columns)
                     and opts.columns is None and not opts.drop_columns)
    reserved = {opts.label_column, opts.id_column}
    ignored: dict[str, str] = {}
    if opts.id_column:
        ignored[opts.id_column] = "data.id_column"
        problems += _id_problems(df[opts.id_column], opts.id_column, where)
    for c in hidden:
        ignored[c] = "describes the answer (the template's hidden column): never a model input"
    for c in opts.drop_columns:
        ignored[c] = "data.drop_columns"
    if template_mode:
        candidates = list(template_columns)
        for c in df.columns:
            if c == opts.time_column and c not in candidates:
                ignored[c] = "data.time_column (orders the split; not one of the template's columns)"
            elif c not in candidates and c not in reserved and c not in ignored:
                ignored[c] = ("not one of the template's columns (list columns in data.columns to have the prompt "
                              "rendered from yours)")
    elif opts.columns is not None:
        candidates = list(opts.columns)
        for c in candidates:
            if c in reserved or c in hidden:
                why = "data.label_column" if c == opts.label_column else ("data.id_column" if c == opts.id_column
                                                                          else "a hidden column of the template")
                problems.append(f"data.columns: {c!r} is {why}; it cannot be a model input")
        for c in df.columns:
            if c not in candidates and c not in reserved and c not in ignored:
                ignored[c] = "not in data.columns"
    else:
        candidates = [c for c in df.columns if c not in reserved and c not in ignored]
    if opts.label_column != "label" and "label" in df.columns and "label" not in ignored:
        problems.append(f"{source}: column 'label' would be overwritten by the 0/1 label made from data.label_column "
                        f"{opts.label_column!r}; rename it or list it in data.drop_columns")
    out = pd.DataFrame(index=df.index)
    features: list[Feature] = []
    explicit = template_mode or opts.columns is not None
    for c in df.columns:
        if c == opts.label_column:
            continue
        if c == opts.time_column:
            kind, values, bad = _time_values(df[c], c, where)
        elif c in candidates:
            kind, values, bad = infer_column(df[c], c, where)
        else:
            out[c] = df[c]
            continue
        problems += bad
        out[c] = values
        if c not in candidates:
            continue
        if template_mode and expected and c in expected and not bad:
            problems += _template_value_problems(df[c], kind, expected[c], c, where, source)
        present = values.dropna()
        # one value in some rows and nothing in the others still tells rows apart (a note or none): only a
        # column with one value in every row, or none in any, says nothing
        if not explicit and (present.empty or (present.nunique() == 1 and len(present) == len(values))):
            ignored[c] = "empty" if present.empty else f"constant ({show(present.iloc[0])} in every row)"
            continue
        features.append(Feature(c, kind))
    if explicit:  # the template's own order, or data.columns' order
        features.sort(key=lambda f: candidates.index(f.name))
    if not explicit and len(features) > opts.max_prompt_columns:
        for f in features[opts.max_prompt_columns:]:
            ignored[f.name] = (f"over data.max_prompt_columns ({opts.max_prompt_columns}); list the columns to use "
                               "in data.columns")
        features = features[:opts.max_prompt_columns]
    if not features and not problems:
        problems.append(f"{source}: no column is left to decide from (label {opts.label_column!r}"
                        + "".join(f", {c!r}: {why}" for c, why in ignored.items()) + ")")
    if problems:
        raise TableProblems(problems)
    out["label"] = labels
    before = len(out)
    dup = out.drop(columns=[c for c in [opts.id_column] if c]).duplicated(keep="first")
    out = out.loc[~dup.to_numpy()].reset_index(drop=True)
    spec = TableSpec(mode="template" if template_mode else "columns", features=features,
                     label_column=opts.label_column, labels=mapping, time_column=opts.time_column,
                     id_column=opts.id_column, ignored=ignored)
    return Table(out, spec, source, before, before - len(out))


def _template_value_problems(raw: pd.Series, kind: str, want: str, name: str, where, source: str) -> list[str]:
    """A column the template's hand-written prompt reads: every value present and of the kind its
    synthesizer gives (numbers, true/false, text)."""
    out = []
    missing = raw.isna().to_numpy()
    if missing.any() and want != "text":  # free text may be empty (a transaction without a note)
        out.append(f"{where(np.flatnonzero(missing))}, column {name!r}: missing value")
    present = raw[~missing]
    if present.empty:
        return out
    if want == "number" and kind != "number":
        bad = pd.to_numeric(present.astype("string"), errors="coerce").isna().to_numpy()
    elif want == "bool" and kind != "bool":
        bad = ~present.astype("string").str.strip().str.lower().isin(["true", "false", "0", "1", "0.0", "1.0"]).to_numpy()
    elif want in ("category", "text") and kind == "number":
        return out + [f"{source}: column {name!r} holds numbers (e.g. {show(present.iloc[0])}); the template expects "
                      "text"]
    else:
        return out
    if bad.any():
        pos = np.flatnonzero(~missing)[bad]
        out.append(f"{where(pos)}, column {name!r}: {show(raw.iloc[pos[0]])} is not "
                   f"{'a number' if want == 'number' else 'true/false'}")
    return out


def expected_kinds(template: Any, options: Any, seed: int) -> dict[str, str]:
    """Kind of each of the template's own columns, read from a few synthesized rows ({} without a synthesizer)."""
    try:
        sample = template.synthesize(8, seed, options)
    except Exception:  # a synthesizer that needs more rows: no expectations, other checks still run
        return {}
    return {f.name: f.kind for f in template_spec(template, sample).features}


def _missing_columns(df: pd.DataFrame, opts: TableOptions, source: str) -> list[str]:
    have = [str(c) for c in df.columns]

    def missing(field_name: str, col: str) -> str:
        close = difflib.get_close_matches(col, have, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listed = ", ".join(repr(c) for c in have[:20]) + (" ..." if len(have) > 20 else "")
        return f"{source} lacks column {col!r} (data.{field_name}); its columns: {listed}{hint}"

    out = []
    for field_name in ("label_column", "time_column", "id_column"):
        col = getattr(opts, field_name)
        if col is not None and col not in df.columns:
            out.append(missing(field_name, col))
    for field_name in ("columns", "drop_columns"):
        for col in getattr(opts, field_name) or ():
            if col not in df.columns:
                out.append(missing(field_name, col))
    return out


def map_labels(values: pd.Series, label_words: dict[int, str], positive: Any, column: str,
               where: Callable[[Sequence[int]], str], source: str) -> tuple[np.ndarray, dict[str, int], list[str]]:
    """Label values -> 0..n-1. Two labels: booleans, 0/1, true/false, yes/no (any case), or
    `positive` -> 1 and the one other value -> 0. More labels: integers 0..n-1."""
    n = len(label_words)
    words = ", ".join(f"{k} = {w.strip()!r}" for k, w in sorted(label_words.items()))
    missing = values.isna().to_numpy()
    problems = []
    if missing.any():
        problems.append(f"{where(np.flatnonzero(missing))}, column {column!r}: missing label")
    labels = np.zeros(len(values), dtype=int)
    mapping: dict[str, int] = {}
    present = ~missing
    if n != 2 or positive is None:
        if n == 2 and pd.api.types.is_bool_dtype(values):
            codes = values.astype("boolean").astype("Int64")
        elif pd.api.types.is_numeric_dtype(values):
            codes = pd.to_numeric(values, errors="coerce")
            codes = codes.where(codes.isin(list(range(n))))
        elif n == 2:
            low = values.astype("string").str.strip().str.lower()
            codes = pd.Series(np.where(low.isin(TRUE_WORDS), 1.0, np.where(low.isin(FALSE_WORDS), 0.0, np.nan)))
        else:
            codes = pd.to_numeric(values, errors="coerce")
            codes = codes.where(codes.isin(list(range(n))))
        codes = pd.Series(codes.to_numpy(dtype=float, na_value=np.nan))
        bad = present & codes.isna().to_numpy()
        if bad.any():
            found = sorted({show(v) for v in values.to_numpy()[bad]})
            allowed = ("0/1, true/false or yes/no; set data.positive_label to the value that means "
                       f"{label_words[1].strip()!r}" if n == 2 else f"the integers 0..{n - 1}")
            problems.append(f"{where(np.flatnonzero(bad))}, column {column!r}: {', '.join(found[:5])} "
                            f"{'is not a label' if len(found) == 1 else 'are not labels'} (labels must be {allowed}; "
                            f"the template's labels: {words})")
        ok = present & ~bad
        labels[ok] = codes.to_numpy()[ok].astype(int)
        seen = pd.DataFrame({"value": values[ok].astype(str).to_numpy(), "label": labels[ok]}).drop_duplicates("value")
        mapping = {str(v): int(lab) for v, lab in zip(seen["value"].head(4 * n), seen["label"].head(4 * n))}
    else:
        is_pos = present & _equals(values, positive)
        if not is_pos.any():
            seen = ", ".join(show(v) for v in pd.unique(values.dropna())[:5])
            problems.append(f"{source}: column {column!r} never holds data.positive_label {positive!r} "
                            f"(its values include {seen})")
        others = values[present & ~is_pos]
        counts = others.astype(str).value_counts()
        if len(counts) > 1:
            extra = np.flatnonzero((present & ~is_pos) & (values.astype(str) != counts.index[0]).to_numpy())
            found = ", ".join(repr(v) for v in counts.index[1:6])
            problems.append(f"{where(extra)}, column {column!r}: {found} {'is' if len(counts) == 2 else 'are'} neither "
                            f"data.positive_label {positive!r} nor {counts.index[0]!r}; a label column holds exactly "
                            "two values")
        labels[is_pos] = 1
        mapping = {str(positive): 1, **({str(counts.index[0]): 0} if len(counts) else {})}
    if not problems:
        classes = np.unique(labels)
        if len(classes) < n:
            only = ", ".join(f"{k} ({label_words[k].strip()!r})" for k in classes)
            problems.append(f"{source}: column {column!r} holds a single class: every row is label {only}; a "
                            "decision needs examples of every label")
    return labels, mapping, problems


def _equals(values: pd.Series, target: Any) -> np.ndarray:
    """values == target, comparing numbers as numbers and everything else as stripped text."""
    if pd.api.types.is_bool_dtype(values) and isinstance(target, (bool, str)):
        t = target if isinstance(target, bool) else str(target).strip().lower() in TRUE_WORDS
        return (values == t).fillna(False).to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(values) and not isinstance(target, bool):
        try:
            return (pd.to_numeric(values, errors="coerce") == float(target)).to_numpy(dtype=bool)
        except (TypeError, ValueError):
            return np.zeros(len(values), dtype=bool)
    return (values.astype("string").str.strip() == str(target).strip()).fillna(False).to_numpy(dtype=bool)


def _id_problems(ids: pd.Series, column: str, where) -> list[str]:
    out = []
    missing = ids.isna().to_numpy()
    if missing.any():
        out.append(f"{where(np.flatnonzero(missing))}, column {column!r}: missing id")
    dup = (ids.duplicated(keep=False) & ids.notna()).to_numpy()
    if dup.any():
        pos = np.flatnonzero(dup)
        first = ids.iloc[pos[0]]
        out.append(f"{where(pos)}, column {column!r}: duplicate ids ({show(first)} appears "
                   f"{int((ids == first).sum())} times; data.id_column must be unique)")
    return out


def infer_column(s: pd.Series, name: str, where) -> tuple[str, pd.Series, list[str]]:
    """(kind, typed values, problems) of a feature column: numbers, booleans, timestamps and dates are
    recognised from the values; other text is a category, or free text when long."""
    if pd.api.types.is_bool_dtype(s):
        return "bool", s, []
    if pd.api.types.is_datetime64_any_dtype(s):
        values = _naive(s)
        return _time_kind(values), values, []
    if pd.api.types.is_numeric_dtype(s):
        return "number", s, []
    present = s.notna().to_numpy()
    text = s.astype("string").str.strip()
    shown = text[present]
    if shown.empty:
        return "category", s, []
    low = shown.str.lower()
    if low.nunique() <= 2 and low.isin(TRUE_WORDS | FALSE_WORDS).all() and not shown.str.isdigit().all():
        values = pd.Series(pd.NA, index=s.index, dtype="boolean")
        values[present] = low.isin(TRUE_WORDS).to_numpy()
        return "bool", values, []
    nums = pd.to_numeric(shown, errors="coerce")
    ok = nums.notna().to_numpy()
    if ok.all():
        return "number", pd.to_numeric(text, errors="coerce"), []
    if ok.mean() >= MOSTLY_NUMBERS:
        pos = np.flatnonzero(present)[~ok]
        return "number", s, [f"{where(pos)}, column {name!r}: {show(s.iloc[pos[0]])} is not a number (the column's "
                             f"other {int(ok.sum())} values are)"]
    if shown.str.match(ISO_TIME.pattern).all():
        return _time_values(s, name, where)
    words = shown.str.split().str.len()
    kind = "text" if words.median() >= TEXT_MIN_WORDS or shown.str.len().mean() >= TEXT_MIN_CHARS else "category"
    return kind, s.astype(object).where(present, None), []


def _time_values(s: pd.Series, name: str, where) -> tuple[str, pd.Series, list[str]]:
    """The time column: numbers order as they are (e.g. an hour index); anything else is parsed as dates
    and times (every row must parse)."""
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        missing = s.isna().to_numpy()
        bad = [f"{where(np.flatnonzero(missing))}, column {name!r}: missing time"] if missing.any() else []
        return "number", s, bad
    parsed = parse_times(s)
    missing = s.isna().to_numpy()
    bad = ~missing & parsed.isna().to_numpy()
    problems = []
    if missing.any():
        problems.append(f"{where(np.flatnonzero(missing))}, column {name!r}: missing time")
    if bad.any():
        pos = np.flatnonzero(bad)
        problems.append(f"{where(pos)}, column {name!r}: {show(s.iloc[pos[0]])} is not a date or time")
    return _time_kind(parsed), parsed, problems


def parse_times(s: pd.Series) -> pd.Series:
    """Dates and times as naive timestamps (time zones converted to UTC); NaT where a value does not parse."""
    if pd.api.types.is_datetime64_any_dtype(s):
        return _naive(s)
    text = s.astype("string").str.strip()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = pd.to_datetime(text, errors="coerce")
        except (ValueError, TypeError):  # mixed time zones
            out = pd.to_datetime(text, errors="coerce", utc=True)
        out = _naive(out)
        retry = out.isna() & text.notna()
        if retry.any():  # a first format was inferred; other rows may use another one
            again = pd.to_datetime(text[retry], errors="coerce", format="mixed", utc=True)
            out = out.copy()
            out[retry] = _naive(again)
    return out


def _naive(s: pd.Series) -> pd.Series:
    if getattr(s.dt, "tz", None) is not None:
        return s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s


def _time_kind(values: pd.Series) -> str:
    present = values.dropna()
    if len(present) and (present == present.dt.normalize()).all():
        return "date"
    return "timestamp"


def coerce_rows(df: pd.DataFrame, spec: TableSpec, source: str, csv: bool = False) -> pd.DataFrame:
    """New rows (scoring) read as the data stage read the training table: each feature as its kind; a
    value that is not of its column's kind is named."""
    missing = [f.name for f in spec.features if f.name not in df.columns]
    if missing:
        raise DistillError(f"{source} lacks column(s) {missing} (the model's input columns: {spec.names})",
                           field=missing[0])
    out = df.copy()
    where = lambda pos: where_rows(source, pos, csv, df.attrs.get("row_breaks"))  # noqa: E731
    problems, columns = [], []  # columns: each problem's, the first named as the error's field
    for f in spec.features:
        s = df[f.name].reset_index(drop=True)
        if f.kind == "number":
            nums = pd.to_numeric(s, errors="coerce")
            bad = (s.notna() & nums.isna()).to_numpy()
            if bad.any():
                pos = np.flatnonzero(bad)
                problems.append(f"{where(pos)}, column {f.name!r}: {show(s.iloc[pos[0]])} is not a number")
                columns.append(f.name)
            out[f.name] = nums.to_numpy()
        elif f.kind == "bool":
            if not pd.api.types.is_bool_dtype(s):
                low = s.astype("string").str.strip().str.lower()
                bad = (s.notna() & ~low.isin(TRUE_WORDS | FALSE_WORDS).fillna(False)).to_numpy()
                if bad.any():
                    pos = np.flatnonzero(bad)
                    problems.append(f"{where(pos)}, column {f.name!r}: {show(s.iloc[pos[0]])} is not true/false")
                    columns.append(f.name)
                values = pd.Series(pd.NA, index=s.index, dtype="boolean")
                ok = s.notna().to_numpy() & ~bad
                values[ok] = low[ok].isin(TRUE_WORDS).to_numpy()
                out[f.name] = values.to_numpy()
        elif f.kind in ("timestamp", "date"):
            parsed = parse_times(s)
            bad = (s.notna() & parsed.isna()).to_numpy()
            if bad.any():
                pos = np.flatnonzero(bad)
                problems.append(f"{where(pos)}, column {f.name!r}: {show(s.iloc[pos[0]])} is not a date or time")
                columns.append(f.name)
            out[f.name] = parsed.to_numpy()
    if problems:
        raise TableProblems(problems, field=columns[0])
    return out


# ---- splitting and leakage

def split_table(df: pd.DataFrame, n_train: int, n_val: int, n_test: int, seed: int, source: str,
                time_column: str | None = None) -> dict[str, pd.DataFrame]:
    """Time-ordered when `time_column` is set: test = the latest n_test rows, val = the n_val before them,
    train = up to n_train rows before those (train on the past, test on the future). Otherwise the
    stratified random split of sdk.data.split."""
    from sdk.data import split

    if time_column is None:
        return split(df, n_train, n_val, n_test, seed, source, stratify="label")
    if len(df) < n_val + n_test + 2:
        raise DistillError(f"dataset {source} has {len(df)} rows; data.n_val + data.n_test need {n_val + n_test} "
                           "plus training rows")
    order = df.sort_values(time_column, kind="stable").reset_index(drop=True)
    test = order.iloc[len(order) - n_test:]
    val = order.iloc[len(order) - n_test - n_val:len(order) - n_test]
    train = order.iloc[:len(order) - n_test - n_val].iloc[-n_train:]
    parts = {"train": train, "val": val, "test": test}
    for name, part in parts.items():
        if part["label"].nunique() < 2:
            lo, hi = part[time_column].min(), part[time_column].max()
            raise DistillError(f"dataset {source}: the {name} split ({len(part)} rows, {time_column} {_when(lo)} to "
                               f"{_when(hi)}) holds only label {int(part['label'].iloc[0])}; a time-ordered split needs "
                               "both labels in every period (use more rows, or other data.n_* sizes)")
    return {k: v.reset_index(drop=True) for k, v in parts.items()}


def remove_leakage(parts: dict[str, pd.DataFrame], columns: Sequence[str]) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
    """Validation rows identical in every model input to a training row, and test rows identical to a
    training or validation row, are removed: a model would be tested on examples it has seen. Returns the
    parts and the removed count per split."""
    cols = list(columns)
    if not cols:
        return parts, {"val": 0, "test": 0}

    def keys(df: pd.DataFrame) -> np.ndarray:
        return pd.util.hash_pandas_object(df[cols], index=False).to_numpy()

    seen = set(keys(parts["train"]).tolist())
    out, removed = dict(parts), {}
    for name in ("val", "test"):
        k = keys(parts[name])
        leak = np.fromiter((x in seen for x in k.tolist()), dtype=bool, count=len(k))
        removed[name] = int(leak.sum())
        out[name] = parts[name].loc[~leak].reset_index(drop=True)
        seen.update(k.tolist())
    return out, removed


def split_summary(parts: dict[str, pd.DataFrame], time_column: str | None) -> dict[str, dict[str, Any]]:
    """Rows, positives (label > 0) and, with a time column, the first and last time of each split."""
    out = {}
    for name, part in parts.items():
        s: dict[str, Any] = {"rows": len(part)}
        if "label" in part:
            s["positives"] = int((part["label"] > 0).sum())
        if time_column and time_column in part and len(part):
            s["time_range"] = [_when(part[time_column].min()), _when(part[time_column].max())]
        out[name] = s
    return out


def _when(v: Any) -> str:
    if isinstance(v, pd.Timestamp):
        return v.isoformat(sep=" ")
    return str(v.item() if hasattr(v, "item") else v)


# ---- prompts

def compact_number(x: float) -> str:
    """A number in few tokens: 24900, 1234.5, 38.589, -0.25, 1.2e-4, 3.5e7."""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    a = abs(x)
    if a >= 1e7 or a < 1e-3:
        mantissa, exp = f"{x:.1e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
    if a >= 1e5:
        return str(int(round(x)))
    return f"{x:.5g}"


def format_value(value: Any, kind: str) -> str:
    """One cell as the prompt shows it; missing values as 'n/a'."""
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if kind == "bool":
        return "yes" if bool(value) else "no"
    if kind == "number":
        return compact_number(value)
    if kind in ("timestamp", "date"):
        t = pd.Timestamp(value)
        return t.strftime("%Y-%m-%d") if kind == "date" else t.strftime("%Y-%m-%d %Hh")
    text = " ".join(str(value).split())
    limit = MAX_CHARS.get(kind, 40)
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def render_features(row: dict[str, Any], features: Sequence[Feature]) -> str:
    """'name: value; name: value' over the model's input columns, in order."""
    return "; ".join(f"{f.name}: {format_value(row.get(f.name), f.kind)}" for f in features)


def prompt_function(template: Any, spec: TableSpec | None) -> Callable[[dict[str, Any]], str]:
    """row -> prompt: the template's own prompt in mode "template" (or without a table), else its
    `table_prompt` over the spec's features."""
    if spec is None or spec.mode == "template" or not hasattr(template, "table_prompt"):
        return template.prompt
    features = list(spec.features)
    return lambda row: template.table_prompt(row, features)


def template_spec(template: Any, df: pd.DataFrame) -> TableSpec:
    """The spec of a table with the template's own columns (synthesized data): kinds read from the values."""
    where = lambda pos: where_rows("synthesized", pos, False)  # noqa: E731
    text = set(getattr(template, "text_columns", ()))  # declared free text (short or often empty values)
    features = [Feature(c, "text" if c in text else infer_column(df[c], c, where)[0]) for c in template.columns]
    hidden = [c for c in getattr(template, "hidden_columns", ()) if c in df.columns]
    return TableSpec(mode="template", features=features,
                     ignored={c: "describes the answer (the template's hidden column): never a model input"
                              for c in hidden})


def is_tabular(template: Any) -> bool:
    """A decision template that reads tables generically (it renders prompts from columns)."""
    return getattr(template, "task", None) == "decision" and hasattr(template, "table_prompt")


# ---- classic baselines over the same features

def classic_models(features: Sequence[Feature], seed: int) -> dict[str, Any]:
    """Unfitted scikit-learn pipelines over exactly `features`: histogram gradient boosting (numbers as they
    are, missing values native, one-hot categories, TF-IDF text made dense) and logistic regression (scaled
    numbers, one-hot categories, TF-IDF text). Timestamps enter as hour of day and day of week."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    by_kind = {k: [f.name for f in features if f.kind == k] for k in KINDS}
    categorical, numeric = by_kind["category"], [f.name for f in features if f.kind in ("number", "bool")]
    times = by_kind["timestamp"] + by_kind["date"]

    def onehot():
        return make_pipeline(FunctionTransformer(_as_text, feature_names_out="one-to-one"),
                             OneHotEncoder(handle_unknown="ignore", max_categories=32, sparse_output=False))

    def blocks(scale: bool) -> list:
        out = []
        if categorical:
            out.append(("categories", onehot(), categorical))
        if numeric:
            num = FunctionTransformer(_as_float, feature_names_out="one-to-one")
            out.append(("numbers", make_pipeline(num, SimpleImputer(strategy="median", keep_empty_features=True),
                                                 StandardScaler()) if scale else num, numeric))
        if times:
            t = FunctionTransformer(_time_parts)
            out.append(("times", make_pipeline(t, SimpleImputer(strategy="median", keep_empty_features=True),
                                               StandardScaler()) if scale else t, times))
        for i, name in enumerate(by_kind["text"]):  # one TF-IDF per text column
            tfidf = TfidfVectorizer(max_features=2000 if scale else 300, sublinear_tf=True)
            out.append((f"text{i}", make_pipeline(FunctionTransformer(_as_strings), tfidf), name))
        return out

    logistic = make_pipeline(ColumnTransformer(blocks(scale=True)),
                             LogisticRegression(max_iter=2000, random_state=seed))
    boosting = make_pipeline(ColumnTransformer(blocks(scale=False), sparse_threshold=0.0),
                             HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=seed))
    return {"baseline-gradient-boosting": boosting, "baseline-logistic-regression": logistic}


def _as_text(x: pd.DataFrame) -> pd.DataFrame:
    return x.astype(object).where(x.notna(), "(missing)").astype(str)


def _as_float(x: pd.DataFrame) -> pd.DataFrame:
    return x.apply(lambda c: pd.to_numeric(c.astype("Float64") if pd.api.types.is_bool_dtype(c) else c,
                                           errors="coerce")).astype(float)


def _time_parts(x: pd.DataFrame) -> np.ndarray:
    cols = []
    for c in x.columns:
        t = pd.to_datetime(x[c], errors="coerce")
        cols += [t.dt.hour.to_numpy(dtype=float, na_value=np.nan), t.dt.day_of_week.to_numpy(dtype=float, na_value=np.nan)]
    return np.stack(cols, axis=1)


def _as_strings(x: pd.Series) -> list[str]:
    return ["" if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA else str(v) for v in x]
