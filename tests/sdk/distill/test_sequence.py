import random

import pytest
import torch

from sdk.distill.losses import ResponseKD
from sdk.distill.sequence import make_response_loss, response_ce, response_hidden, right_pad, teacher_topk
from sdk.distill.topk_store import TopKStore
from sdk.errors import DistillError
from sdk.models import load_causal_lm
from sdk.students import student_from_teacher

PAD = 0


def _mean_loss(*args, **kw):
    """make_response_loss as a per-token mean (it returns the summed loss and the token count)."""
    batch_loss = make_response_loss(*args, **kw)

    def mean(model, idx):
        summed, n = batch_loss(model, idx)
        return summed / n

    return mean


@pytest.fixture(scope="module")
def teacher(tiny_llama):
    model, _ = load_causal_lm(tiny_llama)
    return model


@pytest.fixture(scope="module")
def data(teacher):
    rng = random.Random(0)
    vocab = teacher.config.vocab_size
    prompts = [[rng.randrange(1, vocab) for _ in range(rng.randint(2, 9))] for _ in range(6)]
    responses = [[rng.randrange(1, vocab) for _ in range(rng.randint(3, 10))] for _ in range(6)]
    return prompts, responses


def _hf_labels(batch, prompts, responses):
    """HF-style labels for the same batch: the response tokens themselves, -100 elsewhere (HF shifts them)."""
    labels = torch.full_like(batch["input_ids"], -100)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        labels[i, len(p): len(p) + len(r)] = torch.tensor(r)
    return labels


def test_right_pad_marks_only_positions_that_predict_response_tokens():
    batch = right_pad([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 9, 10], [8, 11, 12, 13, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    # row 0: position 2 (token 7) predicts 9, position 3 predicts 10; row 1: positions 0..2 predict 11..13
    assert batch["target_positions"].int().tolist() == [[0, 0, 1, 1, 0], [1, 1, 1, 0, 0]]
    assert batch["target_ids"].tolist() == [9, 10, 11, 12, 13]
    next_tokens = batch["input_ids"][:, 1:][batch["target_positions"][:, :-1]]
    assert torch.equal(next_tokens, batch["target_ids"])
    with pytest.raises(DistillError, match="prompt 1 is empty"):
        right_pad([[1], []], [[2], [3]], 0)
    with pytest.raises(DistillError, match="2 prompts but 1 responses"):
        right_pad([[1], [2]], [[3]], 0)


def test_response_hidden_gives_the_models_logits_at_target_positions(teacher, data):
    prompts, responses = data
    batch = right_pad(prompts, responses, PAD)
    with torch.no_grad():
        logits = teacher.get_output_embeddings()(response_hidden(teacher, batch))
        full = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert logits.shape == (sum(map(len, responses)), teacher.config.vocab_size)
    assert torch.allclose(logits, full[batch["target_positions"]], atol=1e-4)


def test_response_hidden_through_a_peft_wrapper(teacher, data):
    from peft import LoraConfig, get_peft_model

    prompts, responses = data
    student = student_from_teacher(teacher, [0, 3])
    batch = right_pad(prompts[:2], responses[:2], PAD)
    with torch.no_grad():
        plain = response_hidden(student, batch)
        wrapped = get_peft_model(student, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
        assert torch.allclose(response_hidden(wrapped, batch), plain, atol=1e-5)  # LoRA B starts at zero


def test_loss_reads_only_response_positions(teacher, data):
    prompts, responses = data
    student = student_from_teacher(teacher, [0, 3])
    loss_fn = _mean_loss(prompts, responses, ResponseKD(alpha=1.0, chunk_tokens=5), PAD)
    batch = right_pad(prompts, responses, PAD)
    # equals HF's own shifted CE with prompt and padding labels ignored
    with torch.no_grad():
        hf = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     labels=_hf_labels(batch, prompts, responses)).loss
        assert torch.allclose(loss_fn(student, list(range(6))), hf, atol=1e-5)
    # the gradient reaching the final hidden states is zero at prompt and padding positions
    captured = {}

    def keep(_module, _args, output):
        output.last_hidden_state.retain_grad()
        captured["h"] = output.last_hidden_state

    handle = student.get_decoder().register_forward_hook(keep)
    try:
        loss_fn(student, list(range(6))).backward()
    finally:
        handle.remove()
    grad_norm = captured["h"].grad.norm(dim=-1)
    assert (grad_norm[~batch["target_positions"]] == 0).all()
    assert (grad_norm[batch["target_positions"]] > 0).all()


def test_padding_changes_nothing(teacher, data, tmp_path):
    prompts, responses = data
    store = TopKStore.write(tmp_path / "t.safetensors", teacher_topk(teacher, prompts, responses, 8, PAD))
    kd = ResponseKD(temperature=2.0, alpha=0.5, chunk_tokens=4)
    with torch.no_grad():
        pads = (PAD, 17, teacher.config.vocab_size - 1)
        by_pad = [_mean_loss(prompts, responses, kd, pad, store)(teacher, [2, 0, 1]) for pad in pads]
        assert torch.allclose(by_pad[0], by_pad[1], atol=1e-6) and torch.allclose(by_pad[0], by_pad[2], atol=1e-6)
        # a token-weighted mean of single-row (unpadded) losses equals the padded batch's loss
        loss_fn = _mean_loss(prompts, responses, kd, PAD, store)
        sizes = [len(responses[i]) for i in (2, 0, 1)]
        singles = sum(loss_fn(teacher, [i]) * n for i, n in zip((2, 0, 1), sizes)) / sum(sizes)
        assert torch.allclose(by_pad[0], singles, atol=1e-5)


def test_teacher_topk_matches_a_full_forward(teacher, data):
    prompts, responses = data
    rows = teacher_topk(teacher, prompts, responses, k=5, pad_id=PAD, batch_size=4, chunk_tokens=3)
    assert len(rows) == len(responses)
    for i, (logprobs, ids) in enumerate(rows):
        batch = right_pad([prompts[i]], [responses[i]], PAD)
        with torch.no_grad():
            logits = teacher(input_ids=batch["input_ids"]).logits[batch["target_positions"]]
        ref = torch.log_softmax(logits.float(), -1).topk(5, -1)
        assert logprobs.dtype == torch.float16 and logprobs.shape == (len(responses[i]), 5)
        assert torch.equal(ids.long(), ref.indices)
        assert torch.allclose(logprobs.float(), ref.values, atol=2e-2, rtol=1e-3)
    with pytest.raises(DistillError, match="top-k"):
        teacher_topk(teacher, prompts, responses, k=0, pad_id=PAD)
    empty = teacher_topk(teacher, prompts[:2], [[], []], k=5, pad_id=PAD)
    assert [tuple(lp.shape) for lp, _ in empty] == [(0, 5), (0, 5)]


def test_response_ce_is_the_token_mean_cross_entropy(teacher, data):
    prompts, responses = data
    batch = right_pad(prompts, responses, PAD)
    with torch.no_grad():
        hf = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     labels=_hf_labels(batch, prompts, responses)).loss.item()
    assert response_ce(teacher, prompts, responses, PAD, batch_size=4, chunk_tokens=5) == pytest.approx(hf, abs=1e-5)


def test_distilling_from_stored_topk_reduces_the_loss(teacher, data, tmp_path):
    prompts, responses = data
    path = tmp_path / "topk.safetensors"
    TopKStore.write(path, teacher_topk(teacher, prompts, responses, k=16, pad_id=PAD, batch_size=4),
                    vocab_size=teacher.config.vocab_size)
    store = TopKStore.read(path)
    student = student_from_teacher(teacher, [0, 3]).train()
    loss_fn = _mean_loss(prompts, responses, ResponseKD(temperature=2.0, alpha=0.5, chunk_tokens=16),
                                 PAD, store)
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3)
    ce_before = response_ce(student, prompts, responses, PAD)
    losses = []
    for step in range(12):
        idx = [0, 1, 2] if step % 2 == 0 else [3, 4, 5]
        loss = loss_fn(student, idx)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    with torch.no_grad():
        final = loss_fn(student, list(range(6))).item()
    assert final < 0.7 * (losses[0] + losses[1]) / 2, losses
    assert response_ce(student, prompts, responses, PAD) < ce_before


def test_store_that_does_not_fit_the_responses_is_named(teacher, data, tmp_path):
    prompts, responses = data
    store = TopKStore.write(tmp_path / "t.safetensors", teacher_topk(teacher, prompts, responses, 4, PAD))
    with pytest.raises(DistillError, match="6 rows but there are 5"):
        _mean_loss(prompts[:5], responses[:5], ResponseKD(), PAD, store)
    shifted = [responses[0] + [1]] + responses[1:]
    with pytest.raises(DistillError, match="row 0 covers"):
        _mean_loss(prompts, shifted, ResponseKD(), PAD, store)


# --- training on cached frozen-layer outputs (top_view) instead of running the frozen bottom every step

START = 2


def _frozen_student(teacher):
    """4 layers cut from the teacher, embeddings and the bottom START layers frozen (as the distill stage does)."""
    from sdk.students import freeze_layers

    student = student_from_teacher(teacher, [0, 1, 2, 3]).train()
    student.get_input_embeddings().weight.requires_grad_(False)
    freeze_layers(student, START)
    return student


def _cache(student, prompts, responses, batch_size=4):
    from sdk.distill.frozen_prefix import cache_sequences

    return cache_sequences(student, [[*p, *r] for p, r in zip(prompts, responses)], START, PAD,
                           batch_size=batch_size, desc=None)


def _loss_and_grads(student, model, batch_loss, idx):
    student.zero_grad(set_to_none=True)
    loss = batch_loss(model, idx)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
    student.zero_grad(set_to_none=True)
    return loss.detach(), grads


@pytest.mark.parametrize("weights", ["tiny_llama", "tiny_llama_untied"])  # untied: the lm_head trains too
@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_cached_loss_and_gradients_equal_uncached(weights, alpha, data, tmp_path, request):
    from sdk.distill.frozen_prefix import top_view

    teacher, _ = load_causal_lm(request.getfixturevalue(weights))
    prompts, responses = data
    store = TopKStore.write(tmp_path / "t.safetensors", teacher_topk(teacher, prompts, responses, 8, PAD))
    student = _frozen_student(teacher)
    kd = ResponseKD(temperature=2.0, alpha=alpha, chunk_tokens=7)
    # the cache is built in batches other than the training batch's, and with another padding id
    cache = _cache(student, prompts, responses, batch_size=4)
    student.train()
    uncached = _mean_loss(prompts, responses, kd, PAD, store)
    cached = _mean_loss(prompts, responses, kd, 17, store, cache=cache)
    for idx in ([2, 0, 1, 5], [4], list(range(6))):
        ref_loss, ref_grads = _loss_and_grads(student, student, uncached, idx)
        loss, grads = _loss_and_grads(student, top_view(student, START), cached, idx)
        assert torch.allclose(loss, ref_loss, atol=1e-5, rtol=1e-5), (loss, ref_loss)
        trainable = {n for n, p in student.named_parameters() if p.requires_grad}
        assert set(grads) == set(ref_grads) == trainable
        assert not any(".layers.0." in n or ".layers.1." in n or "embed" in n for n in trainable)
        for n, g in grads.items():
            assert torch.allclose(g, ref_grads[n], atol=1e-5, rtol=1e-5), (n, (g - ref_grads[n]).abs().max())
        assert all(g.abs().sum() > 0 for g in ref_grads.values())


def test_cached_response_ce_equals_uncached(teacher, data):
    from sdk.distill.frozen_prefix import top_view

    prompts, responses = data
    student = _frozen_student(teacher)
    cache = _cache(student, prompts, responses, batch_size=5)
    ref = response_ce(student, prompts, responses, PAD, batch_size=4, chunk_tokens=5)
    got = response_ce(top_view(student, START), prompts, responses, PAD, batch_size=4, chunk_tokens=5, cache=cache)
    assert got == pytest.approx(ref, abs=1e-5)
    assert student.training  # response_ce restores the mode (the view shares the student's modules)


def test_a_cache_that_does_not_fit_is_named(teacher, data):
    prompts, responses = data
    student = _frozen_student(teacher)
    cache = _cache(student, prompts, responses)
    kd = ResponseKD(alpha=1.0)
    with pytest.raises(DistillError, match="top_view"):  # the full model given cached inputs of layer 2
        _mean_loss(prompts, responses, kd, PAD, cache=cache)(student, [0, 1])
    with pytest.raises(DistillError, match="cache has 6 sequences but there are 5"):
        _mean_loss(prompts[:5], responses[:5], kd, PAD, cache=cache)
    shifted = [responses[0] + [1]] + responses[1:]
    with pytest.raises(DistillError, match="cache row 0 covers"):
        response_ce(student, prompts, shifted, PAD, cache=cache)


def test_training_on_the_cache_follows_the_uncached_run_and_resumes(teacher, data, tmp_path):
    """recipe.train on top_view + cache takes the same steps as on the full model; a run interrupted after
    a checkpoint resumes on a new student, a recomputed cache and a new view to the same weights."""
    from sdk.distill.frozen_prefix import top_view
    from sdk.distill.recipe import train

    prompts, responses = data
    kd = ResponseKD(alpha=1.0, chunk_tokens=8)
    kw = dict(lr=3e-3, batch_size=2, max_epochs=2, eval_every=2, patience=50, seed=0)

    def run(cached: bool, ckpt, evaluate=None):
        student = _frozen_student(teacher)
        cache = _cache(student, prompts, responses) if cached else None
        model = top_view(student, START) if cached else student

        def val(m):
            return -response_ce(m, prompts, responses, PAD, batch_size=4, cache=cache)

        res = train(model, _mean_loss(prompts, responses, kd, PAD, cache=cache), len(prompts),
                    evaluate or val, checkpoint_dir=ckpt, **kw)
        return res, {n: p.detach().clone() for n, p in student.named_parameters() if p.requires_grad}

    ref, ref_w = run(False, tmp_path / "uncached")
    got, got_w = run(True, tmp_path / "cached")
    assert got.steps == ref.steps == 6 and got.best_step == ref.best_step
    assert [h["val"] for h in got.history] == pytest.approx([h["val"] for h in ref.history], abs=1e-5)
    # AdamW normalises each weight's step, so a rounding-level gradient difference on a near-zero component
    # can move that weight by a few 1e-5 over 6 steps (lr 3e-3); the losses themselves agree within 1e-5 above
    for n, w in ref_w.items():
        assert torch.allclose(got_w[n], w, atol=2e-4), (n, (got_w[n] - w).abs().max())

    class Interrupted(Exception):
        pass

    student0 = _frozen_student(teacher)
    cache0 = _cache(student0, prompts, responses)
    calls = []

    def interrupted(m):
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted  # after the step-2 checkpoint, before the step-4 one
        return -response_ce(m, prompts, responses, PAD, batch_size=4, cache=cache0)

    with pytest.raises(Interrupted):
        train(top_view(student0, START), _mean_loss(prompts, responses, kd, PAD, cache=cache0),
              len(prompts), interrupted, checkpoint_dir=tmp_path / "resumed", **kw)
    resumed, resumed_w = run(True, tmp_path / "resumed")
    assert resumed.steps == 6 and [h["step"] for h in resumed.history] == [2, 4, 6]
    for n, w in got_w.items():
        assert torch.allclose(resumed_w[n], w, atol=1e-6), n
