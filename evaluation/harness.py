"""Template x artifact -> metrics: each artifact is scored in its own process (evaluation.worker),
thresholds are chosen on validation, metrics are computed on the held-out test split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from verticals.base import Template


@dataclass
class Artifact:
    name: str
    role: str  # "teacher" | "student"
    format: str  # "torch" | "gguf" | "onnx"
    quant: str | None
    path: str
    params: int
    size_bytes: int
    spec: dict[str, Any] = field(default_factory=dict)  # runtime constructor arguments
    bits_per_weight: float | None = None


def run_worker(job: dict[str, Any], work_dir: Path, name: str) -> dict[str, Any]:
    work_dir.mkdir(parents=True, exist_ok=True)
    job_path, out_path = work_dir / f"{name}.job.json", work_dir / f"{name}.result.json"
    job_path.write_text(json.dumps(job))
    env = dict(os.environ)
    if job["format"] == "gguf":
        env["OMP_WAIT_POLICY"] = "PASSIVE"  # llama.cpp's threads otherwise spin under contention
    proc = subprocess.run([sys.executable, "-m", "evaluation.worker", str(job_path), str(out_path)], env=env)
    if proc.returncode != 0 or not out_path.is_file():
        raise RuntimeError(f"evaluating {name} failed (exit {proc.returncode}); job: {job_path}")
    return json.loads(out_path.read_text())


def evaluate_artifact(art: Artifact, template: Template, y_val: np.ndarray, y_test: np.ndarray,
                      val_seqs: Sequence[Sequence[int]], test_seqs: Sequence[Sequence[int]],
                      label_ids: Sequence[int], *, target_recall: float, latency_samples: int,
                      work_dir: Path) -> dict[str, Any]:
    """The report entry of one artifact. label_ids are ordered [negative word, positive word]."""
    job = {"format": art.format, "spec": art.spec, "label_ids": list(label_ids),
           "splits": {"val": [list(s) for s in val_seqs], "test": [list(s) for s in test_seqs]},
           "latency_samples": latency_samples}
    res = run_worker(job, work_dir, art.name)
    threshold = template.choose_threshold(y_val, np.asarray(res["probs_val"]))
    metrics = template.metrics(y_test, np.asarray(res["probs_test"]), threshold, target_recall)
    entry = asdict(art)
    entry.pop("spec")
    entry.update({
        "metrics": metrics,
        "latency_ms": res["latency_ms"],
        "decisions_per_s": res["decisions_per_s"],
        "batched_decisions_per_s": res["scored_per_s"],
        "peak_rss_mb": res["peak_rss_mb"],
        "threads": res["threads"],
        "load_s": res["load_s"],
    })
    np.save(work_dir / f"{art.name}.test_scores.npy", np.asarray(res["probs_test"], dtype=np.float32))
    return entry
