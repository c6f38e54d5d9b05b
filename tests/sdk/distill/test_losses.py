import torch

from sdk.distill.losses import SoftTargetKD, TaskCrossEntropy


def _batch(teacher_logits, k, target):
    top = teacher_logits.topk(k, dim=-1)
    return {"teacher_topk_logits": top.values, "teacher_topk_ids": top.indices, "target": target}


def test_kd_term_vanishes_when_student_equals_teacher_over_full_vocab():
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    target = torch.randint(0, 50, (4,))
    kd = SoftTargetKD(temperature=2.0, alpha=0.0)(logits, _batch(logits, 50, target))
    assert kd.abs().item() < 1e-5
    mixed = SoftTargetKD(temperature=2.0, alpha=0.3)(logits, _batch(logits, 50, target))
    assert torch.isclose(mixed, 0.3 * TaskCrossEntropy()(logits, {"target": target}), atol=1e-5)


def test_kd_matches_t_squared_kl_definition():
    torch.manual_seed(1)
    s, t = torch.randn(3, 20), torch.randn(3, 20)
    temp = 3.0
    loss = SoftTargetKD(temperature=temp, alpha=0.0)(s, _batch(t, 20, torch.zeros(3, dtype=torch.long)))
    ref = torch.nn.functional.kl_div(torch.log_softmax(s / temp, -1), torch.log_softmax(t / temp, -1),
                                     log_target=True, reduction="batchmean") * temp**2
    assert torch.isclose(loss, ref, atol=1e-5)


def test_kd_gradient_moves_student_toward_teacher():
    torch.manual_seed(2)
    t = torch.randn(2, 30) * 3
    s = torch.zeros(2, 30, requires_grad=True)
    loss_fn = SoftTargetKD(temperature=1.0, alpha=0.0)
    batch = _batch(t, 8, torch.zeros(2, dtype=torch.long))
    before = loss_fn(s, batch).item()
    opt = torch.optim.SGD([s], lr=1.0)
    for _ in range(50):
        opt.zero_grad()
        loss_fn(s, batch).backward()
        opt.step()
    assert loss_fn(s, batch).item() < 0.2 * before
    assert (s.argmax(-1) == t.argmax(-1)).all()
