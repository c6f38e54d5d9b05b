"""Run one artifact in a fresh process: `python -m evaluation.worker job.json result.json`.

A fresh process per artifact gives honest peak RSS, and keeps native thread pools apart: torch's
OpenMP and llama.cpp's busy-waiting threads in one process slowed llama.cpp about 50x here.

The job names a runtime (`format`, `spec`) and what to do with it, for either task shape:
- `score`: {split: prompts} -> label-word probabilities [N, n_labels] per split (`label_ids`);
- `generate`: {name: {"prompts": [...], "params": GenerationParams fields}} -> generations per prompt;
- `topk`: a local GGUF teacher's top-k targets (after each prompt, or at every response token);
- `latency`: time `n` prompts of the test split one at a time (batch 1): scoring or generating.
"""

from __future__ import annotations

import json
import os
import sys
import time


def _score(rt, job: dict, result: dict) -> None:
    t0 = time.perf_counter()
    for split, seqs in job["score"].items():
        result[f"probs_{split}"] = rt.score(seqs, job["label_ids"]).tolist()
    result["score_s"] = time.perf_counter() - t0
    result["scored_per_s"] = sum(len(s) for s in job["score"].values()) / result["score_s"]


def _generate(rt, job: dict, result: dict) -> None:
    from deployment.runtimes.generation import GenerationParams

    result["generations"] = {}
    for name, g in job["generate"].items():
        params = GenerationParams(**g["params"])
        t0 = time.perf_counter()
        gens = rt.generate(g["prompts"], params, progress=f"{job.get('label', 'generate')} {name}")
        seconds = time.perf_counter() - t0
        tokens = sum(x.n_tokens for per in gens for x in per)
        result["generations"][name] = {
            "outputs": [[{"text": x.text, "n_tokens": x.n_tokens, "finish": x.finish} for x in per] for per in gens],
            "seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / max(seconds, 1e-9)}


def _topk(rt, job: dict, result: dict) -> None:
    """A local teacher's top-k targets: after each prompt (`last`), or at every response token (`responses`)."""
    t = job["topk"]
    if t["kind"] == "last":
        values, ids = rt.topk_last(t["prompts"], t["k"])
        result["topk"] = {"values": values.tolist(), "ids": ids.tolist()}
    else:
        rows = rt.topk_responses(t["prompts"], t["responses"], t["k"])
        result["topk"] = {"rows": [[lp.tolist(), ix.tolist()] for lp, ix in rows]}
    result["topk"]["vocab"] = rt.llm.n_vocab()


def _latency(rt, job: dict, result: dict) -> None:
    from evaluation.perf import latency_stats

    lat = job["latency"]
    prompts = lat["prompts"]
    if lat["kind"] == "score":
        result["latency_ms"] = latency_stats(lambda i: rt.score_one(prompts[i], job["label_ids"]), len(prompts))
        result["decisions_per_s"] = 1000.0 / result["latency_ms"]["mean"]
        return
    from deployment.runtimes.generation import GenerationParams

    params = GenerationParams(**lat["params"])
    gens = []
    # one warm-up generation: each is tens of tokens, which warms what a first call has to (and costs seconds)
    result["latency_ms"] = latency_stats(lambda i: gens.append(rt.generate_one(prompts[i], params)), len(prompts),
                                         warmup=1)
    timed = gens[-len(prompts):]  # the warm-up calls come first
    tokens = sum(g.n_tokens for g in timed)
    result["tokens_per_s"] = tokens / max(sum(g.seconds for g in timed), 1e-9)
    ttft = sorted(1000.0 * g.ttft_s for g in timed)
    result["ttft_ms"] = {"p50": ttft[len(ttft) // 2], "mean": sum(ttft) / len(ttft)}
    result["latency_tokens"] = tokens


def main(job_path: str, out_path: str) -> None:
    """Run the job; on failure, the error's last line goes to `out_path`.error for the caller's message (the
    traceback still goes to stderr, but for the SDK's own errors), and the process exits 1."""
    from sdk.errors import DistillError

    try:
        _run(job_path, out_path)
    except BaseException as err:
        with open(out_path + ".error", "w") as f:
            f.write(f"{type(err).__name__}: {err}"[:2000])
        if isinstance(err, DistillError):  # the SDK's own one-line error (a budget reached): no traceback
            sys.exit(1)
        raise


def _run(job_path: str, out_path: str) -> None:
    job = json.loads(open(job_path).read())
    from deployment.runtimes import open_runtime
    from evaluation.perf import peak_rss_mb

    t0 = time.perf_counter()
    rt = open_runtime(job["format"], job["spec"])
    result: dict = {"load_s": time.perf_counter() - t0, "threads": rt.threads}
    if job.get("score"):
        _score(rt, job, result)
    if job.get("generate"):
        _generate(rt, job, result)
    if job.get("topk"):
        _topk(rt, job, result)
    if job.get("latency"):
        _latency(rt, job, result)
    result["peak_rss_mb"] = peak_rss_mb()
    if hasattr(rt, "usage"):  # an API runtime: calls, tokens and cost of this evaluation
        result["usage"] = rt.usage()
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, out_path)


if __name__ == "__main__":
    from sdk.quiet import quiet_library_noise, quiet_warnings

    quiet_library_noise()
    quiet_warnings()  # peft's wrap of an adapted teacher warns here as in the caller
    main(sys.argv[1], sys.argv[2])
