"""Education report.png: accuracy per answer type for every artifact (where string match fails and where
the rule does), and the confusion matrices of the teacher and the smallest student."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sdk.rundir import atomic_write


def plot_report(template, report: dict[str, Any], test: pd.DataFrame, probs: dict[str, np.ndarray],
                thresholds: dict[str, float], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = test["label"].to_numpy().astype(int)
    names = [a["name"] for a in report["artifacts"] if a["name"] in probs]
    teacher = [a["name"] for a in report["artifacts"] if a["role"] == "teacher" and a["name"] in probs][:1]
    students = sorted((a for a in report["artifacts"] if a["role"] == "student" and a["name"] in probs),
                      key=lambda a: a.get("size_bytes") or 0)
    shown = teacher + [students[0]["name"]] if students else teacher
    breakdown = template.breakdown(test, {n: probs[n] for n in names}, thresholds)
    fig = plt.figure(figsize=(12, 4.6))
    grid = fig.add_gridspec(1, 2 + len(shown), width_ratios=[3.2, 0.15] + [1.3] * len(shown))
    ax = fig.add_subplot(grid[0, 0])
    if breakdown:
        kinds = list(next(iter(breakdown.values())))
        width = 0.8 / max(len(names), 1)
        x = np.arange(len(kinds))
        for i, n in enumerate(names):
            ax.bar(x + i * width - 0.4 + width / 2, [breakdown[n][k] for k in kinds], width, label=n)
        counts = test["error_type"].value_counts()
        names_n = [k.replace("_", "\n") + f"\n(n={counts.get(k, 0)})" for k in kinds]
        ax.set_xticks(x, names_n, fontsize=7)
        ax.set(ylim=(0, 1.05), ylabel="accuracy", title="accuracy per answer type, held-out test split")
        ax.legend(fontsize=7, loc="lower left")
        ax.grid(axis="y", alpha=0.3)
    else:
        ax.text(0.5, 0.5, "records carry no error_type", ha="center", va="center")
        ax.set_axis_off()
    words = [template.label_words[i].strip() for i in range(len(template.label_words))]
    for j, n in enumerate(shown):
        cm = template.confusion(y, probs[n], thresholds.get(n, 0.5))
        axc = fig.add_subplot(grid[0, 2 + j])
        axc.imshow(cm, cmap="Blues")
        for (r, c), v in np.ndenumerate(cm):
            axc.text(c, r, str(v), ha="center", va="center", fontsize=8,
                     color="white" if v > cm.max() / 2 else "black")
        axc.set_xticks(range(len(words)), words, fontsize=7)
        axc.set_yticks(range(len(words)), words, fontsize=7)
        axc.set(xlabel="graded", ylabel="true grade" if j == 0 else None, title=n)
        axc.title.set_fontsize(8)
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return out
