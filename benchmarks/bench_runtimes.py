"""Benchmark: one distilled student in every runtime and type the SDK exports, measured the same way.

    .venv/bin/python benchmarks/bench_runtimes.py [--run runs/fraud-demo] [--quick] [--threads 2]

For a finished decision run (default: the fraud demo), the main student is exported here (into
benchmarks/.runtimes/<run name>, through the SDK's exporters) as torch fp32 (the baseline), torch INT8
(torchao), ONNX fp32 / INT8 / INT4, GGUF Q8_0 / Q4_K_M. Each one runs in its own process
(evaluation.worker, OMP_WAIT_POLICY unchanged): file size, the template's primary metric on validation
prompts, P50/P99 per decision at batch 1, prefill and decode tokens/s (greedy, batch 1), peak RSS.
Then the SDK's llama.cpp runtime against llama-cpp-python called directly (same file, same token ids, same
threads, each in its own process, fastest of 3 alternating runs): seconds to score the same prompts; and ONNX
greedy decoding with the KV cache against re-reading the whole sequence each step.

Last line: gguf_q4km_vs_torch_decisions_per_s=<x> onnx_int8_vs_torch_decisions_per_s=<y>
sdk_vs_raw_llamacpp_time=<z> (decisions/s ratios against torch fp32; z = SDK seconds / raw seconds).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RAW_LLAMA_CPP = r"""
import json, sys, time
import numpy as np
import llama_cpp
from llama_cpp import Llama
job = json.load(open(sys.argv[1]))
llm = Llama(model_path=job["model"], n_ctx=job["n_ctx"], n_batch=job["n_ctx"], n_threads=job["threads"],
            n_threads_batch=job["threads"], verbose=False)
label_ids = job["label_ids"]
def score(ids):
    llm.reset()
    llm.eval(ids)
    row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    z = np.array([row[i] for i in label_ids], dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()
for ids in job["prompts"][:3]:
    score(ids)  # warm-up, as the SDK's latency measurement does
t0 = time.perf_counter()
probs = [score(ids) for ids in job["prompts"]]
print(json.dumps({"seconds": time.perf_counter() - t0, "probs": np.array(probs).tolist()}))
"""

SDK_LLAMA_CPP = r"""
import json, sys, time
from deployment.runtimes.llama_cpp_runtime import LlamaCppRuntime
job = json.load(open(sys.argv[1]))
rt = LlamaCppRuntime(job["model"], threads=job["threads"], n_ctx=job["n_ctx"])
for ids in job["prompts"][:3]:
    rt.score_one(ids, job["label_ids"])
t0 = time.perf_counter()
probs = rt.score(job["prompts"], job["label_ids"])
print(json.dumps({"seconds": time.perf_counter() - t0, "probs": probs.tolist()}))
"""

ONNX_KV_CACHE = r"""
import json, sys, time
import numpy as np
from deployment.runtimes.generation import GenerationParams
from deployment.runtimes.onnx_runtime import OnnxRuntime
job = json.load(open(sys.argv[1]))
rt = OnnxRuntime(job["model"], threads=job["threads"])
params = GenerationParams(max_new_tokens=job["tokens"], temperature=0.0, stop=[])
cached_s = uncached_s = 0.0
tokens = same = 0
rt.generate_one(job["prompts"][0], params)  # warm-up
for prompt in job["prompts"]:
    g = rt.generate_one(prompt, params)
    cached_s += g.seconds
    ids = list(prompt)
    t0 = time.perf_counter()
    out = []
    for _ in range(len(g.token_ids)):  # the same number of steps, each re-reading the whole sequence
        x = np.array([ids], dtype=np.int64)
        token = int(rt.generation.run(None, rt._prefill_feeds(x, np.ones_like(x)))[0][0].argmax())
        out.append(token)
        ids.append(token)
    uncached_s += time.perf_counter() - t0
    tokens += len(g.token_ids)
    same += int(out == list(g.token_ids))
print(json.dumps({"tokens": tokens, "cached_s": cached_s, "uncached_s": uncached_s, "same_text": same,
                  "prompts": len(job["prompts"])}))
"""


def export_all(student: Path, out: Path, threads: int) -> list[dict]:
    """The student through each exporter (cached in `out`: exports.json lists what is there)."""
    from deployment.exporters import ExportRequest, GgufExporter, OnnxExporter, TorchExporter

    listed = out / "exports.json"
    if listed.is_file():
        return json.loads(listed.read_text())
    out.mkdir(parents=True, exist_ok=True)
    # task "generation": the ONNX folders get the KV-cached generation graph (decode speed is measured; it
    # scores too, as one step with an empty past)
    request = ExportRequest(student, out, "student", "generation", False, {}, threads)
    arts = []
    for exporter in (GgufExporter(GgufExporter.Config(quants=["Q8_0", "Q4_K_M"])),
                     OnnxExporter(OnnxExporter.Config(quants=["fp32", "int8", "int4"])),
                     TorchExporter(TorchExporter.Config(quants=["int8"]))):
        t0 = time.perf_counter()
        for a in exporter.export(request):
            arts.append({"name": a.name, "format": a.format, "quant": a.quant, "path": str(a.path),
                         "size_bytes": a.size_bytes, "spec": a.spec, "exporter": exporter.kind})
        print(f"[bench] exported {exporter.kind} in {time.perf_counter() - t0:.0f} s", flush=True)
    listed.write_text(json.dumps(arts, indent=2))
    return arts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=str(ROOT / "runs" / "fraud-demo"))
    ap.add_argument("--quick", action="store_true", help="fewer prompts (a few minutes)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from deployment.exporters import folder_bytes
    from evaluation.harness import run_worker
    from sdk.registry import EXPORTERS, load
    from sdk.scoring import load_run

    run = load_run(args.run)
    t = run.template
    if t.task != "decision":
        raise SystemExit(f"{args.run}: a decision run is needed (decisions/s, label probabilities)")
    n_score, n_latency, n_gen = (200, 40, 3) if args.quick else (1000, 100, 10)
    val = run.run.prompts()["val"][:n_score]
    y_val = run.run.splits()["val"]["label"].to_numpy()[: len(val)]
    label_ids = list(run.task["label_ids"])
    student = run.run.path("student")
    work = ROOT / "benchmarks" / ".runtimes" / Path(args.run).name
    arts = [{"name": "torch-fp32", "format": "torch", "quant": "fp32", "path": str(student),
             "size_bytes": folder_bytes(student, ("*.safetensors",)), "spec": {}, "exporter": "torch"}]
    arts += export_all(student, work, args.threads)
    n_ctx = max(512, max(len(p) for p in val) + 64)
    gen = {"max_new_tokens": 32, "temperature": 0.0, "stop": []}
    rows = []
    for a in arts:
        spec = load(EXPORTERS, a["exporter"]).runtime_spec(Path(a["path"]), a["spec"], threads=args.threads,
                                                           batch_size=32, context_length=n_ctx)
        print(f"[bench] {a['name']}", flush=True)
        score = run_worker({"format": a["format"], "spec": spec, "label_ids": label_ids, "score": {"val": val},
                            "latency": {"kind": "score", "prompts": val[:n_latency]}}, work / "jobs", a["name"])
        decode = run_worker({"format": a["format"], "spec": spec, "label": a["name"],
                             "latency": {"kind": "generate", "prompts": val[:n_gen], "params": gen}},
                            work / "jobs", a["name"] + "-gen")
        probs = np.asarray(score["probs_val"])
        metric = t.metrics(y_val, probs, t.choose_threshold(y_val, probs, run.options), run.options)[t.primary_metric]
        prompt_tokens = float(np.mean([len(p) for p in val[:n_gen]]))
        ttft_s = decode["ttft_ms"]["mean"] / 1000
        gen_s = decode["latency_ms"]["mean"] / 1000
        new_tokens = decode["latency_tokens"] / n_gen
        rows.append({"artifact": a["name"], "mb": a["size_bytes"] / 1e6, "metric": metric,
                     "p50_ms": score["latency_ms"]["p50"], "p99_ms": score["latency_ms"]["p99"],
                     "decisions_per_s": score["decisions_per_s"], "batched_per_s": score["scored_per_s"],
                     "prefill_tok_s": prompt_tokens / max(ttft_s, 1e-9),
                     "decode_tok_s": max(new_tokens - 1, 0) / max(gen_s - ttft_s, 1e-9),
                     "peak_rss_mb": max(score["peak_rss_mb"], decode["peak_rss_mb"]), "threads": score["threads"]})

    # the SDK's llama.cpp runtime vs llama-cpp-python called directly, same file and token ids, own processes
    q4 = next(a for a in arts if a["name"] == "gguf-Q4_K_M")
    job = work / "jobs" / "llama_cpp_overhead.json"
    job.write_text(json.dumps({"model": q4["path"], "n_ctx": n_ctx, "threads": args.threads, "label_ids": label_ids,
                               "prompts": [list(p) for p in val]}))
    # alternating rounds, the fastest of each side: one run of each differed by +-10% either way here (noise)
    timed: dict[str, dict] = {}
    for _ in range(3):
        for who, code in (("raw", RAW_LLAMA_CPP), ("sdk", SDK_LLAMA_CPP)):
            res = subprocess.run([sys.executable, "-c", code, str(job)], capture_output=True, text=True, cwd=ROOT)
            if res.returncode != 0:
                raise SystemExit(f"{who} llama.cpp run failed:\n{res.stderr[-2000:]}")
            got = json.loads(res.stdout.strip().splitlines()[-1])
            if who not in timed or got["seconds"] < timed[who]["seconds"]:
                timed[who] = got
    same = float(np.abs(np.array(timed["raw"]["probs"]) - np.array(timed["sdk"]["probs"])).max())

    # ONNX decoding with the KV cache (generation.onnx) against re-reading the whole sequence each step
    fp32 = next(a for a in arts if a["name"] == "onnx-fp32")
    job = work / "jobs" / "onnx_kv_cache.json"
    job.write_text(json.dumps({"model": fp32["path"], "threads": args.threads, "tokens": 64,
                               "prompts": [list(p) for p in val[:n_gen]]}))
    res = subprocess.run([sys.executable, "-c", ONNX_KV_CACHE, str(job)], capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"ONNX KV-cache run failed:\n{res.stderr[-2000:]}")
    kv = json.loads(res.stdout.strip().splitlines()[-1])

    name = t.primary_metric
    print(f"\n{Path(args.run).name}: {len(val)} validation prompts, {args.threads} threads, {name} on them; latency "
          f"over {n_latency} decisions at batch 1; prefill/decode over {n_gen} greedy completions of 32 tokens\n")
    print(f"| artifact | MB | {name} (val) | P50 ms | P99 ms | decisions/s | batched/s | prefill tok/s | decode tok/s "
          "| peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['artifact']} | {r['mb']:.1f} | {r['metric']:.4f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['decisions_per_s']:.1f} | {r['batched_per_s']:.1f} | {r['prefill_tok_s']:.0f} | "
              f"{r['decode_tok_s']:.1f} | {r['peak_rss_mb']:.0f} |")
    print(f"\nllama.cpp Q4_K_M, {len(val)} prompts, fastest of 3 alternating runs each: SDK runtime "
          f"{timed['sdk']['seconds']:.2f} s, llama-cpp-python directly {timed['raw']['seconds']:.2f} s; max |probability "
          f"difference| {same:.1e}")
    print(f"ONNX fp32 greedy decode, {kv['tokens']} tokens over {kv['prompts']} prompts: with the KV cache "
          f"{kv['tokens'] / kv['cached_s']:.1f} tokens/s, re-reading the sequence each step "
          f"{kv['tokens'] / kv['uncached_s']:.1f} tokens/s (x{kv['uncached_s'] / kv['cached_s']:.2f}); same tokens for "
          f"{kv['same_text']}/{kv['prompts']} prompts")
    (work / "results.json").write_text(json.dumps({"rows": rows, "llama_cpp": {k: v["seconds"] for k, v in timed.items()},
                                                   "onnx_kv_cache": kv},
                                                  indent=2))
    by = {r["artifact"]: r for r in rows}
    base = by["torch-fp32"]["decisions_per_s"]
    print(f"gguf_q4km_vs_torch_decisions_per_s={by['gguf-Q4_K_M']['decisions_per_s'] / base:.2f} "
          f"onnx_int8_vs_torch_decisions_per_s={by['onnx-int8']['decisions_per_s'] / base:.2f} "
          f"sdk_vs_raw_llamacpp_time={timed['sdk']['seconds'] / timed['raw']['seconds']:.3f}")


if __name__ == "__main__":
    main()
