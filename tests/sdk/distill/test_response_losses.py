import pytest
import torch
import torch.nn.functional as F

from sdk.distill.losses import ResponseKD
from sdk.errors import DistillError


def _problem(n=53, hidden=16, vocab=97, k=5, seed=0):
    torch.manual_seed(seed)
    head = torch.nn.Linear(hidden, vocab, bias=True)
    h = torch.randn(n, hidden) * 2
    teacher_logp = torch.log_softmax(torch.randn(n, vocab) * 3, -1)
    top = teacher_logp.topk(k, -1)
    targets = {"target_ids": torch.randint(0, vocab, (n,)), "topk_ids": top.indices,
               "topk_logprobs": top.values.half()}
    return h, head, targets


def _reference(h, head, targets, temperature, alpha):
    """The loss over all N positions at once, with torch's own kl_div."""
    logits = head(h)
    ce = F.cross_entropy(logits, targets["target_ids"])
    teacher = F.log_softmax(targets["topk_logprobs"].float() / temperature, -1)
    student = F.log_softmax(logits / temperature, -1).gather(-1, targets["topk_ids"])
    kl = F.kl_div(student, teacher, log_target=True, reduction="sum") / h.shape[0]
    return alpha * ce + (1 - alpha) * temperature**2 * kl


def _value_and_grads(fn, h, head, targets):
    h = h.clone().requires_grad_(True)
    head.zero_grad()
    loss = fn(h, head, targets)
    loss.backward()
    return loss.detach(), h.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone()


@pytest.mark.parametrize("recompute", ["always", "never"])
@pytest.mark.parametrize("chunk", [1, 7, 16, 53, 1000])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_chunked_value_and_gradients_equal_unchunked(chunk, alpha, recompute):
    h, head, targets = _problem()
    temperature = 2.0
    got = _value_and_grads(ResponseKD(temperature, alpha, chunk_tokens=chunk, recompute=recompute), h, head, targets)
    ref = _value_and_grads(lambda a, b, c: _reference(a, b, c, temperature, alpha), h, head, targets)
    for g, r in zip(got, ref):
        assert torch.allclose(g, r, atol=1e-5, rtol=1e-5), (g - r).abs().max()
    assert ref[1].abs().sum() > 0 and ref[2].abs().sum() > 0


def test_alpha_one_is_cross_entropy_and_needs_no_teacher():
    h, head, targets = _problem()
    loss = ResponseKD(alpha=1.0, chunk_tokens=10)(h, head, {"target_ids": targets["target_ids"]})
    assert torch.allclose(loss, F.cross_entropy(head(h), targets["target_ids"]), atol=1e-6)


def test_kl_vanishes_when_student_is_the_teacher_over_the_full_vocab():
    h, head, targets = _problem(vocab=40)
    with torch.no_grad():
        teacher_logp = torch.log_softmax(head(h), -1)  # stored at T=1, as teacher_topk does
    top = teacher_logp.topk(40, -1)
    full = {"target_ids": targets["target_ids"], "topk_ids": top.indices, "topk_logprobs": top.values}
    assert ResponseKD(temperature=3.0, alpha=0.0, chunk_tokens=8)(h, head, full).abs().item() < 1e-5
    mixed = ResponseKD(temperature=3.0, alpha=0.4, chunk_tokens=8)(h, head, full)
    assert torch.allclose(mixed, 0.4 * F.cross_entropy(head(h), targets["target_ids"]), atol=1e-5)


def test_missing_teacher_topk_is_an_error_when_alpha_below_one():
    h, head, targets = _problem()
    with pytest.raises(DistillError, match="topk_ids, topk_logprobs"):
        ResponseKD(alpha=0.5)(h, head, {"target_ids": targets["target_ids"]})
    with pytest.raises(DistillError, match="alpha"):
        ResponseKD(alpha=1.5)


def test_no_response_tokens_gives_a_zero_loss_that_backpropagates():
    _, head, _ = _problem()
    h = torch.zeros((0, 16), requires_grad=True)
    loss = ResponseKD(alpha=1.0)(h, head, {"target_ids": torch.zeros(0, dtype=torch.long)})
    loss.backward()
    assert loss.item() == 0.0


def _peak_cpu_bytes(fn) -> int:
    """Peak of live CPU allocations (bytes) while fn runs: the running sum of the profiler's allocation (+)
    and free (-) records. torch has no CPU max_memory_allocated; these raw records are the closest."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in records:
        live += nbytes
        peak = max(peak, live)
    return peak


def _saved_bytes(fn) -> int:
    """Bytes autograd saves for backward while fn runs (tensors packed by saved-tensor hooks)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_chunking_bounds_memory_in_forward_and_backward():
    n, hidden, vocab, k = 1000, 32, 5000, 16
    h, head, targets = _problem(n=n, hidden=hidden, vocab=vocab, k=k)
    h.requires_grad_(True)
    logits_bytes = n * vocab * 4

    def step(loss_fn):
        return lambda: loss_fn(h, head, targets).backward()

    unchunked = step(lambda a, b, c: _reference(a, b, c, 2.0, 0.5))
    chunked = step(ResponseKD(2.0, 0.5, chunk_tokens=50, recompute="always"))  # "auto" would not at 20 MB
    # kept between forward and backward: full-vocab logits and softmaxes, vs only the loss inputs
    # (hidden float32, top-k ids int64 and logprobs float16, target ids int64): nothing vocab-sized
    assert _saved_bytes(unchunked) >= 3 * logits_bytes
    assert _saved_bytes(chunked) <= 1.1 * n * (hidden * 4 + k * (8 + 2) + 8)
    # peak of everything alive, the chunks' recomputation in backward included
    peak_unchunked, peak_chunked = _peak_cpu_bytes(unchunked), _peak_cpu_bytes(chunked)
    assert peak_unchunked >= 3 * logits_bytes
    assert peak_chunked < 0.1 * peak_unchunked, (peak_chunked, peak_unchunked)
    # "auto" recomputes once the logits would pass its budget, and keeps them below it (faster)
    auto = ResponseKD(2.0, 0.5, chunk_tokens=50)
    assert _saved_bytes(step(auto)) >= logits_bytes
    auto.RECOMPUTE_ABOVE = logits_bytes // 4
    assert _saved_bytes(step(auto)) <= 1.1 * n * (hidden * 4 + k * (8 + 2) + 8)
