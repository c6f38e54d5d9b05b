"""FSDP for the recipe (`distill.fsdp: true` with `distill run --nproc N`): the trained parameters, their
gradients and the AdamW moments are sharded across the ranks with PyTorch's FSDP2 (`fully_shard`), so each
device holds 1/N of the training state.

The recipe trains a sharded copy and puts the best weights back into the caller's model at the end, so
everything after training (saving, exporting, the next stage) sees a plain module. Each trained decoder layer
is an FSDP unit and the decoder the root (see shard_copy). Frozen parameters (the embeddings by default) are
not sharded: each rank keeps them whole, and they need no gradient sync.

Checkpoints hold full tensors (gathered on every rank, written by rank 0), so a run can resume on another
number of processes, or on one.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import torch

from sdk.errors import DistillError


def _decoder(model: torch.nn.Module) -> torch.nn.Module | None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder() if hasattr(base, "get_decoder") else None


def shard_copy(model: torch.nn.Module, extra_modules: tuple[torch.nn.Module, ...] = ()
               ) -> tuple[torch.nn.Module, tuple[torch.nn.Module, ...]]:
    """A copy of `model` (and of `extra_modules`) whose decoder's trained parameters are sharded across the
    ranks: each trained layer one FSDP unit, the decoder (embeddings, final norm) the root unit. The losses
    call the decoder and the output head separately; with the decoder as the one root, every rank's
    gathers and reduce-scatters run in the same order. Trained parameters outside the decoder (an untied
    output layer, feature projections) stay whole on every rank and the recipe all-reduces their gradients."""
    from torch.distributed.fsdp import fully_shard

    seen = Counter(id(p) for m in (model, *extra_modules) for _, p in m.named_parameters(remove_duplicate=False))
    shared = [p for m in (model, *extra_modules) for p in m.parameters() if p.requires_grad and seen[id(p)] > 1]
    if shared:
        raise DistillError("distill.fsdp: a trained parameter is shared between modules (a tied embedding and "
                           "output layer): keep distill.freeze_embeddings: true, or train without fsdp")
    sharded = copy.deepcopy(model)
    extras = tuple(copy.deepcopy(m) for m in extra_modules)
    decoder = _decoder(sharded)
    if decoder is None or not any(p.requires_grad for p in decoder.parameters()):
        return sharded, extras  # nothing to shard: plain data parallelism
    layers = getattr(decoder, "layers", [])
    for layer in layers:
        if any(p.requires_grad for p in layer.parameters()):
            fully_shard(layer, ignored_params={p for p in layer.parameters() if not p.requires_grad} or None)
    in_layers = {id(p) for layer in layers for p in layer.parameters()}
    frozen = {p for p in decoder.parameters() if not p.requires_grad and id(p) not in in_layers}
    fully_shard(decoder, ignored_params=frozen or None)
    return sharded, extras


def is_sharded(t: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> None:
    """torch.nn.utils.clip_grad_norm_ over sharded and whole gradients together (it takes one kind at a
    time): the global norm from both, the same scaling of every gradient."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = []
    for part in ([g for g in grads if is_sharded(g)], [g for g in grads if not is_sharded(g)]):
        if part:
            n = torch.nn.utils.get_total_norm(part)
            norms.append(full(n).float())
    if not norms:
        return
    total = float(torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms])))
    coef = min(1.0, max_norm / (total + 1e-6))
    if coef < 1.0:
        for g in grads:
            g.mul_(coef)


def full(t: torch.Tensor) -> torch.Tensor:
    """A whole tensor from a shard (a collective: every rank calls it in the same order)."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A whole tensor cut to `param`'s shard (every rank holds the same whole tensor: read from one file)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor) and not isinstance(value, DTensor) and value.dim() > 0:
        return distribute_tensor(value.to(param.device, param.dtype), param.device_mesh, param.placements,
                                 src_data_rank=None)
    return value


def full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trained parameters whole, on the CPU: gathered one at a time, so a device never holds them all."""
    return {n: full(p.detach()).cpu() for n, p in model.named_parameters() if p.requires_grad}


def load_full_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    model.load_state_dict({n: like(v, params[n]) if n in params else v for n, v in state.items()}, strict=False)


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    sd = optimizer.state_dict()
    sd["state"] = {i: {k: full(v).cpu() if torch.is_tensor(v) else v for k, v in s.items()}
                   for i, s in sd["state"].items()}
    return sd


def load_full_optimizer_state(optimizer: torch.optim.Optimizer, sd: dict[str, Any]) -> None:
    params = [p for g in optimizer.param_groups for p in g["params"]]
    sd = {**sd, "state": {i: {k: like(v, params[int(i)]) if torch.is_tensor(v) and k != "step" else v
                              for k, v in s.items()} for i, s in sd["state"].items()}}
    optimizer.load_state_dict(sd)
