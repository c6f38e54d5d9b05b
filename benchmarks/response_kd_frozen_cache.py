"""Benchmark: response-level KD of a student with a frozen bottom, with and without the frozen-layer cache.

    .venv/bin/python benchmarks/response_kd_frozen_cache.py [--steps 5] [--batch-size 8]
        [--prompt-len 120] [--response-len 100] [--layers 20] [--frozen 12] [--alpha 0.5]

Student: `--layers` layers cut from the embedded teacher (SmolLM2-135M-Instruct, 30 layers) as the distill
stage cuts it (bottom `--frozen` layers kept and frozen, the rest spread over the depth; embeddings frozen);
a random model of the same shape when the embedded teacher cannot be resolved.
Data: synthetic token sequences (prompt and response lengths drawn around the given means), synthetic
teacher top-k rows (k=16) when alpha < 1.
Baseline (named): `make_response_loss` on the full student, every step runs all layers forward.
Candidate: `cache_sequences` once, then `make_response_loss(..., cache=)` on `top_view(student, frozen)`:
each step runs only the trainable top layers, norm and LM head.
Prints seconds per step for both (their steps alternate, so a passing load weighs on both alike), the
one-off cache cost per sequence, and the ratio; the first batch's loss is computed both ways first, as a
check that they agree.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import numpy as np
import torch

from sdk.distill.frozen_prefix import cache_sequences, top_view
from sdk.distill.losses import ResponseKD
from sdk.distill.sequence import make_response_loss
from sdk.distill.topk_store import TopKStore, ids_dtype
from sdk.students import bottom_and_spread_layers, freeze_layers, student_from_teacher

PAD = 0


def load_teacher():
    """(model, description): the embedded teacher, or a random model of its shape when unavailable."""
    from sdk.models import load_causal_lm, resolve_model

    try:
        model, _ = load_causal_lm(resolve_model("embedded:smollm2-135m-instruct"))
        return model, "embedded:smollm2-135m-instruct"
    except Exception as err:  # no embedded GGUF here: time the same shapes on random weights
        from transformers import LlamaConfig, LlamaForCausalLM

        print(f"embedded teacher unavailable ({type(err).__name__}: {err}); using a random model of its shape")
        cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                          num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                          rope_theta=100000.0, tie_word_embeddings=True)
        return LlamaForCausalLM(cfg).eval(), "random SmolLM2-135M-shaped llama"


def synthetic(n: int, prompt_len: int, response_len: int, vocab: int, k: int, seed: int = 0):
    rng = random.Random(seed)

    def length(mean: int) -> int:
        return max(1, rng.randint(int(mean * 0.7), int(mean * 1.3)))

    prompts = [[rng.randrange(1, vocab) for _ in range(length(prompt_len))] for _ in range(n)]
    responses = [[rng.randrange(1, vocab) for _ in range(length(response_len))] for _ in range(n)]
    tokens = sum(map(len, responses))
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(tokens, k, generator=gen) * 2
    logprobs = (torch.log_softmax(logits, -1) - 1.0).to(torch.float16).numpy()
    ids = torch.randint(0, vocab, (tokens, k), generator=gen).numpy().astype(ids_dtype(vocab))
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(r) for r in responses], out=offsets[1:])
    return prompts, responses, TopKStore(logprobs, ids, offsets, vocab)


def time_steps(student, runs, n: int, steps: int, batch_size: int) -> list[dict[str, float]]:
    """Per run (model, batch_loss): median wall and mean CPU seconds per optimizer step (loss, backward, clip,
    AdamW) over `steps`, after one warm-up step. The runs take turns step by step, so a load that comes and
    goes on the machine weighs on each alike."""
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    wall: list[list[float]] = [[] for _ in runs]
    cpu: list[list[float]] = [[] for _ in runs]
    for s in range(steps + 1):
        idx = [(s * batch_size + i) % n for i in range(batch_size)]
        for r, (model, batch_loss) in enumerate(runs):
            model.train()
            t, c = time.perf_counter(), time.process_time()
            loss = batch_loss(model, idx)[0]
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if s:  # the first step warms up
                wall[r].append(time.perf_counter() - t)
                cpu[r].append(time.process_time() - c)
    return [{"wall": statistics.median(w), "cpu": statistics.fmean(c)} for w, c in zip(wall, cpu)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--examples", type=int, default=48, help="synthetic sequences (cached, and stepped through)")
    ap.add_argument("--prompt-len", type=int, default=120)
    ap.add_argument("--response-len", type=int, default=100)
    ap.add_argument("--layers", type=int, default=20)
    ap.add_argument("--frozen", type=int, default=12)
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--train-sequences", type=int, default=331,
                    help="sequences of the projected stage run (the code demo's accepted responses)")
    ap.add_argument("--epochs", type=float, default=6)
    a = ap.parse_args()
    torch.manual_seed(0)

    teacher, origin = load_teacher()
    keep = bottom_and_spread_layers(teacher.config.num_hidden_layers, a.layers, a.frozen)
    student = student_from_teacher(teacher, keep)
    del teacher
    student.get_input_embeddings().weight.requires_grad_(False)  # distill.freeze_embeddings (default)
    freeze_layers(student, a.frozen)
    prompts, responses, topk = synthetic(a.examples, a.prompt_len, a.response_len, student.config.vocab_size, a.k)
    kd = ResponseKD(temperature=1.0, alpha=a.alpha)
    store = topk if a.alpha < 1 else None
    uncached = make_response_loss(prompts, responses, kd, PAD, topk=store)

    t0 = time.perf_counter()
    cache = cache_sequences(student, [[*p, *r] for p, r in zip(prompts, responses)], a.frozen, PAD,
                            batch_size=32, desc=None)
    cache_s = (time.perf_counter() - t0) / len(prompts)
    cached = make_response_loss(prompts, responses, kd, PAD, topk=store, cache=cache)
    view = top_view(student, a.frozen)
    with torch.no_grad():  # same weights, same batch: the two paths must agree
        first = list(range(a.batch_size))
        loss_u, loss_c = [(lambda s, n: s.item() / n)(*f(m, first)) for f, m in ((uncached, student), (cached, view))]

    load_before = os.getloadavg()[0]
    base_t, cand_t = time_steps(student, [(student, uncached), (view, cached)], len(prompts), a.steps, a.batch_size)
    base, cand = base_t["wall"], cand_t["wall"]

    steps = a.epochs * -(-a.train_sequences // a.batch_size)
    base_run = 2 * steps * base  # the student and its sequence-KD twin, same number of steps
    cand_run = a.train_sequences * cache_s + 2 * steps * cand  # one cache serves both
    tokens = sum(len(p) + len(r) for p, r in zip(prompts, responses)) / len(prompts)
    print(f"model={origin} threads={torch.get_num_threads()} layers={a.layers} frozen={a.frozen} "
          f"batch={a.batch_size} alpha={a.alpha} mean tokens/sequence={tokens:.0f} "
          f"(prompt ~{a.prompt_len}, response ~{a.response_len}) steps={a.steps}")
    print(f"first-batch loss        : uncached {loss_u:.6f}  cached {loss_c:.6f}  |diff| {abs(loss_u - loss_c):.2e}")
    print(f"cache                   : {cache.nbytes / len(cache) / 2**20:.2f} MiB/sequence, "
          f"{cache_s * 1000:.0f} ms/sequence once")
    print(f"baseline (uncached)     : {base:.3f} s/step (median wall), {base_t['cpu']:.2f} CPU s/step")
    print(f"cached top view         : {cand:.3f} s/step (median wall), {cand_t['cpu']:.2f} CPU s/step")
    print(f"per-step ratio          : {base / cand:.2f}x wall, {base_t['cpu'] / cand_t['cpu']:.2f}x CPU "
          f"(cached = {cand / base:.0%} of baseline)")
    print(f"load average            : {load_before:.2f} before timing, {os.getloadavg()[0]:.2f} after "
          f"(above the thread count, other processes shared the cores)")
    print(f"stage projection        : {base_run:.0f} s -> {cand_run:.0f} s ({base_run / cand_run:.2f}x) for "
          f"{a.train_sequences} sequences x {a.epochs:g} epochs, student + sequence-KD twin")


if __name__ == "__main__":
    main()
