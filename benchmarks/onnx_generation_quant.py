"""Benchmark: which onnxruntime quantization keeps a generation student's quality (issue 8).

    .venv/bin/python benchmarks/onnx_generation_quant.py --run runs/code-demo [--problems 60] [--threads 2]

For a finished generation run (the code template), the main student's fp32 ONNX folder (the run's
artifacts/student-onnx-fp32, or exported here) is quantized by each recipe below into
benchmarks/.onnx-quant/<run name>/<recipe>; each graph generates greedy completions for the first
`--problems` test problems in its own process (evaluation.worker), the template's sandbox verifies them.
Per recipe: folder MB, pass@1, problems passed only by fp32 / only by the recipe, completions identical to
fp32's, decode tokens/s at batch 1 (3 prompts) and batched.

Recipes: dynamic INT8 (the exporter's int8-dynamic: per-channel weights, one activation scale per tensor; tuned
on the fraud student), the same with down_proj in fp32 (the layer with the largest activation outliers), 8-bit
MatMulNBits (the exporter's int8: blocks of 32, int8 activations per block), 4-bit MatMulNBits (W4A16) with fp32
or int8 compute (accuracy_level 4), 4-bit with down_proj and v_proj at 8 bits (the exporter's int4; what
llama.cpp's Q4_K_M does with 6 bits), and onnxruntime's HQQ 4-bit. The output head stays fp32 in all.

Last line: <recipe>_vs_fp32_pass1=<pass@1 ratio> for each recipe (the baseline: fp32 ONNX, same problems).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def recipes():
    from deployment.onnx_export import quantize_int4, quantize_int8, quantize_weight_only

    head = ["lm_head"]
    return {
        "int8-dynamic": lambda f, o: quantize_int8(f, o, keep_float=head),
        "int8-dynamic-fp32-down": lambda f, o: quantize_int8(f, o, keep_float=[*head, "down_proj"]),
        "int8-blocks": lambda f, o: quantize_weight_only(f, o, bits=8, block_size=32, keep_float=head),
        "w4": lambda f, o: quantize_int4(f, o, block_size=32, keep_float=head),
        "w4-acc4": lambda f, o: quantize_int4(f, o, block_size=32, keep_float=head, accuracy_level=4),
        "w4-8bit-down-v": lambda f, o: quantize_int4(f, o, block_size=32, keep_float=head,
                                                     eight_bit=["down_proj", "v_proj"]),
        "w4-8bit-down-v-acc4": lambda f, o: quantize_int4(f, o, block_size=32, keep_float=head, accuracy_level=4,
                                                          eight_bit=["down_proj", "v_proj"]),
        "w4-hqq": lambda f, o: quantize_weight_only(f, o, bits=4, block_size=32, keep_float=head, algorithm="hqq"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="runs/code-demo")
    ap.add_argument("--problems", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recipes", nargs="*", help="a subset of the recipes (default: all)")
    args = ap.parse_args()

    from deployment.exporters import folder_bytes
    from deployment.onnx_export import export_folder
    from evaluation.harness import run_worker
    from sdk import config as cfgmod
    from sdk.registry import get_template
    from sdk.rundir import RunDir

    # the run only needs its student exported (the evaluate stage may still be running)
    source = str(Path(args.run) / "config.yaml")
    config = cfgmod.validate_config(cfgmod.load_yaml(source), source=source)
    options = cfgmod.template_options(config, source)
    run = argparse.Namespace(run=RunDir(Path(args.run)), config=config, options=options,
                             template=get_template(config.template, options))
    if run.template.task != "generation":
        sys.exit(f"{args.run}: a {run.template.task} run; this benchmark is for generation students")
    out = ROOT / "benchmarks" / ".onnx-quant" / Path(args.run).resolve().name
    out.mkdir(parents=True, exist_ok=True)
    fp32 = run.run.path("artifacts", "student-onnx-fp32")
    if not (fp32 / "generation.onnx").is_file():
        fp32 = export_folder(run.run.path("student"), out / "fp32")
    rows = run.run.splits()["test"].to_dict("records")[: args.problems]
    prompts = [list(p) for p in run.run.prompts()["test"][: args.problems]]
    c = run.config
    greedy = {"max_new_tokens": c.evaluation.max_new_tokens, "temperature": 0.0, "stop": list(c.annotate.stop)}

    def measure(name: str, folder: Path) -> dict:
        spec = {"model": str(folder), "threads": args.threads, "batch_size": 32}
        res = run_worker({"format": "onnx", "spec": spec, "label": name,
                          "generate": {"test": {"prompts": prompts, "params": greedy}},
                          "latency": {"kind": "generate", "prompts": prompts[:3], "params": greedy}},
                         out / "work", name)
        gen = res["generations"]["test"]
        texts = [[o[0]["text"]] for o in gen["outputs"]]
        passed = np.array([bool(v[0]["passed"]) for v in run.template.verify(rows, texts, run.options)])
        return {"name": name, "mb": folder_bytes(folder, ("*.onnx",)) / 1e6, "passed": passed,
                "texts": [t[0] for t in texts], "tokens_per_s": res["tokens_per_s"],
                "batched_tokens_per_s": gen["tokens_per_s"], "peak_rss_mb": res["peak_rss_mb"]}

    results = [measure("fp32", fp32)]
    ref = results[0]
    chosen = args.recipes or list(recipes())
    for name in chosen:
        folder = out / name
        shutil.rmtree(folder, ignore_errors=True)
        print(f"[bench] quantizing: {name}", flush=True)
        recipes()[name](fp32, folder)
        results.append(measure(name, folder))

    print(f"\n{args.run}: first {len(rows)} test problems, greedy, {args.threads} threads, each graph in its own "
          "process\n")
    print("| recipe | MB | pass@1 | only fp32 / only this | identical to fp32 | tokens/s (batch 1) | tokens/s "
          "(batched) | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        same = np.mean([a == b for a, b in zip(r["texts"], ref["texts"])])
        lost, won = int((ref["passed"] & ~r["passed"]).sum()), int((r["passed"] & ~ref["passed"]).sum())
        print(f"| {r['name']} | {r['mb']:.1f} | {r['passed'].mean():.3f} | {lost} / {won} | {same:.0%} | "
              f"{r['tokens_per_s']:.1f} | {r['batched_tokens_per_s']:.1f} | {r['peak_rss_mb']:.0f} |")
    base = max(ref["passed"].mean(), 1e-9)
    print(" ".join(f"{r['name']}_vs_fp32_pass1={r['passed'].mean() / base:.3f}" for r in results[1:]))


if __name__ == "__main__":
    main()
