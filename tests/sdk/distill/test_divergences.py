"""Each divergence against its direct formula; sparse top-k targets equal the full-vocabulary loss when k is
the vocabulary (values and gradients, both tail modes); the tail bin holds the mass outside the top k;
schedules; the loss's logged terms add up to what it returns."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sdk.distill.divergences import DIVERGENCES, divergence, student_bins, teacher_bins
from sdk.distill.losses import ResponseKD, SoftTargetKD
from sdk.distill.schedules import Schedule
from sdk.errors import DistillError


def _direct(name: str, p: torch.Tensor, q: torch.Tensor, beta=0.3, skew=0.2) -> torch.Tensor:
    """The textbook formulas on probability vectors (float64), one value per row."""
    kl = lambda a, b: (a * (a / b).log()).sum(-1)  # noqa: E731
    if name == "forward_kl":
        return kl(p, q)
    if name == "reverse_kl":
        return kl(q, p)
    if name == "jsd":
        m = beta * p + (1 - beta) * q
        return beta * kl(p, m) + (1 - beta) * kl(q, m)
    if name == "total_variation":
        return 0.5 * (p - q).abs().sum(-1)
    if name == "skew_forward_kl":
        return kl(p, skew * p + (1 - skew) * q)
    return kl(q, skew * q + (1 - skew) * p)


@pytest.mark.parametrize("name", DIVERGENCES)
def test_each_divergence_matches_its_formula_and_vanishes_at_equality(name):
    torch.manual_seed(0)
    t, s = torch.randn(6, 20) * 2, torch.randn(6, 20) * 2
    p, q = t.double().softmax(-1), s.double().softmax(-1)
    got = divergence(name, F.log_softmax(t, -1), F.log_softmax(s, -1), beta=0.3, skew=0.2)
    assert torch.allclose(got.double(), _direct(name, p, q), atol=1e-5)
    assert (got >= -1e-6).all()
    same = divergence(name, F.log_softmax(t, -1), F.log_softmax(t, -1), beta=0.3, skew=0.2)
    assert same.abs().max() < 1e-5
    if name != "total_variation":  # asymmetric ones really are
        assert name == "jsd" or not torch.allclose(got, divergence(name, F.log_softmax(s, -1), F.log_softmax(t, -1)))


def _kd_problem(n=23, hidden=12, vocab=31, seed=0):
    torch.manual_seed(seed)
    head = torch.nn.Linear(hidden, vocab)
    h = torch.randn(n, hidden) * 2
    teacher_logits = torch.randn(n, vocab) * 3
    return h, head, teacher_logits, torch.randint(0, vocab, (n,))


def _value_and_grad(loss, h, head, targets):
    h = h.clone().requires_grad_(True)
    head.zero_grad()
    value = loss(h, head, targets)
    value.backward()
    return value.detach(), h.grad.clone(), head.weight.grad.clone()


@pytest.mark.parametrize("tail", ["renormalize", "bucket"])
@pytest.mark.parametrize("name", DIVERGENCES)
def test_sparse_topk_with_k_equal_to_the_vocabulary_is_the_full_loss(name, tail):
    h, head, teacher_logits, target_ids = _kd_problem()
    logp = F.log_softmax(teacher_logits, -1)
    top = logp.topk(logp.shape[1], -1)  # k = vocabulary, in another order than the vocabulary's
    loss = ResponseKD(temperature=2.0, alpha=0.25, chunk_tokens=7, divergence=name, tail=tail, beta=0.3, skew=0.2)
    sparse = _value_and_grad(loss, h, head, {"target_ids": target_ids, "topk_ids": top.indices,
                                             "topk_logprobs": top.values})
    full = _value_and_grad(loss, h, head, {"target_ids": target_ids, "teacher_logits": teacher_logits})
    for a, b in zip(sparse, full):
        assert torch.allclose(a, b, atol=1e-5), (name, tail)
    # and the full loss is the direct formula at T=2, scaled by T^2, mixed with CE by alpha
    s = head(h).detach()
    ref = 0.25 * F.cross_entropy(s, target_ids) + 0.75 * 4 * _direct(
        name, (teacher_logits.double() / 2).softmax(-1), (s.double() / 2).softmax(-1)).mean()
    assert abs(full[0].item() - ref.item()) < 1e-4


def test_the_tail_bin_holds_the_mass_outside_the_top_k():
    torch.manual_seed(3)
    logits = torch.randn(5, 40) * 2
    logp = F.log_softmax(logits, -1)
    top = logp.topk(6, -1)
    kept = top.values.exp().sum(-1)
    bucket = teacher_bins(top.values, 1.0, "bucket").exp()
    assert torch.allclose(bucket[:, -1], 1 - kept, atol=1e-6) and torch.allclose(bucket.sum(-1), torch.ones(5))
    renorm = teacher_bins(top.values, 1.0, "renormalize").exp()
    assert renorm[:, -1].max() == 0 and torch.allclose(renorm[:, :-1], top.values.exp() / kept[:, None], atol=1e-6)
    student = student_bins(logits, top.indices, 1.0).exp()
    assert torch.allclose(student, bucket, atol=1e-6)  # the same distribution seen through the same bins
    # a student with the teacher's top k and no tail: a perfect match when the tail is renormalised away,
    # penalised when the teacher's tail is a bin of its own
    no_tail = torch.full_like(logits, -30.0).scatter(-1, top.indices, logits.gather(-1, top.indices))
    fb = student_bins(no_tail, top.indices, 1.0)
    assert divergence("forward_kl", teacher_bins(top.values, 1.0, "renormalize"), fb).max() < 1e-5
    assert divergence("forward_kl", teacher_bins(top.values, 1.0, "bucket"), fb).min() > 0.05


def test_reverse_kl_on_a_renormalised_tail_has_finite_gradients():
    h, head, teacher_logits, target_ids = _kd_problem(seed=4)
    top = F.log_softmax(teacher_logits, -1).topk(4, -1)
    h = h.requires_grad_(True)
    loss = ResponseKD(alpha=0.0, divergence="reverse_kl")(h, head, {"target_ids": target_ids, "topk_ids": top.indices,
                                                                     "topk_logprobs": top.values.half()})
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(h.grad).all() and torch.isfinite(head.weight.grad).all()


def test_logged_terms_add_up_to_the_loss():
    h, head, teacher_logits, target_ids = _kd_problem(seed=5)
    top = F.log_softmax(teacher_logits, -1).topk(8, -1)
    loss = ResponseKD(temperature=1.5, alpha=0.3, chunk_tokens=5, divergence="jsd")
    value = loss(h, head, {"target_ids": target_ids, "topk_ids": top.indices, "topk_logprobs": top.values})
    t = loss.last_terms
    assert abs(value.item() - (0.3 * t["ce"] + 0.7 * t["kd"])) < 1e-5
    assert abs(t["ce"] - F.cross_entropy(head(h), target_ids).item()) < 1e-5
    dec = SoftTargetKD(temperature=2.0, alpha=0.4, divergence="total_variation")
    logits = torch.randn(4, 31)
    batch = {"teacher_topk_logits": teacher_logits[:4, :8], "teacher_topk_ids": top.indices[:4],
             "target": target_ids[:4]}
    v = dec(logits, batch)
    assert abs(v.item() - (0.4 * dec.last_terms["ce"] + 0.6 * dec.last_terms["kd"])) < 1e-5


def test_schedules_and_a_scheduled_temperature_in_the_loss():
    lin = Schedule(kind="linear", start=5.0, end=1.0)
    cos = Schedule(kind="cosine", start=5.0, end=1.0)
    step = Schedule(kind="step", values=[5.0, 2.0, 1.0], milestones=[0.3, 0.6])
    assert [lin.at(x) for x in (0, 0.5, 1)] == [5.0, 3.0, 1.0]
    assert cos.at(0) == 5.0 and abs(cos.at(0.5) - 3.0) < 1e-9 and abs(cos.at(1) - 1.0) < 1e-9 and cos.at(0.25) > 3.0
    assert [step.at(x) for x in (0, 0.29, 0.3, 0.7, 1)] == [5.0, 5.0, 2.0, 1.0, 1.0]
    assert Schedule(kind="constant", start=2.0).at(0.9) == 2.0
    for bad in ({"kind": "linear", "start": 1.0}, {"kind": "step", "values": [1.0], "milestones": [0.5]},
                {"kind": "step", "values": [1.0, 2.0, 3.0], "milestones": [0.6, 0.3]}):
        with pytest.raises(ValueError):
            Schedule(**bad)
    loss = SoftTargetKD(temperature={"kind": "linear", "start": 5.0, "end": 1.0}, alpha=0.0)
    assert loss.temperature == 5.0
    loss.set_progress(1.0)
    assert loss.temperature == 1.0
    with pytest.raises(DistillError, match="alpha"):
        SoftTargetKD(alpha={"kind": "linear", "start": 0.0, "end": 1.5})
    with pytest.raises(DistillError, match="divergence"):
        ResponseKD(divergence="kl")


def test_divergence_and_schedules_from_yaml_config():
    from sdk.config import DistillConfig

    d = DistillConfig.model_validate({"loss": {"kind": "response_kd", "divergence": "jsd", "beta": 0.2,
                                               "temperature": {"kind": "linear", "start": 5, "end": 1}}})
    assert d.loss["divergence"] == "jsd" and d.loss["temperature"]["kind"] == "linear"
    loss = ResponseKD(**{k: v for k, v in d.loss.items() if k != "kind"})
    assert loss.temperature == 5.0 and loss.divergence == "jsd" and loss.beta == 0.2
    plain = DistillConfig.model_validate({"loss": {"kind": "response_kd"}})
    assert "divergence" not in plain.loss and "tail" not in plain.loss  # defaults of later keys: hashes unchanged
    for bad, field in ((({"divergence": "kl"}), "divergence"), ({"beta": 1.0}, "beta"),
                       ({"temperature": {"kind": "linear", "start": 0, "end": 1}}, "temperature"),
                       ({"alpha": 1.2}, "alpha")):
        with pytest.raises(ValueError, match=field):
            DistillConfig.model_validate({"loss": {"kind": "soft_target_kd", **bad}})
    assert math.isclose(ResponseKD(temperature=2.0).temperature, 2.0)


def test_an_online_teacher_chunked_through_its_head_equals_its_full_logits():
    h, head, _, target_ids = _kd_problem(seed=6)
    torch.manual_seed(7)
    teacher_head = torch.nn.Linear(20, head.out_features)  # another width than the student's
    teacher_hidden = torch.randn(h.shape[0], 20) * 2
    loss = ResponseKD(temperature=1.5, alpha=0.2, chunk_tokens=6, divergence="jsd")
    online = _value_and_grad(lambda a, b, t: loss(a, b, t, teacher_head=teacher_head), h, head,
                             {"target_ids": target_ids, "teacher_hidden": teacher_hidden})
    full = _value_and_grad(loss, h, head, {"target_ids": target_ids,
                                           "teacher_logits": teacher_head(teacher_hidden).detach()})
    for a, b in zip(online, full):
        assert torch.allclose(a, b, atol=1e-5)
    assert teacher_head.weight.grad is None  # the teacher is not trained
    with pytest.raises(DistillError, match="teacher_head"):
        loss(h, head, {"target_ids": target_ids, "teacher_hidden": teacher_hidden})
