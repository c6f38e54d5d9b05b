"""Code report.png: pass@1 per artifact and difficulty, and pass@1 against generation speed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sdk.rundir import atomic_write


def plot_report(report: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arts = report["artifacts"]
    levels = [k.split("_", 1)[1] for k in arts[0]["metrics"] if k.startswith("pass@1_") and k != "pass@1_sampled"]
    groups = ["all", *levels]
    fig, (ax_bar, ax_speed) = plt.subplots(1, 2, figsize=(12, 4.8))
    width = 0.8 / len(arts)
    x = np.arange(len(groups))
    for i, a in enumerate(arts):
        vals = [a["metrics"]["pass@1"], *(a["metrics"][f"pass@1_{g}"] for g in levels)]
        ax_bar.bar(x + i * width - 0.4 + width / 2, vals, width, label=a["name"],
                   hatch="//" if a["role"] == "teacher" else None, alpha=0.85)
    ax_bar.set_xticks(x, groups)
    ax_bar.set_ylim(0, 1)
    ax_bar.set(ylabel="pass@1 (greedy)", title=f"pass@1 on {report['data']['n_test']} held-out problems")
    ax_bar.legend(fontsize=7, loc="upper right")
    for a in arts:
        ax_speed.scatter(a["tokens_per_s"], a["metrics"]["pass@1"], s=20 + a["size_bytes"] / 2e6,
                         marker="s" if a["role"] == "teacher" else "o", alpha=0.7)
        ax_speed.annotate(f"{a['name']}\n{a['size_bytes'] / 1e6:.0f} MB", (a["tokens_per_s"], a["metrics"]["pass@1"]),
                          fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax_speed.set_xscale("log")
    ax_speed.margins(x=0.35, y=0.2)
    ax_speed.set(xlabel="generated tokens/s at batch 1 (log)", ylabel="pass@1",
                 title="quality vs speed (marker area ~ size)")
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))  # the run folder's one writer
    plt.close(fig)
    return out
