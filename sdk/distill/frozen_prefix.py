"""Train the top layers of a causal LM on cached activations of its frozen bottom layers.

When adapters sit only on the top k of n layers, the bottom n-k layers are frozen and their output for
a prompt never changes. Computing it once and training on the cache makes each epoch cost k layers
forward+backward instead of n forward + k backward: on 2 CPU cores the frozen forward was most of the
adaptation time. Neither peft nor transformers offers this, hence the hand-rolled views below.

A view is a model built from the original's config on the meta device whose submodules are the
original's (shared, not copied): training the top view trains the original's adapters in place.
It relies on the decoder exposing `embed_tokens`, `layers`, `norm`, `rotary_emb` (llama-family layout).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from transformers import AutoModelForCausalLM

from sdk.distill.batching import batches, left_pad


def _base(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _view(model: torch.nn.Module, layers: slice, keep_norm: bool) -> torch.nn.Module:
    base = _base(model)
    src = base.get_decoder()
    cfg = copy.deepcopy(base.config)
    kept = list(src.layers)[layers]
    cfg.num_hidden_layers = len(kept)
    if isinstance(getattr(cfg, "layer_types", None), list):
        cfg.layer_types = cfg.layer_types[layers]
    with torch.device("meta"):
        view = AutoModelForCausalLM.from_config(cfg)
    dec = view.get_decoder()
    dec.embed_tokens = src.embed_tokens
    dec.layers = torch.nn.ModuleList(kept)
    dec.rotary_emb = src.rotary_emb
    dec.norm = src.norm if keep_norm else torch.nn.Identity()
    view.set_output_embeddings(base.get_output_embeddings())
    return view


def top_view(model: torch.nn.Module, start: int) -> torch.nn.Module:
    """Layers start.. plus final norm and lm_head, fed with inputs_embeds = cached hidden states."""
    return _view(model, slice(start, None), keep_norm=True)


@torch.inference_mode()
def cache_hidden_states(model: torch.nn.Module, seqs: Sequence[Sequence[int]], start: int, pad_id: int,
                        batch_size: int = 32, desc: str | None = "cache frozen layers") -> dict[str, torch.Tensor]:
    """Inputs of layer `start` for every prompt, left-padded to one width: hidden [N, L, H], mask, positions."""
    from tqdm.auto import tqdm

    bottom = _view(model, slice(0, start), keep_norm=False).get_decoder()
    full = left_pad(seqs, pad_id)
    hidden = None
    for b in tqdm(list(batches(len(seqs), batch_size)), desc=desc, disable=desc is None, leave=False):
        width = int(full["attention_mask"][b].sum(-1).max())  # trim shared left padding of this batch
        inputs = {k: v[b][:, -width:] for k, v in full.items()}
        out = bottom(**inputs, use_cache=False).last_hidden_state
        if hidden is None:
            hidden = torch.zeros((len(seqs), full["input_ids"].shape[1], out.shape[-1]), dtype=out.dtype)
        hidden[b, -width:] = out
    return {"hidden": hidden, "attention_mask": full["attention_mask"], "position_ids": full["position_ids"]}


def cached_forward(cache: dict[str, torch.Tensor]) -> Callable[[torch.nn.Module, list[int]], torch.Tensor]:
    """forward(top_view, idx) -> [B, vocab] logits at the last position, from cached activations."""

    def forward(view: torch.nn.Module, idx: list[int]) -> torch.Tensor:
        width = int(cache["attention_mask"][idx].sum(-1).max())
        out = view(inputs_embeds=cache["hidden"][idx][:, -width:], attention_mask=cache["attention_mask"][idx][:, -width:],
                   position_ids=cache["position_ids"][idx][:, -width:], logits_to_keep=1, use_cache=False)
        return out.logits[:, -1, :]

    return forward
