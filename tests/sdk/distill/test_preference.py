"""DPO: the loss against its formula, sequence log-probabilities against transformers' own, and a few steps
that raise the chosen response over the rejected one relative to the reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sdk.distill.preference import DPOLoss, make_dpo_loss, reference_logprobs, sequence_logprobs
from sdk.models import load_causal_lm
from sdk.students import student_from_teacher


def test_dpo_loss_matches_its_formula():
    torch.manual_seed(0)
    c, r, rc, rr = (torch.randn(6) * 5 for _ in range(4))
    loss = DPOLoss(beta=0.3)
    got = loss(c, r, rc, rr)
    ref = torch.stack([-torch.log(torch.sigmoid(0.3 * ((c[i] - rc[i]) - (r[i] - rr[i])))) for i in range(6)]).mean()
    assert torch.allclose(got, ref, atol=1e-6)
    assert loss.last_terms["reward_accuracy"] == ((c - rc) > (r - rr)).float().mean().item()
    # at the reference itself the loss is log 2 whatever the sequences
    assert torch.allclose(loss(c, r, c, r), torch.tensor(0.6931471805599453), atol=1e-6)


def test_sequence_logprobs_are_transformers_token_logprobs_summed(tiny_llama):
    model, tok = load_causal_lm(str(tiny_llama))
    prompts = [tok("def add(a, b):")["input_ids"], tok("yes")["input_ids"]]
    responses = [tok(" return a + b")["input_ids"], tok(" no yes no")["input_ids"]]
    got = sequence_logprobs(model, prompts, responses, tok.pad_token_id, chunk_tokens=3)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        with torch.no_grad():
            logits = model(torch.tensor([p + r])).logits[0, len(p) - 1: -1]
        ref = F.log_softmax(logits.float(), -1).gather(-1, torch.tensor(r)[:, None]).sum()
        assert abs(got[i].item() - ref.item()) < 1e-4


def test_dpo_steps_prefer_the_chosen_response(tiny_llama):
    teacher, tok = load_causal_lm(str(tiny_llama))
    student = student_from_teacher(teacher, [0, 1]).train()
    prompts = [tok(p)["input_ids"] for p in ("def add(a, b):", "def sub(a, b):", "def mul(a, b):")]
    chosen = [tok(x)["input_ids"] for x in (" return a + b", " return a - b", " return a * b")]
    rejected = [tok(x)["input_ids"] for x in (" pass", " return None", " print(a)")]
    ref_c = reference_logprobs(student, prompts, chosen, tok.pad_token_id)
    ref_r = reference_logprobs(student, prompts, rejected, tok.pad_token_id)
    loss = DPOLoss(beta=0.5)
    batch_loss = make_dpo_loss(prompts, chosen, rejected, ref_c, ref_r, loss, tok.pad_token_id)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
    first = None
    for _ in range(8):
        summed, n = batch_loss(student, [0, 1, 2])
        first = first if first is not None else summed.item() / n
        (summed / n).backward()
        opt.step()
        opt.zero_grad()
    assert abs(first - 0.6931) < 1e-3  # the first step is at the reference
    margin = (reference_logprobs(student, prompts, chosen, tok.pad_token_id) - ref_c) - (
        reference_logprobs(student, prompts, rejected, tok.pad_token_id) - ref_r)
    assert (margin > 0).all() and summed.item() / n < first
    with pytest.raises(Exception):
        make_dpo_loss(prompts, chosen, rejected[:2], ref_c, ref_r, loss, tok.pad_token_id)


def test_under_bf16_autocast_the_first_dpo_step_is_at_the_reference_whatever_the_batching(tiny_llama):
    """References taken one pair at a time, the step on all four padded together, all under bf16 autocast:
    the output head runs in fp32 (with a bf16 head the first loss was 0.0013 off ln 2 here, 0.04 on the code
    tiny run), so only the decoder's bf16 rounding of differently padded batches remains."""
    from sdk.distill.recipe import autocast

    teacher, tok = load_causal_lm(str(tiny_llama))
    student = student_from_teacher(teacher, [0, 1]).train()
    prompts = [tok(x)["input_ids"] for x in ("def add(a, b):", "def sub(a, b):", "def mul(a, b):", "x")]
    chosen = [tok(x)["input_ids"] for x in (" return a + b", " return a - b", " return a * b + a * a - b * 3", " y")]
    rejected = [tok(x)["input_ids"] for x in (" pass", " return None and a or b or a", " print(a)", " z z z z z z")]
    with autocast(torch.device("cpu"), "bf16"):
        ref_c = reference_logprobs(student, prompts, chosen, tok.pad_token_id, batch_size=1)
        ref_r = reference_logprobs(student, prompts, rejected, tok.pad_token_id, batch_size=1)
        summed, n = make_dpo_loss(prompts, chosen, rejected, ref_c, ref_r, DPOLoss(beta=0.5),
                                  tok.pad_token_id)(student, [0, 1, 2, 3])
    assert abs(summed.item() / n - 0.693147) < 6e-4
