"""Fraud report.png: ROC curves of every artifact and the quality/speed trade-off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sdk.rundir import atomic_write


def plot_report(report: dict[str, Any], y_test: np.ndarray, scores: dict[str, np.ndarray], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.ticker
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    pm = report["primary_metric"]
    fig, (ax_roc, ax_cost) = plt.subplots(1, 2, figsize=(11, 4.5))
    for a in report["artifacts"]:
        if a["name"] in scores:
            fpr, tpr, _ = roc_curve(y_test, scores[a["name"]])
            ax_roc.plot(fpr, tpr, label=f"{a['name']} (AUC {a['metrics'].get('roc_auc', float('nan')):.3f})")
    ax_roc.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax_roc.set(xlabel="false-positive rate", ylabel="recall", title="ROC on the held-out test split")
    ax_roc.legend(fontsize=8, loc="lower right")
    for a in report["artifacts"]:
        ax_cost.scatter(a["decisions_per_s"], a["metrics"][pm], s=20 + a["size_bytes"] / 2e6,
                        marker="s" if a["role"] == "teacher" else "o", alpha=0.7)
        ax_cost.annotate(f"{a['name']}\n{a['size_bytes'] / 1e6:.0f} MB", (a["decisions_per_s"], a["metrics"][pm]),
                         fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax_cost.set_xscale("log")
    ax_cost.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax_cost.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax_cost.margins(x=0.35, y=0.15)
    values = [a["metrics"][pm] for a in report["artifacts"]]
    # a fixed-width window: differences of a few thousandths should look as small as they are
    low = min(min(values) - 0.05, max(values) - 0.1)
    ax_cost.set_ylim(max(0.0, low), min(1.0, max(values) + 0.03) if max(values) <= 1 else None)
    ax_cost.set(xlabel="decisions/s at batch 1 (log)", ylabel=pm, title="quality vs speed (marker area ~ size)")
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))  # the run folder's one writer
    plt.close(fig)
    return out
