"""report.html rendered by Debian's headless Chromium (installed by `make install`): not blank, and every
artifact's card on the page."""

import shutil
import subprocess

import numpy as np

from evaluation.plots import tradeoff_figure
from evaluation.report import build_report, write_report
from tests.evaluation.test_report import _art


def screenshot(html_path, out_png, width=1280, height=1800):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "headless Chromium is needed (Debian package `chromium`; `make install` installs it)"
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--screenshot={out_png}", f"--window-size={width},{height}", html_path.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert out_png.is_file(), proc.stderr[-2000:]
    from PIL import Image

    return np.asarray(Image.open(out_png).convert("RGB")).astype(int)


def ink(pixels):
    """Share of pixels that are not (near) white, and the number of distinct colours."""
    not_white = (pixels < 235).any(axis=2).mean()
    return float(not_white), len(np.unique(pixels.reshape(-1, 3) // 16, axis=0))


def test_report_html_renders_in_chromium(tmp_path):
    arts = [_art("teacher-torch", "teacher", 0.9, 0.8, 0.05, 4.0),
            _art("student-gguf-Q4_K_M", "student", 0.85, 0.76, 0.06, 24.0, "gguf", "Q4_K_M")]
    r = build_report(template="fraud", task="decision", project="p", primary_metric="roc_auc",
                     compared=("roc_auc", "recall"), lower_is_better={"fpr"}, artifacts=arts,
                     data={"n_train": 1, "n_val": 2, "n_test": 3, "test_positives": 1},
                     machine={"cpus": 2, "platform": "linux"},
                     stages={"data": {"seconds": 10, "note": ""}, "distill": {"seconds": 50, "note": ""}},
                     operating_point={"kind": "fpr", "value": 0.02, "description": "FPR <= 2%", "metric": "recall"})
    tradeoff_figure(r, tmp_path / "tradeoffs.png")
    paths = write_report(r, tmp_path)
    pixels = screenshot(paths["html"], tmp_path / "shot.png")
    share, colours = ink(pixels)
    assert share > 0.03 and colours > 20, (share, colours)
    blank = tmp_path / "blank.html"
    blank.write_text("<html><body></body></html>")
    assert ink(screenshot(blank, tmp_path / "blank.png"))[0] < 0.001  # the check can fail


def test_a_card_shows_its_release_gate_and_is_never_green_when_it_failed():
    from evaluation.html import _card
    from evaluation.report import headline_rows

    arts = [_art("teacher-torch", "teacher", 0.9, 0.8, 0.05, 4.0),
            _art("student-gguf-Q4_K_M", "student", 0.9, 0.8, 0.05, 24.0, "gguf", "Q4_K_M")]
    arts[1]["gate"] = {"verdict": "fail", "passed": False, "metric": "roc_auc", "value": 0.5, "reference_value": 0.9,
                       "retention": 0.55, "retention_ci": None, "min_retention": 0.95}
    r = build_report(template="fraud", task="decision", project="p", primary_metric="roc_auc",
                     compared=("roc_auc", "recall"), lower_is_better=set(), artifacts=arts,
                     data={"n_train": 1, "n_val": 2, "n_test": 3}, machine={"cpus": 2, "platform": "linux"}, stages={})
    row = next(h for h in headline_rows(r) if h["role"] == "student")
    card = _card(row, "roc_auc", "decision", None)
    assert "<span>release gate</span><span>FAILED</span>" in card and 'class="verdict bad"' in card
