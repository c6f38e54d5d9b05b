"""The task contract: what a domain defines once, for one of two shapes.

- **decision**: the model answers with one of a few label words right after the prompt (fraud yes/no,
  later multi-class grades). Runtimes `score` label-word probabilities; the template turns them into
  metrics at a threshold it chooses on validation.
- **generation**: the model writes text that the template's verifier checks (code run against unit
  tests). Runtimes `generate`; the template verifies completions and computes its metrics.

A template owns its data (synthesizer, import), prompt, verifier, metrics, which direction is better,
thresholds and plots. The SDK core, `evaluation/` and `deployment/` only talk to this contract.
`check_template` exercises a template the way scikit-learn's `check_estimator` does: it does not
only look for attributes, it synthesizes rows, builds prompts and scores a known output.

Optional hooks, called where a template has them (not in the Protocols, so a template without them still
is one): `operating_point(options)`, `report_warnings(report, options)` (what only the domain knows is
misleading in a report), `proportion_counts(metrics)` ({metric: (successes, trials)} of the metrics that
are proportions: the report gives those Wilson intervals instead of bootstrap ones), `breakdown(...)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from pydantic import BaseModel

TaskShape = Literal["decision", "generation"]


@runtime_checkable
class Template(Protocol):
    name: str
    description: str
    task: TaskShape
    #: Columns a dataset must have (decision templates also need `label`).
    columns: tuple[str, ...]
    #: Metric used for early stopping and the report's headline.
    primary_metric: str
    #: Metrics compared with the teacher in the report (retention); others are shown only.
    retention_metrics: tuple[str, ...]
    #: Metrics where lower is better (their retention is teacher/student, so 1.0 = as good).
    lower_is_better: frozenset[str]
    #: True: prompt(row) is a user message, rendered with the model's chat template when it has one.
    chat: bool
    #: Column the splits are stratified on (or None).
    stratify: str | None
    #: The template's own options (config `template_options`), validated once at the boundary.
    Options: type[BaseModel]

    def synthesize(self, n: int, seed: int, options: BaseModel) -> pd.DataFrame:
        """n rows with `columns` (and `label` for decisions)."""
        ...

    def load(self, path: Path) -> pd.DataFrame:
        """The user's own data file (`data.path`); errors name the file, row or field."""
        ...

    def prepare_train(self, train: pd.DataFrame, seed: int, options: BaseModel) -> pd.DataFrame:
        """The training split as training should see it (e.g. rare labels upsampled)."""
        ...

    def prompt(self, row: dict[str, Any]) -> str:
        """The model input for one row."""
        ...

    def plot(self, report: dict[str, Any], details: dict[str, Any], test: pd.DataFrame, out: Path) -> Path:
        """The report figure; `details` maps artifact name -> what the harness kept of its outputs."""
        ...

    def preset_path(self, preset: str) -> Path:
        """A shipped project YAML (`tiny`, `default`)."""
        ...


@runtime_checkable
class DecisionTemplate(Template, Protocol):
    #: Label value (0..n-1) -> the word the model answers with (one token after the prompt).
    label_words: dict[int, str]

    def choose_threshold(self, y_val: np.ndarray, probs_val: np.ndarray, options: BaseModel) -> float | None:
        """Decision threshold picked on validation label probabilities [N, n_labels] (None: the template
        decides without one, e.g. the most probable of several grades)."""
        ...

    def metrics(self, y_true: np.ndarray, probs: np.ndarray, threshold: float, options: BaseModel) -> dict[str, float]:
        """Metrics by name from label probabilities [N, n_labels] and the threshold."""
        ...

    # Optional: `baselines(train, seed, options, features) -> {name: fitted estimator with predict_proba(rows)}`:
    # the plain models a domain expert would run (fraud: gradient boosting and logistic regression), fitted on
    # `features` (sdk.tables.Feature list: the prompt's own input columns; None: the template's columns);
    # evaluated like an artifact at the same operating point, so the report says when the LLM teacher is not
    # the ceiling.
    # Optional: `table_prompt(row, features) -> str`: the prompt for a user's own table (CSV/Parquet with any
    # columns, read by sdk.tables), e.g. sdk.tables.render_features(row, features) + a question; with it the
    # template takes any table. `hidden_columns`: columns that describe the answer (the synthetic fraud
    # `pattern`), never a model input.
    # Optional: `configure(options) -> template`: the template for its validated options, where what it declares
    # follows them (the education template's label words follow its grading scheme: yes/no or a rubric's scores);
    # the SDK configures a template before reading anything else from it (sdk.registry.get_template).
    # Optional: `decide(probs, threshold, options) -> labels`: the label each row gets (default: two labels, the
    # threshold on the last one's probability; more labels, the most probable).
    # Optional: `breakdown(test, probs, thresholds) -> {artifact: {group: accuracy}}`: a per-group view of the
    # test split (education: accuracy per answer type), shown in the report beside the metrics.
    # Optional: `operating_point(options) -> {"kind", "value", "description", "metric"}`: where the domain runs
    # the model (e.g. fraud: FPR <= 2%), which `choose_threshold` meets on validation for every artifact alike;
    # `metric` is what the report compares there (its headline). Without it the headline is `primary_metric`.


@runtime_checkable
class GenerationTemplate(Template, Protocol):
    def verify(self, rows: list[dict[str, Any]], completions: list[list[str]], options: BaseModel,
               progress: str | None = None) -> list[list[dict[str, Any]]]:
        """One verdict per completion: {"passed": bool, "status": str, "reason": str}."""
        ...

    def metrics(self, rows: list[dict[str, Any]], greedy_passed: list[bool],
                sampled_passed: list[list[bool]] | None, options: BaseModel) -> dict[str, float]:
        """Metrics by name from which greedy (and sampled) completions passed, per row."""
        ...

    def reference_completion(self, row: dict[str, Any]) -> str | None:
        """A completion known to pass for this row (check_template verifies it), or None."""
        ...


_COMMON = ("name", "description", "task", "columns", "primary_metric", "retention_metrics", "lower_is_better",
           "chat", "stratify", "Options", "synthesize", "load", "prepare_train", "prompt", "plot", "preset_path")
_BY_SHAPE = {"decision": ("label_words", "choose_threshold", "metrics"),
             "generation": ("verify", "metrics", "reference_completion")}


def check_template_attributes(t: object) -> Template:
    """Cheap structural check, done on every load: names what a third-party template lacks."""
    task = getattr(t, "task", None)
    if task not in _BY_SHAPE:
        raise TypeError(f"template {t!r}: `task` must be one of {sorted(_BY_SHAPE)}, got {task!r}")
    missing = [a for a in (*_COMMON, *_BY_SHAPE[task]) if not hasattr(t, a)]
    if missing:
        raise TypeError(f"template {getattr(t, 'name', t)!r} lacks {', '.join(missing)}")
    if not (isinstance(t.Options, type) and issubclass(t.Options, BaseModel)):  # type: ignore[attr-defined]
        raise TypeError(f"template {t.name!r}: Options must be a pydantic model class")  # type: ignore[attr-defined]
    if task == "decision":
        words = t.label_words  # type: ignore[attr-defined]
        if sorted(words) != list(range(len(words))) or len(words) < 2:
            raise TypeError(f"template {t.name!r}: label_words must map labels 0..n-1 (n >= 2)")  # type: ignore[attr-defined]
    return t  # type: ignore[return-value]


def check_template(t: object, n: int = 8, seed: int = 0, options: BaseModel | None = None) -> dict[str, Any]:
    """Exercise a template for its shape; returns what was checked (raises AssertionError/TypeError).

    Synthesizes a few rows, checks columns and types, builds prompts, and scores known outputs:
    decision templates get perfect and reversed probabilities (the perfect ones must score at least as
    well on the primary metric); generation templates get their reference completions (must pass)
    and an empty completion (must fail).
    """
    t = check_template_attributes(t)
    options = options if options is not None else t.Options()
    if hasattr(t, "configure"):
        t = check_template_attributes(t.configure(options))  # type: ignore[attr-defined]
    rows = t.synthesize(n, seed, options)
    assert isinstance(rows, pd.DataFrame) and len(rows) == n, f"synthesize({n}) must return {n} rows"
    missing = [c for c in t.columns if c not in rows.columns]
    assert not missing, f"synthesized rows lack columns {missing}"
    again = t.synthesize(n, seed, options)
    assert rows.equals(again), "synthesize must be deterministic for a seed"
    records = rows.to_dict("records")
    prompts = [t.prompt(r) for r in records]
    assert all(isinstance(p, str) and p.strip() for p in prompts), "prompt(row) must return non-empty text"
    checked: dict[str, Any] = {"rows": n, "task": t.task}
    if t.task == "decision":
        y = rows["label"].to_numpy().astype(int)
        n_labels = len(t.label_words)  # type: ignore[attr-defined]
        assert set(np.unique(y)) <= set(range(n_labels)), "labels must be 0..n-1"
        perfect = np.eye(n_labels)[y] * 0.98 + 0.01
        wrong = perfect[:, ::-1].copy()
        thr = t.choose_threshold(y, perfect, options)  # type: ignore[attr-defined]
        good = t.metrics(y, perfect, thr, options)  # type: ignore[attr-defined]
        bad = t.metrics(y, wrong, thr, options)  # type: ignore[attr-defined]
        assert t.primary_metric in good, f"metrics() lacks the primary metric {t.primary_metric!r}"
        sign = -1 if t.primary_metric in t.lower_is_better else 1
        if len(np.unique(y)) > 1:
            assert sign * good[t.primary_metric] >= sign * bad[t.primary_metric], \
                "perfect label probabilities must score at least as well as reversed ones"
        checked["primary"] = good[t.primary_metric]
    else:
        refs = [t.reference_completion(r) for r in records]  # type: ignore[attr-defined]
        with_ref = [(r, c) for r, c in zip(records, refs) if c is not None]
        assert with_ref, "generation templates must give a reference completion for synthesized rows"
        verdicts = t.verify([r for r, _ in with_ref], [[c, ""] for _, c in with_ref], options)  # type: ignore[attr-defined]
        assert all(v[0]["passed"] for v in verdicts), f"reference completions must pass: {verdicts}"
        assert not any(v[1]["passed"] for v in verdicts), "an empty completion must fail"
        m = t.metrics([r for r, _ in with_ref], [True] * len(with_ref), None, options)  # type: ignore[attr-defined]
        assert t.primary_metric in m, f"metrics() lacks the primary metric {t.primary_metric!r}"
        checked["primary"] = m[t.primary_metric]
    for name in t.retention_metrics:
        assert name == t.primary_metric or isinstance(name, str)
    return checked
