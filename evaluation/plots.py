"""Report figures every template gets: headline quality against speed and against size (with intervals),
drawn from report.json alone. The template draws its own domain figure (ROC, pass@k per level)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdk.rundir import atomic_write

_SPEED_AXIS = {"decisions_per_s": "decisions/s at batch 1 (log)", "tokens_per_s": "generated tokens/s at batch 1 (log)"}


def tradeoff_figure(report: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    hm = report.get("headline_metric", report["primary_metric"])
    speed = report["speed_metric"]
    ivs = (report.get("intervals") or {}).get("metrics", {})
    fig, (ax_speed, ax_size) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, a in enumerate(report["artifacts"]):
        y = a["metrics"].get(hm)
        if y is None:
            continue
        ci = ivs.get(a["name"], {}).get(hm)
        yerr = [[y - ci[0]], [ci[1] - y]] if ci else None
        style = dict(fmt="s" if a["role"] == "teacher" else "o", color=colors[i % len(colors)], capsize=3,
                     markersize=7, label=a["name"])
        ax_speed.errorbar(a[speed], y, yerr=yerr, **style)
        if a.get("size_bytes"):  # an API teacher has no file
            ax_size.errorbar(a["size_bytes"] / 1e6, y, yerr=yerr, **style)
    for ax in (ax_speed, ax_size):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.margins(x=0.25, y=0.15)
        ax.grid(alpha=0.3)
        ax.set_ylabel(hm + (" at the operating point" if report.get("operating_point") else ""))
    ax_speed.set(xlabel=_SPEED_AXIS.get(speed, speed), title="quality vs speed (up and right is better)")
    ax_size.set(xlabel="file size MB (log)", title="quality vs size (up and left is better)")
    # one legend outside the axes: names never overlap the points
    handles, labels = ax_speed.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return out
