"""The Template protocol: what a domain defines once (data, prompt, verbalizer, metrics).

The SDK core only talks to this protocol; nothing template-specific lives in `sdk/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd


@runtime_checkable
class Template(Protocol):
    name: str
    description: str
    #: Columns a dataset must have (besides `label`).
    columns: tuple[str, ...]
    #: Label value -> the word the model answers with (must be one token after the prompt).
    label_words: dict[int, str]
    #: Metric used for early stopping and the headline of the report (higher is better).
    primary_metric: str

    def synthesize(self, n: int, seed: int, options: dict[str, Any]) -> pd.DataFrame:
        """n labelled rows with `columns` and an integer `label`."""
        ...

    def prompt(self, row: dict[str, Any]) -> str:
        """The model input for one row; the answer word follows it directly."""
        ...

    def metrics(self, y_true: np.ndarray, scores: np.ndarray, threshold: float,
                target_recall: float) -> dict[str, float]:
        """Metrics by name from positive-class scores and the decision threshold."""
        ...

    def choose_threshold(self, y_val: np.ndarray, scores_val: np.ndarray) -> float:
        """Decision threshold picked on validation scores."""
        ...

    def preset_path(self, preset: str) -> Path:
        """A shipped project YAML (`tiny`, `default`)."""
        ...


def check_template(t: object) -> Template:
    """Fail early, naming what a third-party template lacks."""
    missing = [a for a in ("name", "columns", "label_words", "primary_metric", "synthesize", "prompt",
                           "metrics", "choose_threshold", "preset_path") if not hasattr(t, a)]
    if missing:
        raise TypeError(f"template {t!r} lacks {', '.join(missing)}")
    if set(t.label_words) != {0, 1}:  # type: ignore[attr-defined]
        raise TypeError(f"template {t.name!r}: label_words must map labels 0 and 1")  # type: ignore[attr-defined]
    return t  # type: ignore[return-value]
