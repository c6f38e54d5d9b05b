"""The recipe's mechanics on a tiny random student distilled from stored teacher top-k: gradient
accumulation (4 micro-batches of 2 == one batch of 8, per-token normalisation across responses of different
lengths), exact resume after SIGKILL mid-epoch (dropout on: RNG states are part of the checkpoint),
transformers' LR schedules, per-term logging, and two identical runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sdk.distill.losses import ResponseKD
from sdk.distill.recipe import _micro_batches, train
from sdk.distill.sequence import make_response_loss, teacher_topk
from sdk.distill.topk_store import TopKStore
from sdk.models import load_causal_lm

PAD = 0


def _data(vocab: int, n: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, vocab, (int(torch.randint(3, 9, (1,), generator=gen)),), generator=gen).tolist()
               for _ in range(n)]
    responses = [torch.randint(3, vocab, (int(torch.randint(1, 14, (1,), generator=gen)),), generator=gen).tolist()
                 for _ in range(n)]
    return prompts, responses


def _setup(model_dir: str, store_path: Path, dropout: float = 0.0):
    """A fresh 1-layer student of the tiny model and a response-KD batch loss over stored teacher top-k."""
    from sdk.students import student_from_teacher

    teacher, _ = load_causal_lm(model_dir)
    prompts, responses = _data(teacher.config.vocab_size)
    if not store_path.is_file():
        TopKStore.write(store_path, teacher_topk(teacher, prompts, responses, 8, PAD))
    torch.manual_seed(0)
    student = student_from_teacher(teacher, [0])
    student.config.attention_dropout = dropout
    for layer in student.model.layers:
        layer.self_attn.attention_dropout = dropout
    kd = ResponseKD(temperature={"kind": "linear", "start": 3.0, "end": 1.0}, alpha=0.3, chunk_tokens=16)
    return student, kd, make_response_loss(prompts, responses, kd, PAD, TopKStore.read(store_path)), len(prompts)


def test_micro_batches_split_a_batch_without_losing_examples():
    assert _micro_batches(list(range(8)), 4) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert _micro_batches(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert _micro_batches([5, 6], 4) == [[5], [6]]
    assert _micro_batches([], 2) == []


def test_accumulating_4_micro_batches_of_2_equals_a_batch_of_8(tiny_llama, tmp_path):
    store = tmp_path / "topk.safetensors"
    runs = {}
    for accum in (1, 4):
        student, kd, batch_loss, n = _setup(str(tiny_llama), store)
        res = train(student, batch_loss, n, lambda m: 0.0, lr=3e-3, batch_size=8, max_epochs=2, eval_every=100,
                    patience=5, seed=0, checkpoint_dir=tmp_path / f"a{accum}", grad_accum=accum, loss_fn=kd)
        log = [json.loads(x) for x in (tmp_path / f"a{accum}" / "log.jsonl").read_text().splitlines()]
        runs[accum] = (student.state_dict(), [r for r in log if "loss" in r], res)
    (w1, log1, _), (w4, log4, _) = runs[1], runs[4]
    assert len(log1) == len(log4) == 4
    for a, b in zip(log1, log4):
        assert a["units"] == b["units"] and abs(a["loss"] - b["loss"]) < 1e-5
        assert abs(a["ce"] - b["ce"]) < 1e-5 and abs(a["kd"] - b["kd"]) < 1e-5
    assert max((w1[k] - w4[k]).abs().max().item() for k in w1) < 1e-5
    assert log1[0]["temperature"] == 3.0 and log1[-1]["temperature"] == 1.0  # the schedule reached the loss
    assert all(abs(r["loss"] - (0.3 * r["ce"] + 0.7 * r["kd"])) < 1e-4 for r in log1)


def test_transformers_lr_schedules_and_a_clear_error_for_an_unknown_one(tiny_llama, tmp_path):
    store = tmp_path / "topk.safetensors"
    for name in ("linear", "cosine"):
        student, kd, batch_loss, n = _setup(str(tiny_llama), store)
        train(student, batch_loss, n, lambda m: 0.0, lr=1e-3, batch_size=4, max_epochs=5, eval_every=100,
              patience=5, seed=0, checkpoint_dir=tmp_path / name, lr_schedule=name, warmup_ratio=0.1)
        lrs = [json.loads(x)["lr"] for x in (tmp_path / name / "log.jsonl").read_text().splitlines()
               if "lr" in json.loads(x)]
        # 2 warmup steps from 0, then down to 0 at step 20
        assert len(lrs) == 20 and lrs[:3] == pytest.approx([0.0, 5e-4, 1e-3]) and max(lrs) == pytest.approx(1e-3)
        linear_mid = 1e-3 * (20 - 10) / 18
        assert lrs[10] == pytest.approx(linear_mid) if name == "linear" else lrs[10] > linear_mid
    from sdk.errors import DistillError

    student, kd, batch_loss, n = _setup(str(tiny_llama), store)
    with pytest.raises(DistillError, match="schedule 'cosin'"):
        train(student, batch_loss, n, lambda m: 0.0, lr=1e-3, batch_size=4, max_epochs=1, eval_every=100,
              patience=5, seed=0, checkpoint_dir=tmp_path / "bad", lr_schedule="cosin")


def test_without_validation_data_training_runs_its_epochs_and_keeps_the_last_weights(tiny_llama, tmp_path):
    """evaluate=None (no held-out prompts): no early stop even at patience 1, and the weights returned are the
    last step's, as with a metric that improves at every check (a metric tied at every check kept the first)."""
    store, weights = tmp_path / "topk.safetensors", {}
    for name in ("none", "rising"):
        student, kd, batch_loss, n = _setup(str(tiny_llama), store)
        checks = iter(range(1000))
        res = train(student, batch_loss, n, None if name == "none" else (lambda m: float(next(checks))), lr=3e-3,
                    batch_size=4, max_epochs=2, eval_every=2, patience=1, seed=0, checkpoint_dir=tmp_path / name,
                    loss_fn=kd)
        assert res.steps == 8 and not res.stopped_early and res.best_step == 8
        weights[name] = student.state_dict()
        if name == "none":
            assert res.best_metric is None and all(h["val"] is None for h in res.history) and len(res.history) == 4
            assert not (tmp_path / name / "best.pt").exists()
    assert all(torch.equal(weights["none"][k], weights["rising"][k]) for k in weights["none"])


def test_the_progress_bar_shows_the_best_metric_once_validated_never_minus_infinity(tiny_llama, tmp_path, capsys):
    student, kd, batch_loss, n = _setup(str(tiny_llama), tmp_path / "topk.safetensors")
    train(student, batch_loss, n, lambda m: 0.25, lr=3e-3, batch_size=4, max_epochs=1, eval_every=4, patience=1,
          seed=0, checkpoint_dir=tmp_path / "c", loss_fn=kd)  # one check, at the last step
    bar = capsys.readouterr().err
    assert "best=0.2500" in bar.splitlines()[-1] and "inf" not in bar


def test_bf16_precision_autocasts_the_step_on_cpu_and_keeps_fp32_weights(tiny_llama, tmp_path):
    """distill.precision bf16 on CPU (auto's choice where the CPU has AMX-BF16): the forward runs in bf16, the
    weights and their updates stay fp32, and training still lowers the loss as fp32 does."""
    from sdk.distill.recipe import cpu_has_amx_bf16, resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_has_amx_bf16() else "fp32")
    store, losses = tmp_path / "topk.safetensors", {}
    for precision in ("fp32", "bf16"):
        student, kd, batch_loss, n = _setup(str(tiny_llama), store)
        seen = []

        def recording(m, idx, batch_loss=batch_loss, seen=seen):
            seen.append(m.get_output_embeddings()(torch.ones(1, m.config.hidden_size)).dtype)
            return batch_loss(m, idx)

        train(student, recording, n, lambda m: 0.0, lr=3e-3, batch_size=4, max_epochs=3, eval_every=100,
              patience=5, seed=0, checkpoint_dir=tmp_path / precision, precision=precision)
        assert set(seen) == {torch.bfloat16 if precision == "bf16" else torch.float32}
        assert all(p.dtype == torch.float32 for p in student.parameters())
        log = [json.loads(x) for x in (tmp_path / precision / "log.jsonl").read_text().splitlines()]
        losses[precision] = [r["loss"] for r in log if "loss" in r]
    for got in losses.values():
        assert sum(got[-3:]) < sum(got[:3])  # it learns
    assert losses["bf16"] != losses["fp32"] and abs(losses["bf16"][0] - losses["fp32"][0]) < 0.05 * losses["fp32"][0]


def resumable_train(model_dir: str, out: Path, step_sleep: float) -> dict:
    """4 epochs of 4 steps (2 micro-batches each), a checkpoint every 2 steps, dropout: what the SIGKILL test
    runs whole, killed, and resumed; `step_sleep` slows each micro-batch so the test can kill it mid-epoch."""
    from sdk.distill.recipe import train

    student, kd, batch_loss, n = _setup(model_dir, out.parent / "topk.safetensors", dropout=0.2)

    def slow(model, idx):
        time.sleep(step_sleep)
        return batch_loss(model, idx)

    res = train(student, slow, n, lambda m: -float(sum(p.square().sum() for p in m.parameters() if p.requires_grad)),
                lr=3e-3, batch_size=4, max_epochs=4, eval_every=6, patience=100, seed=0, checkpoint_dir=out,
                checkpoint_every=2, grad_accum=2, lr_schedule="cosine", loss_fn=kd)
    last = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if "loss" in json.loads(x)][-1]
    return {"loss": last["loss"], "steps": res.steps,
            "weights": sum(float(p.double().sum()) for p in student.parameters())}


TRAIN_SCRIPT = r"""
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[4])
import torch
torch.set_num_threads(1)
from tests.sdk.distill.test_recipe_mechanics import resumable_train
print(json.dumps(resumable_train(sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]))))
"""


def _run(args, **kw):
    return subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, **kw)


def test_sigkill_mid_epoch_then_resume_ends_exactly_like_an_uninterrupted_run(tiny_llama, tmp_path):
    root = Path(__file__).resolve().parents[3]
    whole = tmp_path / "whole" / "ckpt"
    whole.parent.mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the uninterrupted reference in this process, on one thread as the script's
    try:
        ref = resumable_train(str(tiny_llama), whole, 0.0)
    finally:
        torch.set_num_threads(threads)
    assert ref["steps"] == 16

    killed = tmp_path / "killed" / "ckpt"
    killed.parent.mkdir()
    proc = _run([tiny_llama, killed, 0.25, root])
    deadline = time.time() + 240
    log = killed / "log.jsonl"
    while time.time() < deadline:  # kill after step 9: mid-epoch (4 steps each), past the checkpoint of step 8
        steps = [json.loads(x)["step"] for x in log.read_text().splitlines()] if log.is_file() else []
        if steps and max(steps) >= 9:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert torch.load(killed / "last.pt", weights_only=False)["step"] in (8, 10)
    # what a kill during a checkpoint's write leaves (the killed process's temporary file) goes on resume; a
    # running process's stays
    orphan, live = killed / f".best.pt.{proc.pid}.1.tmp", killed / f".last.pt.{os.getpid()}.1.tmp"
    orphan.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    out, err = _run([tiny_llama, killed, 0.0, root]).communicate(timeout=300)
    assert not orphan.exists() and live.exists()
    assert out, err[-2000:]
    resumed = json.loads(out.strip().splitlines()[-1])
    assert resumed["steps"] == 16
    assert abs(resumed["loss"] - ref["loss"]) < 1e-4 and abs(resumed["weights"] - ref["weights"]) < 1e-3
    steps = [json.loads(x)["step"] for x in log.read_text().splitlines() if "loss" in json.loads(x)]
    assert steps == list(range(1, 17))  # every step logged once


def test_two_runs_are_identical(tiny_llama, tmp_path):
    store = tmp_path / "topk.safetensors"
    weights = []
    for i in range(2):
        student, kd, batch_loss, n = _setup(str(tiny_llama), store, dropout=0.2)
        torch.manual_seed(1)
        train(student, batch_loss, n, lambda m: 0.0, lr=3e-3, batch_size=4, max_epochs=1, eval_every=100,
              patience=5, seed=0, checkpoint_dir=tmp_path / f"r{i}", loss_fn=kd)
        weights.append(student.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def ddp_train(model_dir: str, out: Path, shard: bool, die_at: int = 0, short: bool = False) -> dict | None:
    """The 1-layer student trained 3 epochs at a global batch of 8, in one process or as one rank of several
    (the process group already initialised); rank 0 returns its losses, token counts and weights. short:
    length-grouped batches of 5 in 3 micro-batches, so the ranks' shares (3 and 2) split into different numbers
    of micro-batches and each epoch ends with a batch of 1, where one rank gets no example."""
    import torch.distributed as dist

    from sdk.distill.sharding import full

    student, kd, batch_loss, n = _setup(model_dir, out.parent / "topk.safetensors")
    student.get_input_embeddings().weight.requires_grad_(False)  # as distill.freeze_embeddings (tied: FSDP needs it)
    calls = []

    def dying(m, idx):  # every rank stops in the same step, as a killed job would
        calls.append(1)
        if len(calls) == die_at:
            raise SystemExit(3)
        return batch_loss(m, idx)

    res = train(student, dying, n, lambda m: -float(sum(full(p).square().sum() for p in m.parameters()
                                                       if p.requires_grad)),
                lr=3e-3, batch_size=5 if short else 8, max_epochs=3, eval_every=4, patience=100, seed=0,
                checkpoint_dir=out, loss_fn=kd, shard=shard, lengths=list(range(n)) if short else None,
                grad_accum=3 if short else 1)
    rank = dist.get_rank() if dist.is_initialized() else 0
    weights = sum(float(p.double().sum()) for p in student.parameters())
    if dist.is_initialized():  # every rank holds the same weights
        from sdk.distill.recipe import agree_on_precision

        # auto's choice follows each machine's CPU: bf16 only where every rank can take it
        assert agree_on_precision("bf16") == "bf16" and agree_on_precision("bf16" if rank else "fp32") == "fp32"
        w = torch.tensor([weights], dtype=torch.float64)
        dist.all_reduce(w, op=dist.ReduceOp.MAX)
        assert abs(w.item() - weights) < 1e-9, (w.item(), weights)
    if rank != 0:
        return None
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if "loss" in json.loads(x)]
    return {"losses": [r["loss"] for r in log], "units": [r["units"] for r in log], "weights": weights,
            "best_step": res.best_step}


DDP_SCRIPT = r"""
import json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
import torch
import torch.distributed as dist
torch.set_num_threads(1)
dist.init_process_group("gloo")
from tests.sdk.distill.test_recipe_mechanics import ddp_train
# several trainings in one launch (name:mode,...), one after the other in the same process group: each launch
# costs two interpreters importing torch and transformers
results = {}
for run in sys.argv[4].split(","):
    name, mode = run.split(":")
    (Path(sys.argv[2]) / name).mkdir(exist_ok=True)
    results[name] = ddp_train(sys.argv[1], Path(sys.argv[2]) / name / "ckpt", mode.startswith("fsdp"),
                              int(sys.argv[5]), short=mode.endswith("short"))
rank = dist.get_rank()
dist.destroy_process_group()
if rank == 0:  # the other ranks' ddp_train returns None
    print(json.dumps(results))
"""


def test_two_gloo_processes_train_like_one_with_the_same_global_batch(tiny_llama, tmp_path):
    root = Path(__file__).resolve().parents[3]
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    results = {}

    def launch(runs, die_at=0):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               str(script), str(tiny_llama), str(tmp_path), str(root), runs, str(die_at)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})

    # the one-process reference in this process (one thread, as each rank), without a process group
    (tmp_path / "one").mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results["one"] = ddp_train(str(tiny_llama), tmp_path / "one" / "ckpt", shard=False)
        (tmp_path / "one-short").mkdir()
        results["one-short"] = ddp_train(str(tiny_llama), tmp_path / "one-short" / "ckpt", shard=False, short=True)
    finally:
        torch.set_num_threads(threads)
    # sharded: killed in step 6 (after the step-4 checkpoint of whole tensors), then resumed in the next launch
    assert launch("fsdp:fsdp", die_at=6).returncode != 0
    done = launch("two:plain,fsdp:fsdp,fsdp-short:fsdp-short")
    assert done.returncode == 0, done.stderr[-3000:]
    results.update(json.loads(done.stdout.strip().splitlines()[-1]))
    # a rank without examples in a step (the batch of 1) still takes part in the step's collectives
    for one, two in ((results["one"], results["two"]), (results["one"], results["fsdp"]),
                     (results["one-short"], results["fsdp-short"])):
        assert one["units"] == two["units"] and len(one["losses"]) in (6, 12)  # each step saw the same global batch
        assert max(abs(a - b) for a, b in zip(one["losses"], two["losses"])) < 1e-4
        assert abs(one["weights"] - two["weights"]) < 1e-3 and one["best_step"] == two["best_step"]
