"""Code report.png: pass@1 per artifact and difficulty level, with the interval of the overall figure."""

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
    ivs = (report.get("intervals") or {}).get("metrics", {})
    levels = [k.split("_", 1)[1] for k in arts[0]["metrics"] if k.startswith("pass@1_") and k != "pass@1_sampled"]
    groups = ["all", *levels]
    fig, ax = plt.subplots(figsize=(11, 4.6))
    width = 0.8 / len(arts)
    x = np.arange(len(groups))
    for i, a in enumerate(arts):
        vals = [a["metrics"]["pass@1"], *(a["metrics"].get(f"pass@1_{g}", np.nan) for g in levels)]
        err = None
        ci = ivs.get(a["name"], {}).get("pass@1")
        if ci:  # the interval of the overall figure; per-level intervals are in report.json
            err = [[vals[0] - ci[0], *([0] * len(levels))], [ci[1] - vals[0], *([0] * len(levels))]]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, yerr=err, capsize=3, label=a["name"],
               hatch="//" if a["role"] == "teacher" else None, alpha=0.85)
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.set(ylabel="pass@1 (greedy)", title=f"pass@1 on {report['data']['n_test']} held-out problems, by difficulty")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))  # the run folder's one writer
    plt.close(fig)
    return out
