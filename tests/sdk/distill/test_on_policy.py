"""On-policy steps on tiny random models: the coin is reproducible and takes the configured share, samples
stop after end-of-sequence, an on-policy batch is the KD loss on the student's own samples against the
teacher, an off-policy batch the loss given, and training runs through the recipe."""

from __future__ import annotations

import json

import pytest
import torch

from sdk.distill.losses import ResponseKD
from sdk.distill.on_policy import OnPolicyConfig, on_policy_step, sample_responses, with_on_policy
from sdk.distill.recipe import train
from sdk.distill.sequence import make_response_loss
from sdk.models import load_causal_lm
from sdk.students import student_from_teacher


def _setup(tiny_llama):
    teacher, tok = load_causal_lm(str(tiny_llama))
    teacher.eval()
    prompts = [tok(p)["input_ids"] for p in ("def add(a, b):", "yes no yes", "account device", "$3 gift")] * 2
    responses = [tok(" return a + b")["input_ids"]] * len(prompts)
    return teacher, student_from_teacher(teacher, [0]).train(), tok, prompts, responses


def test_the_coin_is_reproducible_and_takes_its_share():
    draws = [on_policy_step(0, [i, i + 1], 0.3) for i in range(2000)]
    assert draws == [on_policy_step(0, [i, i + 1], 0.3) for i in range(2000)]
    assert 0.25 < sum(draws) / len(draws) < 0.35
    assert all(on_policy_step(5, [i], 1.0) for i in range(50))


def test_samples_stop_after_the_end_of_sequence(tiny_llama):
    teacher, student, tok, prompts, _ = _setup(tiny_llama)
    torch.manual_seed(0)
    eos = tok.eos_token_id
    samples = sample_responses(student, prompts[:4], 12, 1.0, tok.pad_token_id, [eos])
    assert len(samples) == 4 and all(1 <= len(s) <= 12 for s in samples)
    assert all(eos not in s[:-1] for s in samples)
    assert student.training  # put back in training mode


def test_an_on_policy_batch_is_kd_on_the_students_samples(tiny_llama):
    teacher, student, tok, prompts, responses = _setup(tiny_llama)
    kd = ResponseKD(temperature=1.0, alpha=0.0, chunk_tokens=8)
    base = make_response_loss(prompts, responses, ResponseKD(alpha=1.0), tok.pad_token_id)
    cfg = OnPolicyConfig(fraction=1.0, max_new_tokens=10, temperature=1.0)
    wrapped = with_on_policy(base, prompts, kd, teacher, cfg, 0, tok.pad_token_id, [tok.eos_token_id])
    idx = [0, 1, 2]
    torch.manual_seed(3)
    got, n = wrapped(student, idx)
    torch.manual_seed(3)
    samples = sample_responses(student, [prompts[i] for i in idx], 10, 1.0, tok.pad_token_id, [tok.eos_token_id])
    ref, n_ref = make_response_loss([prompts[i] for i in idx], samples, kd, tok.pad_token_id, teacher=teacher)(
        student, [0, 1, 2])
    assert n == n_ref == sum(map(len, samples)) and torch.allclose(got, ref, atol=1e-6)
    got.backward()
    assert student.model.layers[0].mlp.down_proj.weight.grad.abs().sum() > 0
    off = with_on_policy(base, prompts, kd, teacher, OnPolicyConfig(fraction=1e-9), 0, tok.pad_token_id,
                         [tok.eos_token_id])
    assert torch.equal(off(student, idx)[0], base(student, idx)[0])


def test_training_with_on_policy_steps_runs_and_logs_them(tiny_llama, tmp_path):
    teacher, student, tok, prompts, responses = _setup(tiny_llama)
    main = ResponseKD(alpha=1.0)
    kd = ResponseKD(alpha=0.0, divergence="reverse_kl")
    base = make_response_loss(prompts, responses, main, tok.pad_token_id)
    batch_loss = with_on_policy(base, prompts, kd, teacher, OnPolicyConfig(fraction=0.5, max_new_tokens=6), 0,
                                tok.pad_token_id, [tok.eos_token_id])
    train(student, batch_loss, len(prompts), lambda m: 0.0, lr=1e-3, batch_size=2, max_epochs=4, eval_every=100,
          patience=5, seed=0, checkpoint_dir=tmp_path, loss_fn=[main, kd])
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines() if "loss" in json.loads(x)]
    # off-policy steps: CE on the given responses (kd 0, alpha 1); on-policy steps: the KD term of the samples
    assert any(r["alpha"] == 0.0 and r["kd"] > 0 for r in log) and any(r["alpha"] == 1.0 for r in log)


def test_a_step_goes_on_policy_whole_with_its_micro_batches(tiny_llama, tmp_path):
    """The coin is drawn once per step from its whole batch (the recipe's start_step), so micro-batches (and
    ranks under torchrun, which then log the same terms) agree: no step mixes the two."""
    teacher, student, tok, prompts, responses = _setup(tiny_llama)
    main, kd = ResponseKD(alpha=1.0), ResponseKD(alpha=0.0)
    base = make_response_loss(prompts, responses, main, tok.pad_token_id)
    batch_loss = with_on_policy(base, prompts, kd, teacher, OnPolicyConfig(fraction=0.5, max_new_tokens=4), 0,
                                tok.pad_token_id, [tok.eos_token_id])
    train(student, batch_loss, len(prompts), lambda m: 0.0, lr=1e-3, batch_size=4, max_epochs=3, eval_every=100,
          patience=5, seed=0, checkpoint_dir=tmp_path, loss_fn=[main, kd], grad_accum=4)
    alphas = [json.loads(x)["alpha"] for x in (tmp_path / "log.jsonl").read_text().splitlines()
              if "alpha" in json.loads(x)]
    assert len(alphas) == 6 and set(alphas) == {0.0, 1.0}, alphas


def test_on_policy_keys_in_yaml():
    from sdk.config import DistillConfig

    d = DistillConfig.model_validate({"loss": {"kind": "response_kd"}, "on_policy": {"fraction": 0.25}})
    assert d.on_policy.fraction == 0.25 and d.on_policy.max_new_tokens == 128
    for bad in ({"fraction": 0}, {"fraction": 1.5}, {"lambda": 0.5}):
        with pytest.raises(ValueError):
            DistillConfig.model_validate({"on_policy": bad})
