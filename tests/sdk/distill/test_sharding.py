import pytest
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from sdk.distill.sharding import clip_grad_norm, full, full_optimizer_state, full_state, \
    load_full_optimizer_state, load_full_state, shard_copy
from sdk.errors import DistillError
from sdk.models import load_causal_lm
from sdk.students import student_from_teacher


@pytest.fixture
def one_rank():
    """A process group of one (gloo): fully_shard needs one; the 2-process case is in test_recipe_mechanics."""
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    yield
    dist.destroy_process_group()


def _student(tiny_llama):
    teacher, _ = load_causal_lm(str(tiny_llama))
    torch.manual_seed(0)
    student = student_from_teacher(teacher, [0, 1])
    student.get_input_embeddings().weight.requires_grad_(False)
    return student


def test_shard_copy_shards_the_trained_decoder_and_leaves_the_original_whole(tiny_llama, one_rank):
    student = _student(tiny_llama)
    sharded, _ = shard_copy(student)
    kinds = {n: isinstance(p, DTensor) for n, p in sharded.named_parameters()}
    assert kinds["model.layers.0.self_attn.q_proj.weight"] and kinds["model.norm.weight"]
    assert not kinds["model.embed_tokens.weight"]  # frozen: kept whole on every rank
    assert not any(isinstance(p, DTensor) for p in student.parameters())
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(sharded(ids).logits, student(ids).logits, atol=1e-6)


def test_full_states_round_trip_through_the_shards(tiny_llama, one_rank):
    student = _student(tiny_llama)
    sharded, _ = shard_copy(student)
    opt = torch.optim.AdamW([p for p in sharded.parameters() if p.requires_grad], lr=1e-2)
    sharded(torch.tensor([[5, 6, 7, 8]])).logits.square().sum().backward()
    clip_grad_norm([p for p in sharded.parameters() if p.requires_grad], 1e-3)
    total = torch.linalg.vector_norm(torch.stack([full(p.grad).norm() for p in sharded.parameters()
                                                  if p.grad is not None]))
    assert abs(float(total) - 1e-3) < 1e-6  # clipped to the norm asked
    opt.step()
    weights, moments = full_state(sharded), full_optimizer_state(opt)
    assert not any(isinstance(t, DTensor) for t in weights.values())
    fresh, _ = shard_copy(_student(tiny_llama))
    opt2 = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad], lr=1e-2)
    load_full_state(fresh, weights)
    load_full_optimizer_state(opt2, moments)
    assert all(torch.equal(weights[n], full(p.detach())) for n, p in fresh.named_parameters() if p.requires_grad)
    assert all(torch.equal(full(a["exp_avg"]), full(b["exp_avg"]))
               for a, b in zip(opt.state_dict()["state"].values(), opt2.state_dict()["state"].values()))


def test_a_trained_tied_embedding_is_refused(tiny_llama, one_rank):
    student = _student(tiny_llama)
    student.get_input_embeddings().weight.requires_grad_(True)
    with pytest.raises(DistillError, match="tied embedding.*freeze_embeddings"):
        shard_copy(student)
