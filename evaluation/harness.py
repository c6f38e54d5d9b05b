"""Template x artifact -> report entry. Each artifact runs in its own process (evaluation.worker).

Decision shape: label probabilities on validation (threshold) and test (metrics). Generation shape:
greedy completions (pass@1) and optional samples (pass@k) on the test split, checked by the template's
verifier; batch-1 latency, tokens/s and time to first token on a sample of test prompts.
"""

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
from pydantic import BaseModel

from deployment.runtimes.generation import split_reasoning
from sdk.errors import DistillError


class WorkerFailed(DistillError):
    """An artifact's worker process failed (most often: a model file it cannot load); `reason` is the worker's
    own error line, when it wrote one."""

    def __init__(self, name: str, exit_code: int, reason: str | None):
        self.name, self.exit_code, self.reason = name, exit_code, reason
        super().__init__(f"running {name} failed (exit {exit_code}): {reason or 'no error recorded, see above'}")

    def __reduce__(self):  # pickled (across processes) with its own arguments, not the message alone
        return WorkerFailed, (self.name, self.exit_code, self.reason)


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
    variant: str | None = None  # e.g. "sequence_kd" for the student trained on sequence-level KD alone


def run_worker(job: dict[str, Any], work_dir: Path, name: str) -> dict[str, Any]:
    """Run `job` in its own process (evaluation.worker); its result. A result left by an identical job on
    unchanged model files (an evaluate stage interrupted after some artifacts) is reused, never another's:
    the key covers the whole job and the model files' names, sizes and modification times."""
    from sdk.models import fingerprint
    from sdk.rundir import atomic_write_text, stable_hash

    work_dir.mkdir(parents=True, exist_ok=True)
    job_path, out_path = work_dir / f"{name}.job.json", work_dir / f"{name}.result.json"
    spec = job.get("spec") or {}
    model = spec.get("model")
    # a spec's `operational` part says how to run (an endpoint's timeouts, its budget), not what is computed
    keyed = {**job, "spec": {k: v for k, v in spec.items() if k != "operational"}} if "operational" in spec else job
    key = stable_hash([keyed, fingerprint(model) if isinstance(model, str) else None])
    if out_path.is_file():
        try:
            done = json.loads(out_path.read_text())
        except json.JSONDecodeError:
            done = {}
        if done.get("job_key") == key:
            print(f"[distill] {name}: reusing the result of an identical job on unchanged files", flush=True)
            if "usage" in done:  # an API's calls were made by the earlier run, not this one
                done["usage"] = {**done["usage"], "reused": True}
            return done
    job_path.write_text(json.dumps(job))
    error_path = Path(str(out_path) + ".error")
    error_path.unlink(missing_ok=True)
    # The worker runs alone (this process only waits for it), so llama.cpp keeps OpenMP's default wait policy:
    # PASSIVE made its 2 threads sleep between the many small ops of each decoded token, 3x slower here
    # (12-layer student, Q4_K_M: 60 vs 187 tokens/s). The policy in force is recorded with the figures.
    exit_code = _start_worker(job["format"], job_path.resolve(), out_path.resolve())
    if exit_code != 0 or not out_path.is_file():
        reason = error_path.read_text().strip() if error_path.is_file() else None
        raise WorkerFailed(name, exit_code, reason)
    result = json.loads(out_path.read_text())
    result["job_key"] = key
    atomic_write_text(out_path, json.dumps(result))
    job_path.unlink(missing_ok=True)  # prompts can be large; the result is what is kept
    return result


# Formats whose worker imports torch and transformers: ~9 s of each such worker's time on 2 cores (transformers
# 5 indexes all its model files at import). Their workers are forked from a zygote (evaluation.zygote) that
# imported those once; see there why peak RSS and threads stay the artifact's own. Other runtimes keep a fresh
# interpreter: a llama.cpp or onnxruntime process must not carry torch's pages in its RSS.
FORKED_FORMATS = frozenset({"torch"})


def _start_worker(fmt: str, job_path: Path, out_path: Path) -> int:
    """Run evaluation.worker on the job in a process of its own; its exit code."""
    if fmt in FORKED_FORMATS and hasattr(os, "fork"):
        from evaluation.zygote import run_forked

        return run_forked(job_path, out_path)
    return subprocess.run([sys.executable, "-m", "evaluation.worker", str(job_path), str(out_path)]).returncode


def _prompt(p):
    """Token ids as a list; a text (for runtimes that tokenise themselves, e.g. an API) as it is."""
    return p if isinstance(p, str) else list(p)


def sample_indices(n: int, k: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(n, size=min(k, n), replace=False).tolist())


def _entry(art: Artifact, res: dict[str, Any], metrics: dict[str, float]) -> dict[str, Any]:
    entry = asdict(art)
    entry.pop("spec")
    entry.update({"metrics": metrics, "latency_ms": res["latency_ms"], "peak_rss_mb": res["peak_rss_mb"],
                  "threads": res["threads"], "load_s": res["load_s"], **({"usage": res["usage"]} if "usage" in res else {}),
                  "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default")})
    return entry


def evaluate_decision(art: Artifact, template, options: BaseModel, y_val: np.ndarray, y_test: np.ndarray,
                      val_seqs: Sequence[Sequence[int]], test_seqs: Sequence[Sequence[int]],
                      label_ids: Sequence[int], *, latency_samples: int, work_dir: Path) -> tuple[dict, dict]:
    """(report entry, details kept for plots: label probabilities per split)."""
    idx = sample_indices(len(test_seqs), latency_samples)
    job = {"format": art.format, "spec": art.spec, "label_ids": list(label_ids),
           "score": {"val": [_prompt(s) for s in val_seqs], "test": [_prompt(s) for s in test_seqs]},
           "latency": {"kind": "score", "prompts": [_prompt(test_seqs[i]) for i in idx]}}
    res = run_worker(job, work_dir, art.name)
    probs_val, probs_test = np.asarray(res["probs_val"]), np.asarray(res["probs_test"])
    threshold = template.choose_threshold(y_val, probs_val, options)
    entry = _entry(art, res, template.metrics(y_test, probs_test, threshold, options))
    entry.update({"decisions_per_s": res["decisions_per_s"], "batched_decisions_per_s": res["scored_per_s"],
                  "val_metrics": template.metrics(y_val, probs_val, threshold, options)})
    return entry, {"probs_val": probs_val, "probs_test": probs_test}


def evaluate_generation(art: Artifact, template, options: BaseModel, rows: list[dict[str, Any]],
                        test_seqs: Sequence[Sequence[int]], *, greedy: dict[str, Any], sampled: dict[str, Any] | None,
                        latency_samples: int, work_dir: Path, val_rows: list[dict[str, Any]] | None = None,
                        val_seqs: Sequence[Sequence[int]] | None = None) -> tuple[dict, dict]:
    """(report entry, details: completions and verdicts per test row, and per validation row when `val_rows`
    are given: the release gates' split, greedy only)."""
    prompts = [_prompt(s) for s in test_seqs]
    idx = sample_indices(len(prompts), latency_samples)
    gen = {"greedy": {"prompts": prompts, "params": greedy}}
    if sampled:
        gen["sampled"] = {"prompts": prompts, "params": sampled}
    if val_rows is not None:
        gen["val"] = {"prompts": [_prompt(s) for s in val_seqs], "params": greedy}
    job = {"format": art.format, "spec": art.spec, "label": art.name, "generate": gen,
           "latency": {"kind": "generate", "prompts": [prompts[i] for i in idx], "params": greedy}}
    res = run_worker(job, work_dir, art.name)
    outs = res["generations"]
    greedy_passed, details = _verified_greedy(template, options, rows, outs["greedy"]["outputs"], art.name)
    sampled_passed = None
    if sampled:
        texts = [[split_reasoning(o["text"])[0] for o in per] for per in outs["sampled"]["outputs"]]
        sv = template.verify(rows, texts, options, progress=f"verify {art.name} samples")
        sampled_passed = [[bool(x["passed"]) for x in per] for per in sv]
        details["sampled_passed"] = sampled_passed
    metrics = template.metrics(rows, greedy_passed, sampled_passed, options)
    entry = _entry(art, res, metrics)
    entry.update({"tokens_per_s": res["tokens_per_s"], "ttft_ms": res["ttft_ms"],
                  "batched_tokens_per_s": outs["greedy"]["tokens_per_s"],
                  "mean_completion_tokens": outs["greedy"]["tokens"] / max(len(prompts), 1)})
    if val_rows is not None:
        val_passed, val_details = _verified_greedy(template, options, val_rows, outs["val"]["outputs"],
                                                   f"{art.name} val")
        entry["val_metrics"] = template.metrics(val_rows, val_passed, None, options)
        details["val"] = val_details["greedy"]
    return entry, details


def _verified_greedy(template, options: BaseModel, rows: list[dict[str, Any]], outputs: list,
                     label: str) -> tuple[list[bool], dict[str, Any]]:
    """Greedy completions checked by the template's verifier: (passed per row, {"greedy": [text + verdict]})."""
    # a student trained on reasoning traces is judged on the answer after its trace
    texts = [[split_reasoning(o[0]["text"])[0]] for o in outputs]
    verdicts = template.verify(rows, texts, options, progress=f"verify {label}")
    return ([bool(v[0]["passed"]) for v in verdicts],
            {"greedy": [{"text": t[0], **v[0]} for t, v in zip(texts, verdicts)]})


def evaluate_validation(art: Artifact, template, options: BaseModel, *, work_dir: Path,
                        val_seqs: Sequence[Sequence[int]], y_val: np.ndarray | None = None,
                        label_ids: Sequence[int] | None = None, val_rows: list[dict[str, Any]] | None = None,
                        greedy: dict[str, Any] | None = None) -> tuple[dict, dict]:
    """An artifact on the validation split only, no timing (the release gates' reference when it is not
    evaluated in full): (validation metrics, details: probs_val or the greedy completions as "val")."""
    prompts = [_prompt(s) for s in val_seqs]
    if template.task == "decision":
        res = run_worker({"format": art.format, "spec": art.spec, "label_ids": list(label_ids),
                          "score": {"val": prompts}}, work_dir, f"{art.name}.val")
        probs_val = np.asarray(res["probs_val"])
        threshold = template.choose_threshold(y_val, probs_val, options)
        return template.metrics(y_val, probs_val, threshold, options), {"probs_val": probs_val}
    res = run_worker({"format": art.format, "spec": art.spec, "label": f"{art.name} val",
                      "generate": {"val": {"prompts": prompts, "params": greedy}}}, work_dir, f"{art.name}.val")
    passed, details = _verified_greedy(template, options, val_rows, res["generations"]["val"]["outputs"],
                                       f"{art.name} val")
    return template.metrics(val_rows, passed, None, options), {"val": details["greedy"]}


def evaluate_baseline(name: str, model, template, options: BaseModel, val, test, y_val: np.ndarray,
                      y_test: np.ndarray, *, latency_samples: int,
                      columns: Sequence[str] | None = None) -> tuple[dict, dict]:
    """A template's plain baseline (a fitted estimator with predict_proba over rows of `columns`, default the
    template's columns), at the same operating point as the artifacts: threshold on validation, metrics on test.
    Measured in this process (a scikit-learn model, no native runtime to isolate); its memory is not
    measured apart from the pipeline's, so peak RSS is left empty."""
    import pickle
    import time

    from evaluation.perf import latency_stats

    cols = list(columns if columns is not None else template.columns)
    t0 = time.perf_counter()
    probs_val = np.asarray(model.predict_proba(val[cols]))
    probs_test = np.asarray(model.predict_proba(test[cols]))
    batched = (len(val) + len(test)) / (time.perf_counter() - t0)
    rows = [test.iloc[[i]][cols] for i in sample_indices(len(test), latency_samples)]
    lat = latency_stats(lambda i: model.predict_proba(rows[i]), len(rows))
    threshold = template.choose_threshold(y_val, probs_val, options)
    size = len(pickle.dumps(model))
    entry = {"name": name, "role": "baseline", "format": "sklearn", "quant": None, "path": None, "params": None,
             "size_bytes": size, "bits_per_weight": None, "variant": None,
             "metrics": template.metrics(y_test, probs_test, threshold, options), "latency_ms": lat,
             "peak_rss_mb": None, "threads": 1, "load_s": 0.0, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
             "decisions_per_s": 1000.0 / lat["mean"], "batched_decisions_per_s": batched}
    return entry, {"probs_val": probs_val, "probs_test": probs_test}
