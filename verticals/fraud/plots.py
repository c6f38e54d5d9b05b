"""Fraud report.png: ROC (false-positive axis zoomed where fraud teams work) and precision-recall curves of
every artifact, each with its operating point (its validation-chosen threshold applied to the test split)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sdk.rundir import atomic_write


def plot_report(report: dict[str, Any], y_test: np.ndarray, scores: dict[str, np.ndarray], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    y_test = np.asarray(y_test).astype(int)
    op = report.get("operating_point") or {}
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(11, 4.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    op_fprs = []
    both = len(np.unique(y_test)) > 1
    for i, a in enumerate(report["artifacts"]):
        if a["name"] not in scores or not both:
            continue
        c, s = colors[i % len(colors)], np.asarray(scores[a["name"]])
        ls = "--" if a["role"] == "teacher" else "-"
        fpr, tpr, _ = roc_curve(y_test, s)
        ax_roc.plot(fpr, tpr, ls, color=c, lw=1.4, label=f"{a['name']} (AUC {a['metrics'].get('roc_auc', np.nan):.3f})")
        prec, rec, _ = precision_recall_curve(y_test, s)
        ax_pr.plot(rec, prec, ls, color=c, lw=1.4,
                   label=f"{a['name']} (AP {a['metrics'].get('average_precision', np.nan):.3f})")
        m = a["metrics"]
        ax_roc.plot(m["fpr"], m["recall"], "o", color=c, ms=7, mec="black")
        ax_pr.plot(m["recall"], m["precision"], "o", color=c, ms=7, mec="black")
        op_fprs.append(m["fpr"])
    # fraud teams work at a few percent of false positives: zoom there, but keep every operating point visible
    target = op.get("value") if op.get("kind") == "fpr" else 0.0
    x_max = min(1.0, max(0.1, 1.5 * max(op_fprs or [0.0]), 2 * (target or 0.0)))
    ax_roc.set_xlim(0, x_max)
    ax_roc.set_ylim(0, 1.02)
    if op.get("kind") == "fpr":
        ax_roc.axvline(op["value"], color="grey", ls=":", lw=1)
    if op.get("kind") == "recall":
        ax_roc.axhline(op["value"], color="grey", ls=":", lw=1)
        ax_pr.axvline(op["value"], color="grey", ls=":", lw=1)
    if op:
        fig.suptitle(f"dots: each artifact at the operating point ({op['description']})", fontsize=10)
    ax_roc.set(xlabel=f"false-positive rate (zoomed to {x_max:.0%})", ylabel="recall (fraud caught)",
               title="ROC, held-out test split")
    ax_pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02),
              title="precision-recall, held-out test split")
    for ax in (ax_roc, ax_pr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right" if ax is ax_roc else "lower left")
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))  # the run folder's one writer
    plt.close(fig)
    return out
