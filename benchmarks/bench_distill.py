"""Benchmark: this engine's response KD against TRL's GKDTrainer on the same student, teacher, data and steps.

    python benchmarks/bench_distill.py --quick          # a few minutes on 2 CPU threads
    python benchmarks/bench_distill.py --arch qwen2-0.5b-1.5b --device cuda --batch-size 8 \
        --prompt-len 256 --response-len 768            # the H200 check (benchmarks/gpu_check_issue9.sh)

Teacher: the embedded SmolLM2-135M-Instruct (30 layers, vocabulary 49,152); student: 6 of its layers (the
fraud demo's cut), both fp32 on CPU. Data: random token sequences, prompt + response (the cost does not
depend on the tokens). Objective everywhere: forward KL(teacher || student) at T=1 over response tokens,
alpha 0 (no task term), AdamW at the same learning rate, same batches, same number of steps.

- `online`: this engine with the teacher run alongside (sdk.distill.sequence.make_response_loss(teacher=)):
  both models' logits built 256 response rows at a time through their heads, full vocabulary;
- `cached`: this engine on the teacher's top-k (k=32) log-probabilities stored once beforehand (the teacher
  is not in the training process; the one-off cost of writing the store is printed apart);
- `trl` (the named baseline): TRL 1.16's `trl.experimental.gkd.GKDTrainer`, lmbda 0 (no on-policy samples),
  beta 0 (forward KL), full logits of both models.

Each variant runs in its own process (peak RSS is that process's). Throughput is prompt + response
tokens per step over the median timed step (the first two steps warm up and are not timed). TRL is installed for the
benchmark only, not as an SDK dependency:

    .venv/bin/pip install --no-deps --target .bench-site trl==1.16.0 datasets==5.2.0 dill==0.4.1 \\
        multiprocess==0.70.19 xxhash==4.1.0

The last line reads `cached_vs_trl_tokens_per_s=<x> online_vs_trl_tokens_per_s=<y> rss_vs_trl=<z>` (rss: the
cached variant's peak RSS over TRL's).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / ".bench-site"
WARMUP = 2


def _data(n: int, prompt_len: int, response_len: int, vocab: int, seed: int = 0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    prompts = torch.randint(10, vocab, (n, prompt_len), generator=gen).tolist()
    responses = torch.randint(10, vocab, (n, response_len), generator=gen).tolist()
    return prompts, responses


# random-init Qwen2 pairs for GPU checks (no weights can be downloaded there): (student, teacher) configs
ARCHS = {
    "qwen2-tiny": (dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=128, vocab_size=4096),
                   dict(hidden_size=128, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                        intermediate_size=256, vocab_size=4096)),
    # the DeepSeek-R1-Distill / Qwen2.5 0.5B and 1.5B shapes
    "qwen2-0.5b-1.5b": (dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                             intermediate_size=4864, vocab_size=151936),
                        dict(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                             intermediate_size=8960, vocab_size=151936)),
}


def _random_pair(arch: str, work: Path, device: str):
    """A random-init student and teacher of `arch` saved under work/ (the teacher in bf16 on GPUs)."""
    import torch
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    student_cfg, teacher_cfg = ARCHS[arch]
    vocab = student_cfg["vocab_size"]
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)},
                                                                              unk_token="t0")),
                                  pad_token="t0", eos_token="t1")
    for name, cfg, seed in (("student", student_cfg, 0), ("teacher", teacher_cfg, 1)):
        torch.manual_seed(seed)
        with torch.device(device):
            model = Qwen2ForCausalLM(Qwen2Config(**cfg, tie_word_embeddings=True, max_position_embeddings=4096,
                                                 attn_implementation="sdpa", pad_token_id=0, eos_token_id=1))
        model.save_pretrained(work / name)
        tok.save_pretrained(work / name)


def prepare(args) -> dict:
    """The student (6 of the teacher's layers) saved once, and the teacher's top-k store written once: what
    the annotate and distill stages hand over; the cached variant then never loads the teacher."""
    import torch

    from sdk.distill.sequence import teacher_topk
    from sdk.distill.topk_store import TopKStore
    from sdk.models import load_causal_lm, resolve_model
    from sdk.students import bottom_and_spread_layers, student_from_teacher

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    if args.arch != "embedded":
        _random_pair(args.arch, work, args.device)
        teacher, tok = load_causal_lm(work / "teacher")
        teacher = teacher.to(args.device).eval()
    else:
        teacher, tok = load_causal_lm(resolve_model(args.teacher))
        teacher = teacher.float().eval().to(args.device)
        keep = bottom_and_spread_layers(teacher.config.num_hidden_layers, args.student_layers, 0)
        torch.manual_seed(0)
        student_from_teacher(teacher, keep).float().save_pretrained(work / "student")
        tok.save_pretrained(work / "student")
    prompts, responses = _data(args.batch_size * (args.steps + WARMUP), args.prompt_len, args.response_len,
                               teacher.config.vocab_size)
    t0 = time.perf_counter()
    TopKStore.write(work / "topk.safetensors", teacher_topk(teacher, prompts, responses, args.k, tok.pad_token_id,
                                                            batch_size=args.batch_size),
                    vocab_size=teacher.config.vocab_size)
    return {"store_s": time.perf_counter() - t0}


def run_variant(args) -> dict:
    """One variant in this process: the timed training steps."""
    import torch

    from sdk.models import load_causal_lm, resolve_model

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    work = Path(args.work)
    student, tok = load_causal_lm(work / "student")
    student = student.float()
    teacher = None
    if args.variant != "cached":  # the cached variant never loads the teacher
        source = work / "teacher" if args.arch != "embedded" else resolve_model(args.teacher)
        teacher = load_causal_lm(source)[0].eval().to(device)
        teacher = teacher.to(torch.bfloat16) if device.type == "cuda" else teacher.float()  # no grads: bf16 on GPUs
    n = args.batch_size * (args.steps + WARMUP)
    prompts, responses = _data(n, args.prompt_len, args.response_len, student.config.vocab_size)
    tokens_per_step = args.batch_size * (args.prompt_len + args.response_len)
    stamps: list[float] = []
    if args.variant in ("online", "cached"):
        from sdk.distill.losses import ResponseKD
        from sdk.distill.recipe import train
        from sdk.distill.sequence import make_response_loss
        from sdk.distill.topk_store import TopKStore

        kd = ResponseKD(temperature=1.0, alpha=0.0, chunk_tokens=args.chunk_tokens, recompute=args.recompute)
        if args.variant == "cached":
            store = TopKStore.read(work / "topk.safetensors")
            batch_loss = make_response_loss(prompts, responses, kd, tok.pad_token_id, topk=store)
        else:
            batch_loss = make_response_loss(prompts, responses, kd, tok.pad_token_id, teacher=teacher)
        student.to(device)

        class Clock:  # the recipe calls set_progress at the start of every step
            last_terms: dict = {}

            def set_progress(self, fraction: float) -> None:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                stamps.append(time.perf_counter())

        ckpt = work / f"ckpt-{args.variant}"
        shutil.rmtree(ckpt, ignore_errors=True)  # a fresh run, not a resume of the last one
        profiler = _profiler(args, device)
        with profiler:
            train(student, batch_loss, n, lambda m: 0.0, lr=1e-5, batch_size=args.batch_size, max_epochs=1.0,
                  eval_every=10**9, patience=10**9, seed=0, checkpoint_dir=ckpt, warmup_ratio=0.0,
                  lr_schedule="constant_with_warmup", loss_fn=Clock())
        if args.profile:  # to stderr: stdout's last line is the JSON the parent reads
            print(profiler.key_averages().table(sort_by=f"self_{device.type}_time_total", row_limit=25,
                                                max_name_column_width=60), file=sys.stderr)
        stamps = stamps[WARMUP:]  # the last stamp is the last step's start: its end holds the final checkpoint
    else:
        sys.path.insert(0, str(SITE))
        from datasets import Dataset
        from datasets.table import InMemoryTable
        from transformers import TrainerCallback
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        def collate(rows):
            ids = torch.tensor([r["input_ids"] for r in rows])
            labels = ids.clone()
            labels[:, : args.prompt_len] = -100
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
                    "prompts": ids[:, : args.prompt_len], "prompt_attention_mask": torch.ones_like(ids[:, : args.prompt_len])}

        class Clock(TrainerCallback):
            def on_step_begin(self, *a, **kw):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                stamps.append(time.perf_counter())

        # a fixed fingerprint: datasets otherwise hashes the table with dill, which failed on the H200 machine's
        # Python 3.12 (pyarrow's MonthDayNano type cannot be pickled there); nothing here is cached
        data = Dataset(InMemoryTable.from_pydict({"input_ids": [p + r for p, r in zip(prompts, responses)]}),
                       fingerprint="bench-distill")
        cfg = GKDConfig(output_dir=str(work / "trl"), per_device_train_batch_size=args.batch_size,
                        max_steps=args.steps + WARMUP, learning_rate=1e-5, lr_scheduler_type="constant",
                        lmbda=0.0, beta=0.0, temperature=1.0, logging_steps=10**6, save_strategy="no", report_to=[],
                        use_cpu=args.device == "cpu", bf16=args.device != "cpu", dataloader_num_workers=0,
                        max_length=args.prompt_len + args.response_len, seed=0, disable_tqdm=True,
                        gradient_checkpointing=False)  # as this engine: no recomputation of the layers
        trainer = GKDTrainer(model=student, teacher_model=teacher, args=cfg, train_dataset=data,
                             processing_class=tok, data_collator=collate, callbacks=[Clock()])
        trainer.train()
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())  # after the last step (no checkpoint is written)
        stamps = stamps[WARMUP:]
    step_s = [b - a for a, b in zip(stamps, stamps[1:])]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # The median step, not the mean: on a shared virtual machine one step in a few can take twice as long
    # (page faults, a busy neighbour), and over 3-4 steps that one step decided the ratio (2026-12-03: online
    # 0.97x TRL in one run, 2.18x in the next; 8 steps and the median agreed within 10%).
    out = {"variant": args.variant, "tokens_per_s": tokens_per_step / statistics.median(step_s),
           "timed_steps": len(step_s), "step_s": [round(s, 3) for s in step_s], "peak_rss_mb": rss}
    if device.type == "cuda":
        out["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def _profiler(args, device):
    """torch.profiler over the whole run when --profile is given (it slows the steps: time without it), else
    a no-op context."""
    import contextlib

    import torch

    if not args.profile:
        return contextlib.nullcontext()
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    return torch.profiler.profile(activities=acts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 timed steps of 2 x (64 + 192) tokens")
    ap.add_argument("--teacher", default="embedded:smollm2-135m-instruct")
    ap.add_argument("--arch", default="embedded", choices=["embedded", *ARCHS],
                    help="embedded: the SmolLM2 teacher and a 6-layer cut of it; else a random-init Qwen2 pair")
    ap.add_argument("--student-layers", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--response-len", type=int, default=192)
    ap.add_argument("--steps", type=int, default=8, help="timed steps (after 2 warm-up steps)")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--chunk-tokens", type=int, default=256, help="response positions per chunk of this engine's loss")
    ap.add_argument("--recompute", default="auto", choices=["auto", "always", "never"],
                    help="recompute each loss chunk's logits in backward (this engine)")
    ap.add_argument("--profile", action="store_true", help="print torch.profiler's top ops of each engine variant "
                    "(to stderr; slows the steps)")
    ap.add_argument("--variant", choices=["prepare", "online", "cached", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / ".distill"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.batch_size, args.steps = 2, 8
    if args.variant:
        print(json.dumps(prepare(args) if args.variant == "prepare" else run_variant(args)))
        return
    if not (SITE / "trl").is_dir():
        raise SystemExit(f"TRL is not installed for the benchmark: see the install line in {__file__}")
    rows = {}
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for variant in ("prepare", "trl", "online", "cached"):
        cmd = [sys.executable, __file__, "--variant", variant, "--work", str(work)] + [
            f"--{k.replace('_', '-')}" if v is True else f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
            if k not in ("quick", "variant", "work") and v is not None and v is not False]
        # keep a PYTHONPATH the caller set (the GPU machine's carried wheels: pydantic, TRL) behind the repo
        path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": path}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
        rows[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        if variant == "prepare":
            print(f"student cut and top-{args.k} store written once ({rows[variant]['store_s']:.1f} s for the "
                  "teacher's pass), outside the timed runs", flush=True)
            continue
        print(f"{variant:7s} {rows[variant]['tokens_per_s']:8.1f} tokens/s (median of {rows[variant]['timed_steps']} steps: "
              f"{' '.join(f'{s:.2f}' for s in rows[variant]['step_s'])} s), "
              f"peak RSS {rows[variant]['peak_rss_mb']:.0f} MiB"
              + (f", max GPU memory allocated {rows[variant]['max_memory_allocated_gib']:.1f} GiB"
                 if "max_memory_allocated_gib" in rows[variant] else ""), flush=True)
    trl, online, cached = rows["trl"], rows["online"], rows["cached"]
    who = f"teacher {args.teacher}, student {args.student_layers} layers" if args.arch == "embedded" else \
        f"random-init {args.arch} (student, teacher)"
    print(f"\n{who}, batch {args.batch_size} x "
          f"({args.prompt_len} + {args.response_len}) tokens, {args.threads} threads, {args.device}")
    print(f"cached_vs_trl_tokens_per_s={cached['tokens_per_s'] / trl['tokens_per_s']:.2f} "
          f"online_vs_trl_tokens_per_s={online['tokens_per_s'] / trl['tokens_per_s']:.2f} "
          f"rss_vs_trl={cached['peak_rss_mb'] / trl['peak_rss_mb']:.2f}"
          + (f" gpu_memory_vs_trl={online['max_memory_allocated_gib'] / trl['max_memory_allocated_gib']:.2f} (online),"
             f" {cached['max_memory_allocated_gib'] / trl['max_memory_allocated_gib']:.2f} (cached)"
             if "max_memory_allocated_gib" in trl else ""))


if __name__ == "__main__":
    main()
