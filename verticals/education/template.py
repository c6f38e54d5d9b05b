"""The education template (decision shape, two or more labels): grade a student's answer to a math word
problem against the reference answer, either correct/incorrect or a rubric score 0..K.

The grading scheme is an option (`grading: binary | rubric`), and the label words follow it, so the
template is configured by its options (`configure`) before the SDK reads `label_words`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from evaluation.metrics import confusion, macro_f1, quadratic_kappa
from sdk.errors import DistillError, not_a_file, problems_error
from sdk.typed_config import TypedConfig
from verticals.education.answers import (CORRECT_TYPES, ERROR_TYPES, RUBRIC_MAX, applicable, reference_text,
                                        student_answer, words)

_HERE = Path(__file__).parent
DEFAULT_ERROR_MIX = {"correct": 0.26, "equivalent": 0.22, "arithmetic_slip": 0.10, "wrong_operation": 0.08,
                     "unit_error": 0.12, "rounding": 0.12, "partial": 0.10}
_TRUE = {"correct", "true", "1", "yes", "right"}
_FALSE = {"incorrect", "false", "0", "no", "wrong"}
MAX_FIELD_CHARS = 4000


class EducationOptions(TypedConfig):
    """`template_options` of the education template."""

    grading: Literal["binary", "rubric"] = Field(
        "binary", description="binary: the label says correct or incorrect (the words, true/false or 1/0); "
        "rubric: the label is a score 0..rubric_max.")
    rubric_max: int = Field(RUBRIC_MAX, ge=1, le=5, description="Highest rubric score (grading: rubric). "
                            "Synthesized records are graded 0..2.")
    gsm_share: float = Field(0.0, ge=0, le=1, description="Share of synthesized problems taken from "
                             "reasoning-gym's GSM-Symbolic generators (the rest: this template's seven families).")
    difficulties: list[int] = Field([1, 2, 3], min_length=1, description="Difficulty levels (steps) of "
                                    "synthesized problems, drawn uniformly.")
    error_mix: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_ERROR_MIX),
                                        description="Share of each answer type in synthesized records "
                                        f"({', '.join(ERROR_TYPES)}); normalised.")
    abs_tolerance: float = Field(0.005, ge=0, description="The parsing baseline's absolute tolerance.")

    @model_validator(mode="after")
    def _check(self) -> "EducationOptions":
        unknown = sorted(set(self.error_mix) - set(ERROR_TYPES))
        if unknown:
            raise ValueError(f"error_mix: unknown answer types {unknown} (known: {', '.join(ERROR_TYPES)})")
        if any(v < 0 for v in self.error_mix.values()) or sum(self.error_mix.values()) <= 0:
            raise ValueError("error_mix: shares must be >= 0 and not all 0")
        if bad := [d for d in self.difficulties if d not in (1, 2, 3)]:
            raise ValueError(f"difficulties: levels are 1, 2 or 3, got {bad}")
        return self


def label_words_for(options: EducationOptions) -> dict[int, str]:
    if options.grading == "binary":
        return {0: " no", 1: " yes"}
    return {k: f" {words(k)}" for k in range(options.rubric_max + 1)}


class EducationTemplate:
    name = "education"
    description = "Grading students' answers to math word problems (accuracy, macro F1, weighted kappa)."
    task = "decision"
    columns = ("question", "reference", "answer")
    prompt_version = "1"
    hidden_columns = ("error_type", "family", "difficulty", "source")  # describe the answer: never a model input
    primary_metric = "accuracy"
    retention_metrics = ("accuracy", "macro_f1", "kappa")
    lower_is_better = frozenset({"false_accept_rate", "false_reject_rate"})
    chat = False  # a compact raw prompt: its length sets the cost of every decision
    stratify = "label"
    Options = EducationOptions

    def __init__(self, options: EducationOptions | None = None):
        self.options = options or EducationOptions()
        self.label_words = label_words_for(self.options)

    def configure(self, options: EducationOptions) -> "EducationTemplate":
        """This template for `options` (the label words follow the grading scheme)."""
        return EducationTemplate(options)

    # ---- data
    def synthesize(self, n: int, seed: int, options: EducationOptions) -> pd.DataFrame:
        from verticals.education.gsm import gsm_problem
        from verticals.education.problems import make_problem

        if options.grading == "rubric" and options.rubric_max != RUBRIC_MAX:
            raise DistillError(f"template_options.rubric_max: synthesized records are graded 0..{RUBRIC_MAX}; set "
                               f"rubric_max: {RUBRIC_MAX} or bring your own records (data.path)")
        rng = np.random.default_rng([seed, 7])
        kinds = list(options.error_mix)
        p = np.array([options.error_mix[k] for k in kinds], dtype=float)
        p /= p.sum()
        rows = []
        for _ in range(n):
            if options.gsm_share > 0 and rng.random() < options.gsm_share:
                problem, source = gsm_problem(rng), "gsm_symbolic"
            else:
                d = options.difficulties[int(rng.integers(len(options.difficulties)))]
                problem, source = make_problem(rng, difficulty=d), "synthetic"
            # the mix over the answer types this problem allows (no rounding of an integer answer...)
            allowed = applicable(problem)
            q = np.array([w if k in allowed else 0.0 for k, w in zip(kinds, p)])
            if q.sum() == 0:
                q = np.array([k == "correct" for k in kinds], dtype=float) if "correct" in kinds else p
            answer, kind, score = student_answer(problem, kinds[int(rng.choice(len(kinds), p=q / q.sum()))], rng)
            label = int(kind in CORRECT_TYPES) if options.grading == "binary" else score
            rows.append({"question": problem.question, "reference": reference_text(problem), "answer": answer,
                         "label": label, "error_type": kind, "family": problem.family,
                         "difficulty": problem.difficulty, "source": source})
        return pd.DataFrame(rows)

    def load(self, path: Path) -> pd.DataFrame:
        """Records from JSONL (one object per line; .jsonl.gz too) or CSV: `question`, `reference`, `answer`,
        `label`; other fields are kept and ignored. Every bad line is named with its field, all at once; a
        record repeating an earlier one's question, reference and answer is dropped (see `read_records`)."""
        return read_records(Path(path), self.options)

    def prepare_train(self, train: pd.DataFrame, seed: int, options: EducationOptions) -> pd.DataFrame:
        return train

    def prompt(self, row: dict[str, Any]) -> str:
        return grading_prompt(row, self._ask())

    def _ask(self) -> str:
        return "Correct?" if self.options.grading == "binary" else f"Score 0-{self.options.rubric_max}?"

    def standalone_prompt(self) -> str:
        """Source of a `prompt(row)` that needs only Python, this grading scheme's question baked in (what an
        on-prem bundle ships; sdk.bundle checks it reproduces `prompt` on the run's rows)."""
        import inspect

        return inspect.getsource(grading_prompt) + f"\n\ndef prompt(row):\n    return grading_prompt(row, {self._ask()!r})\n"

    # ---- decisions and metrics
    def choose_threshold(self, y_val: np.ndarray, probs_val: np.ndarray, options: EducationOptions) -> float | None:
        """Binary: the threshold on P(correct) with the best validation accuracy (the same rule for every
        artifact); rubric: None, the most probable score is the grade."""
        probs_val = np.asarray(probs_val)
        if probs_val.shape[1] != 2:
            return None
        y = np.asarray(y_val).astype(int)
        scores = probs_val[:, 1]
        cuts = np.unique(np.concatenate([[0.5], scores]))
        accuracy = [(np.mean((scores >= c) == (y == 1)), -abs(c - 0.5)) for c in cuts]
        return float(cuts[max(range(len(cuts)), key=lambda i: accuracy[i])])

    def decide(self, probs: np.ndarray, threshold: float | None, options: EducationOptions) -> np.ndarray:
        probs = np.asarray(probs)
        if probs.shape[1] == 2 and threshold is not None:
            return (probs[:, 1] >= threshold).astype(int)
        return np.argmax(probs, axis=1)

    def proportion_counts(self, m: dict[str, Any]) -> dict[str, tuple[int, int]]:
        """(right, graded) of accuracy: the report gives it a Wilson interval (evaluation/uncertainty.py)."""
        n, acc = int(m.get("n", 0)), m.get("accuracy")
        if not n or acc is None or not np.isfinite(acc):
            return {}
        return {"accuracy": (int(round(acc * n)), n)}

    def metrics(self, y_true: np.ndarray, probs: np.ndarray, threshold: float | None,
                options: EducationOptions) -> dict[str, float]:
        y = np.asarray(y_true).astype(int)
        n_labels = np.asarray(probs).shape[1]
        pred = self.decide(probs, threshold, options)
        top = n_labels - 1  # full marks ("correct" for binary grading)
        full_pred, full_true = pred == top, y == top
        # computed 1,000 times per artifact by the report's bootstrap: numpy, equal to scikit-learn's
        cm = confusion(y, pred, n_labels)
        return {
            "accuracy": float(np.mean(y == pred)) if len(y) else float("nan"),
            "macro_f1": macro_f1(cm),
            # quadratic weights: a grade two points off costs four times one point off (equals Cohen's kappa
            # for two labels); undefined when one grade is all there is
            "kappa": quadratic_kappa(cm) if len(np.unique(np.concatenate([y, pred]))) > 1 else float("nan"),
            # the errors a school weighs differently: full marks for a wrong answer, or none for a right one
            "false_accept_rate": float(np.sum(full_pred & ~full_true) / max(np.sum(~full_true), 1)),
            "false_reject_rate": float(np.sum(~full_pred & full_true) / max(np.sum(full_true), 1)),
            "threshold": None if threshold is None else float(threshold),
            "n": float(len(y)),
        }

    def confusion(self, y_true: np.ndarray, probs: np.ndarray, threshold: float) -> np.ndarray:
        from sklearn.metrics import confusion_matrix

        n_labels = np.asarray(probs).shape[1]
        return confusion_matrix(np.asarray(y_true).astype(int), self.decide(probs, threshold, self.options),
                                labels=list(range(n_labels)))

    def breakdown(self, test: pd.DataFrame, probs: dict[str, np.ndarray], thresholds: dict[str, float]
                  ) -> dict[str, dict[str, float]]:
        """Accuracy per answer type (synthesized records carry `error_type`): {artifact: {type: accuracy}}."""
        if "error_type" not in test.columns:
            return {}
        y = test["label"].to_numpy().astype(int)
        kinds = [k for k in ERROR_TYPES if (test["error_type"] == k).any()]
        out = {}
        for name, p in probs.items():
            right = self.decide(p, thresholds.get(name), self.options) == y
            out[name] = {k: float(right[(test["error_type"] == k).to_numpy()].mean()) for k in kinds}
        return out

    def baselines(self, train: pd.DataFrame, seed: int, options: EducationOptions,
                  features: list | None = None) -> dict[str, Any]:
        """The rule a school would write first: answer equivalence by parsing (numbers, fractions, simple
        expressions through sympy, a tolerance). It learns nothing from `train`."""
        from verticals.education.equivalence import ParsingBaseline

        return {"parsing_rule": ParsingBaseline(len(self.label_words), abs_tol=options.abs_tolerance)}

    def plot(self, report: dict[str, Any], details: dict[str, Any], test: pd.DataFrame, out: Path) -> Path:
        from verticals.education.plots import plot_report

        probs = {name: np.asarray(d["probs_test"]) for name, d in details.items()}
        thresholds = {a["name"]: a["metrics"].get("threshold", 0.5) for a in report["artifacts"]}
        return plot_report(self, report, test, probs, thresholds, out)

    def preset_path(self, preset: str) -> Path:
        return _HERE / f"{preset}.yaml"


def parse_label(value: Any, options: EducationOptions) -> int:
    """A record's label as 0..n-1 (raises ValueError with what is accepted)."""
    if options.grading == "binary":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, (int, float)) and value in (0, 1):
            return int(value)
        text = str(value).strip().lower()
        if text in _TRUE:
            return 1
        if text in _FALSE:
            return 0
        raise ValueError(f"{value!r} is not a binary grade (correct/incorrect, true/false or 1/0)")
    hint = (f"{value!r} is not a rubric score 0..{options.rubric_max} (for correct/incorrect labels set "
            "template_options.grading: binary)")
    if isinstance(value, bool):
        raise ValueError(hint)
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise ValueError(hint) from None
    if score != int(score) or not 0 <= score <= options.rubric_max:
        raise ValueError(hint)
    return int(score)


FIELDS = ("question", "reference", "answer", "label")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")


def read_records(path: Path, options: EducationOptions, max_problems: int = 20) -> pd.DataFrame:
    """JSONL (optionally gzipped) or CSV records -> a frame with columns + label (0..n-1) + the record's
    other fields. A record repeating an earlier one's question, reference and answer is dropped here (the
    data stage keeps such prompts once anyway, and `distill init` / `check` count the rows left); how many,
    and those whose label differs from the kept one's, are said (df.attrs, and a warning for the labels)."""
    if not path.is_file():
        raise DistillError(f"dataset {path} {not_a_file(path)}")
    problems: list[str] = []
    records: list[dict[str, Any]] = []
    wheres: list[str] = []  # each record's row or line, and its label as written: to name repeats
    written: list[Any] = []
    from sdk.tables import csv_lines, is_csv, read_csv

    name = path.name.lower()
    # by the whole name: records.jsonl.gz is JSONL (its suffix alone, .gz, once sent it to the CSV reader)
    if name.endswith(JSONL_SUFFIXES) or name.endswith(tuple(s + ".gz" for s in JSONL_SUFFIXES)):
        raw = _json_records(path, problems)
    elif is_csv(path):
        try:
            df = read_csv(path, dtype=str, keep_default_na=False, sep="\t" if name.endswith(".tsv") else ",")
        except DistillError:
            raise
        except Exception as err:  # pandas raises many kinds; all mean "unreadable"
            raise DistillError(f"dataset {path}: cannot read it as CSV ({type(err).__name__}: {err})") from None
        # rows counted as sdk.tables counts a table's (fraud): row 1 is the first record, line 1 the header
        # a quoted answer over several lines moves the rows after it down the file
        lines = csv_lines(len(df), df.attrs.get("row_breaks"))
        raw = [(f"row {i + 1} (line {lines[i]})", rec) for i, rec in enumerate(df.to_dict("records"))]
    else:
        raise DistillError(f"dataset {path}: expected JSON Lines ({', '.join(JSONL_SUFFIXES)}, each also .gz) or CSV "
                           "(.csv, .csv.gz/.bz2/.zip/.xz, tab-separated .tsv) records")
    if raw and not any("label" in rec for _, rec in raw):
        # nothing can be graded without it (as a table's missing column): one line, not one per record
        fields = sorted({k for _, rec in raw for k in rec})
        raise DistillError(f"dataset {path}: no record has a 'label' field (fields: {', '.join(fields)}); the "
                           "education template reads each grade from 'label': rename that field (data.label_column "
                           "and --label-column apply to table templates such as fraud)")
    for where, rec in raw:
        bad = False
        for field in FIELDS:
            if field not in rec or rec[field] is None:
                problems.append(f"{where}: field {field!r} is missing")
                bad = True
            elif field != "label" and not isinstance(rec[field], (str, int, float)):
                problems.append(f"{where}: field {field!r} must be text, got {type(rec[field]).__name__}")
                bad = True
            elif field != "label" and not str(rec[field]).strip():
                problems.append(f"{where}: field {field!r} is empty")
                bad = True
            elif field != "label" and len(str(rec[field])) > MAX_FIELD_CHARS:
                problems.append(f"{where}: field {field!r} is longer than {MAX_FIELD_CHARS} characters")
                bad = True
        if not bad:
            try:
                label = parse_label(rec["label"], options)
            except ValueError as err:
                problems.append(f"{where}: field 'label': {err}")
                continue
            # other fields are kept as text (one type per column, whatever each record held)
            extra = {k: None if v is None else v if isinstance(v, str) else json.dumps(v)
                     for k, v in rec.items() if k not in FIELDS}
            records.append({**extra, "question": str(rec["question"]), "reference": str(rec["reference"]),
                            "answer": str(rec["answer"]), "label": label})
            wheres.append(where)
            written.append(rec["label"])
    if problems:
        raise problems_error(f"dataset {path}", problems, "record", max_problems)
    if not records:
        raise DistillError(f"dataset {path}: no records")
    return _drop_repeats(pd.DataFrame(records), wheres, written, path)


def _json_records(path: Path, problems: list[str]) -> list[tuple[str, Any]]:
    """('line N', object) for every non-blank line of a JSONL file, gzipped or not (sdk.jsonl); a line that is
    not a JSON object goes to `problems`."""
    from sdk.jsonl import json_lines

    return [(f"line {n}", rec) for n, rec in json_lines(path, problems, where=lambda n: f"line {n}")]


def _drop_repeats(df: pd.DataFrame, wheres: list[str], written: list[Any], path: Path) -> pd.DataFrame:
    """The records whose question, reference and answer (the whole prompt) differ from every earlier one's:
    a repeat would weigh twice in training, or be tested on after being trained on. Where a repeat's label
    differs from the kept record's, the first label stands and a warning names a few such records
    (`wheres`: each record's row or line; `written`: its label as the file wrote it)."""
    import warnings

    first_at: dict[tuple, int] = {}
    repeats, conflicts = [], []
    labels = df["label"].tolist()
    for i, k in enumerate(df[["question", "reference", "answer"]].itertuples(index=False, name=None)):
        j = first_at.setdefault(k, i)
        if j != i:
            repeats.append(i)
            if labels[i] != labels[j]:
                conflicts.append((i, j))
    if conflicts:
        shown = "; ".join(f"{wheres[i]} (label {written[i]!r}) repeats {wheres[j]} (label {written[j]!r})"
                          for i, j in conflicts[:2])
        more = f"; and {len(conflicts) - 2} more" if len(conflicts) > 2 else ""
        warnings.warn(f"dataset {path}: {len(conflicts)} of {len(repeats)} repeated records (same question, "
                      f"reference and answer) have another label than the first, whose label is kept: {shown}{more}",
                      UserWarning, stacklevel=3)
    out = df.drop(index=repeats).reset_index(drop=True)
    out.attrs.update(records_read=len(df), repeats_dropped=len(repeats), label_conflicts=len(conflicts))
    return out


def grading_prompt(row: dict, ask: str) -> str:
    """The grading prompt of one answer (standard library only: it is shipped in bundles as it is)."""
    return f"Q: {row['question']}\nReference: {row['reference']}\nStudent: {row['answer']}\n{ask}"
