"""Benchmark: LoRA adaptation of the top k layers with and without frozen-prefix caching.

    .venv/bin/python benchmarks/frozen_prefix.py [--steps 10] [--top-layers 8]

Baseline (named): `token_forward`, every step runs all layers forward + top k backward.
Candidate: `cached_forward`, the bottom layers run once per prompt, each step runs only the top k.
Prints seconds per step for both, the one-off cache cost, and the speed-up for a 3-epoch run.
"""

from __future__ import annotations

import argparse
import time

import torch
from peft import LoraConfig, get_peft_model

from sdk.distill.batching import token_forward
from sdk.distill.frozen_prefix import cache_hidden_states, cached_forward, top_view
from sdk.models import load_causal_lm, resolve_model
from sdk.students import decoder_linear_names
from verticals.fraud import FraudTemplate


def time_steps(model, forward, n_examples, steps, batch_size, target):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    times = []
    for s in range(steps + 1):
        idx = [(s * batch_size + i) % n_examples for i in range(batch_size)]
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(forward(model, idx), target[idx])
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    return sum(times[1:]) / steps  # first step warms up


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--top-layers", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--examples", type=int, default=256)
    a = ap.parse_args()
    torch.manual_seed(0)
    model, tok = load_causal_lm(resolve_model("embedded:smollm2-135m-instruct"))
    n = model.config.num_hidden_layers
    start = n - a.top_layers
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=decoder_linear_names(model),
                                             layers_to_transform=list(range(start, n))))
    t = FraudTemplate()
    df = t.synthesize(a.examples, 0, {})
    seqs = [tok(t.prompt(r))["input_ids"] for r in df.to_dict("records")]
    target = torch.randint(0, 2, (len(seqs),))

    base = time_steps(model, token_forward(seqs, tok.pad_token_id), len(seqs), a.steps, a.batch_size, target)
    t0 = time.perf_counter()
    cache = cache_hidden_states(model, seqs, start, tok.pad_token_id, 32, desc=None)
    cache_s = (time.perf_counter() - t0) / len(seqs)  # per example
    cand = time_steps(top_view(model, start), cached_forward(cache), len(seqs), a.steps, a.batch_size, target)

    steps_per_epoch = len(seqs) / a.batch_size
    epochs = 3
    base_run = epochs * steps_per_epoch * base
    cand_run = len(seqs) * cache_s + epochs * steps_per_epoch * cand
    print(f"threads={torch.get_num_threads()} layers={n} top_layers={a.top_layers} batch={a.batch_size}")
    print(f"baseline token_forward : {base:.3f} s/step")
    print(f"cached_forward         : {cand:.3f} s/step (+ {cache_s * 1000:.1f} ms/example once)")
    print(f"per-step ratio         : {base / cand:.2f}x")
    print(f"3-epoch ratio          : {base_run / cand_run:.2f}x ({base_run:.0f} s -> {cand_run:.0f} s "
          f"for {len(seqs)} examples)")


if __name__ == "__main__":
    main()
