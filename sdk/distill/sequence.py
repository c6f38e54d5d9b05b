"""Response-level distillation: train on whole teacher completions, scored at response tokens only.

A batch is prompt + response per row, right-padded. Position t predicts token t+1, so the positions
whose logits are trained are the last prompt token up to the second-to-last response token. Only the
decoder's final hidden states at those positions are gathered; the vocabulary projection is applied
chunk by chunk (here for the teacher's top-k and validation CE, in `ResponseKD` for training), so
[tokens x vocab] logits never exist for a whole batch.

With a frozen bottom (`sdk.distill.frozen_prefix.SequenceCache`), the batch carries the cached inputs of
the first trainable layer instead of token ids, and the model is `top_view(model, start)`: each training
step runs only the trainable layers, with the same values as the full model (same mask, same positions).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from sdk.distill.batching import batches
from sdk.distill.losses import ResponseKD
from sdk.errors import DistillError

if TYPE_CHECKING:
    from sdk.distill.frozen_prefix import SequenceCache
    from sdk.distill.topk_store import TopKStore


def _base(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def right_pad(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int) -> dict:
    """input_ids, attention_mask [B, L]; target_positions [B, L] bool (positions whose logits predict a
    response token); target_ids [N] (those response tokens, row-major, N = target_positions.sum())."""
    if len(prompts) != len(responses):
        raise DistillError(f"{len(prompts)} prompts but {len(responses)} responses")
    if not prompts:
        raise DistillError("right_pad: empty batch")
    for i, p in enumerate(prompts):
        if len(p) == 0:  # the first response token needs a position before it to be predicted from
            raise DistillError(f"prompt {i} is empty: a response needs at least one prompt token before it")
    width = max(len(p) + len(r) for p, r in zip(prompts, responses))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    positions = torch.zeros((len(prompts), width), dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        n = len(p) + len(r)
        ids[i, :n] = torch.as_tensor([*p, *r], dtype=torch.long)
        mask[i, :n] = 1
        positions[i, len(p) - 1: n - 1] = True
    target_ids = torch.as_tensor([t for r in responses for t in r], dtype=torch.long)
    return {"input_ids": ids, "attention_mask": mask, "target_positions": positions, "target_ids": target_ids}


def with_cache(batch: dict, cache: SequenceCache, idx: Sequence[int]) -> dict:
    """The right_pad batch of examples idx plus `inputs_embeds` [B, L, H]: their cached frozen-layer
    outputs, right-padded to the batch's width (response_hidden then feeds them to the top view), and the
    layer they enter (`cached_start`) and the top view's depth (`top_layers`)."""
    return {**batch, "inputs_embeds": cache.padded(idx, batch["input_ids"].shape[1]), "cached_start": cache.start,
            "top_layers": cache.top_layers}


def check_cache(cache: SequenceCache, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]) -> None:
    """A cache made for other sequences is an error, not a silently wrong loss."""
    if len(cache) != len(responses):
        raise DistillError(f"frozen-layer cache has {len(cache)} sequences but there are {len(responses)} responses")
    for i, (n, p, r) in enumerate(zip(cache.lengths, prompts, responses)):
        if n != len(p) + len(r):
            raise DistillError(f"frozen-layer cache row {i} covers {n} tokens but prompt + response {i} has "
                               f"{len(p) + len(r)} (was the cache built for other sequences?)")


def response_hidden(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """[N, H] final (post-norm) decoder hidden states at the batch's target positions, without the lm_head.
    A batch with `inputs_embeds` (see with_cache) needs the top view the cache was made for."""
    from sdk.distill.frozen_prefix import right_padded_positions

    decoder = _base(model).get_decoder()
    device = next(model.parameters()).device
    mask = batch["attention_mask"].to(device)
    if "inputs_embeds" in batch:
        start, top = batch["cached_start"], batch["top_layers"]
        if len(decoder.layers) != top:
            raise DistillError(f"cached inputs of layer {start} feed top_view(model, {start}) with {top} layers, "
                               f"not a model with {len(decoder.layers)}")
        width = mask.shape[1]
        out = decoder(inputs_embeds=batch["inputs_embeds"].to(device), attention_mask=mask,
                      position_ids=right_padded_positions(width).to(device), use_cache=False).last_hidden_state
    else:
        out = decoder(input_ids=batch["input_ids"].to(device), attention_mask=mask, use_cache=False).last_hidden_state
    return out[batch["target_positions"].to(device)]


def _longest_first(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]) -> list[int]:
    """Example order for inference batches: similar lengths share a batch, so less padding is computed."""
    return sorted(range(len(prompts)), key=lambda i: -(len(prompts[i]) + len(responses[i])))


@torch.inference_mode()
def teacher_topk(model: torch.nn.Module, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                 k: int, pad_id: int, batch_size: int = 8,
                 chunk_tokens: int = 256) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per example: (logprobs float16 [len(response), k], ids int32 [len(response), k]), the teacher's
    top-k log-probabilities (log_softmax over the full vocabulary, T=1) at every response position."""
    head = _base(model).get_output_embeddings()
    vocab = head.weight.shape[0]
    if not 1 <= k <= vocab:
        raise DistillError(f"top-k must be between 1 and the vocabulary size {vocab}, got {k}")
    was_training = model.training
    model.eval()
    out: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(prompts)
    for b in batches(len(prompts), batch_size, _longest_first(prompts, responses)):
        batch = right_pad([prompts[i] for i in b], [responses[i] for i in b], pad_id)
        hidden = response_hidden(model, batch)
        logps, ids = [], []
        for start in range(0, hidden.shape[0], chunk_tokens):
            logits = head(hidden[start: start + chunk_tokens]).float()
            top = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)
            logps.append(top.values.to(torch.float16).cpu())
            ids.append(top.indices.to(torch.int32).cpu())
        if not logps:  # every response in this batch is empty
            logps, ids = [torch.empty((0, k), dtype=torch.float16)], [torch.empty((0, k), dtype=torch.int32)]
        lengths = [len(responses[i]) for i in b]
        for i, lp, ix in zip(b, torch.cat(logps).split(lengths), torch.cat(ids).split(lengths)):
            out[i] = (lp.clone(), ix.clone())  # clone: a split view would keep the whole batch alive
    model.train(was_training)
    return out  # type: ignore[return-value]


def make_response_loss(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                       loss: Callable[[torch.Tensor, torch.nn.Module, dict], torch.Tensor], pad_id: int,
                       topk: TopKStore | None = None, cache: SequenceCache | None = None,
                       teacher: torch.nn.Module | None = None
                       ) -> Callable[[torch.nn.Module, list[int]], tuple[torch.Tensor, int]]:
    """batch_loss(model, idx) -> (summed loss, response tokens): `loss(hidden, lm_head, targets)` (a mean
    over the tokens) on examples idx, times their token count, so micro-batches of a step add up to the
    step's per-token mean whatever their sizes (sdk.distill.recipe.train divides by the total). Targets
    holds target_ids and, given a store, the teacher's top-k rows of those examples in the same order.
    Given a cache of the frozen layers' outputs for these sequences (row i = prompts[i] + responses[i]),
    batch_loss must be called with `top_view(model, cache.start)`. Given a `teacher` model instead of a
    store (online KD), it runs on each batch without gradients and the loss reads its final hidden states
    and output head (chunked full-vocabulary targets)."""
    if len(prompts) != len(responses):
        raise DistillError(f"{len(prompts)} prompts but {len(responses)} responses")
    if cache is not None:
        check_cache(cache, prompts, responses)
    if topk is not None:
        if len(topk) != len(responses):
            raise DistillError(f"teacher top-k store has {len(topk)} rows but there are {len(responses)} responses")
        for i, (stored, r) in enumerate(zip(topk.lengths, responses)):
            if stored != len(r):
                raise DistillError(f"teacher top-k row {i} covers {stored} tokens but response {i} has {len(r)} "
                                   "(was the store written for other responses?)")

    def batch_loss(model: torch.nn.Module, idx: list[int]) -> torch.Tensor:
        batch = right_pad([prompts[i] for i in idx], [responses[i] for i in idx], pad_id)
        extra = {}
        if teacher is not None:
            with torch.no_grad():
                teacher_hidden = response_hidden(teacher, batch)
            extra["teacher_head"] = _base(teacher).get_output_embeddings()
        if cache is not None:
            batch = with_cache(batch, cache, idx)
        hidden = response_hidden(model, batch)
        targets = {"target_ids": batch["target_ids"].to(hidden.device)}
        if topk is not None:
            logprobs, ids = topk.rows(idx)
            targets["topk_logprobs"], targets["topk_ids"] = logprobs.to(hidden.device), ids.to(hidden.device)
        if teacher is not None:
            targets["teacher_hidden"] = teacher_hidden.to(hidden.device)
        n = int(targets["target_ids"].numel())
        return loss(hidden, _base(model).get_output_embeddings(), targets, **extra) * n, n

    return batch_loss


@torch.no_grad()
def response_ce(model: torch.nn.Module, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]],
                pad_id: int, batch_size: int = 16, chunk_tokens: int = 256,
                cache: SequenceCache | None = None) -> float:
    """Mean per-token cross-entropy of the responses given their prompts (lower is better). Given a cache
    of these sequences' frozen-layer outputs, `model` is `top_view(model, cache.start)`."""
    if cache is not None:
        check_cache(cache, prompts, responses)
    head = _base(model).get_output_embeddings()
    ce = ResponseKD(alpha=1.0, chunk_tokens=chunk_tokens)
    total, n_tokens = 0.0, 0
    was_training = model.training
    model.eval()
    for b in batches(len(prompts), batch_size, _longest_first(prompts, responses)):
        batch = right_pad([prompts[i] for i in b], [responses[i] for i in b], pad_id)
        n = int(batch["target_ids"].numel())
        if n:
            if cache is not None:
                batch = with_cache(batch, cache, b)
            hidden = response_hidden(model, batch)
            total += ce(hidden, head, {"target_ids": batch["target_ids"].to(hidden.device)}).item() * n
            n_tokens += n
    model.train(was_training)
    if n_tokens == 0:
        raise DistillError("response_ce: the responses hold no tokens")
    return total / n_tokens
