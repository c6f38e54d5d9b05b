"""Train the top layers of a causal LM on cached activations of its frozen bottom layers.

When adapters sit only on the top k of n layers, the bottom n-k layers are frozen and their output for
a prompt never changes. Computing it once and training on the cache makes each epoch cost k layers
forward+backward instead of n forward + k backward: on 2 CPU cores the frozen forward was most of the
adaptation time. Neither peft nor transformers offers this, hence the hand-rolled views below.

Two caches: `cache_hidden_states` (decision shape: left-padded prompts, scored at the last position by
`cached_forward`) and `cache_sequences` (generation shape: whole prompt + response sequences, stored
ragged and right-padded per batch by `sdk.distill.sequence` for the response losses and validation CE).

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
        device = next(model.parameters()).device
        inputs = {k: v[b][:, -width:].to(device) for k, v in full.items()}
        out = bottom(**inputs, use_cache=False).last_hidden_state.to("cpu", torch.float32)
        if hidden is None:
            hidden = torch.zeros((len(seqs), full["input_ids"].shape[1], out.shape[-1]), dtype=out.dtype)
        hidden[b, -width:] = out
    return {"hidden": hidden, "attention_mask": full["attention_mask"], "position_ids": full["position_ids"]}


def cached_forward(cache: dict[str, torch.Tensor]) -> Callable[[torch.nn.Module, list[int]], torch.Tensor]:
    """forward(top_view, idx) -> [B, vocab] logits at the last position, from cached activations."""

    def forward(view: torch.nn.Module, idx: list[int]) -> torch.Tensor:
        width = int(cache["attention_mask"][idx].sum(-1).max())
        device = next(view.parameters()).device
        part = {k: cache[k][idx][:, -width:].to(device) for k in ("hidden", "attention_mask", "position_ids")}
        out = view(inputs_embeds=part["hidden"], attention_mask=part["attention_mask"],
                   position_ids=part["position_ids"], logits_to_keep=1, use_cache=False)
        return out.logits[:, -1, :]

    return forward


# --- whole token sequences (generation shape: prompt + response), cached ragged


def prefix_is_frozen(model: torch.nn.Module, start: int) -> bool:
    """True when nothing below layer `start` trains (input embeddings and layers 0..start-1): only then is
    a cache of layer `start`'s inputs valid for the whole training run."""
    dec = _base(model).get_decoder()
    if not all(hasattr(dec, name) for name in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return False  # not the llama-family layout the views are built from
    below = [dec.embed_tokens, *list(dec.layers)[:start]]
    return 0 < start < len(dec.layers) and not any(p.requires_grad for m in below for p in m.parameters())


def same_prefix(a: torch.nn.Module, b: torch.nn.Module, start: int) -> bool:
    """True when two models' input embeddings and layers 0..start-1 hold equal weights (then one cache of
    layer `start`'s inputs serves both)."""
    def below(model):
        dec = _base(model).get_decoder()
        return [t for m in (dec.embed_tokens, *list(dec.layers)[:start]) for t in (*m.parameters(), *m.buffers())]

    pa, pb = below(a), below(b)
    return len(pa) == len(pb) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(pa, pb))


class SequenceCache:
    """Inputs of layer `start` (the frozen layers' output) for token sequences, one float32 [len_i, H]
    tensor per sequence: ragged, so no padding is stored; `padded` builds a right-padded batch.

    Valid for any model whose embeddings and bottom `start` layers equal the cached model's (e.g. a twin
    student cut from the same teacher); it is fed to `top_view(model, start)`, which has `top_layers` layers.
    """

    def __init__(self, hidden: list[torch.Tensor], start: int, top_layers: int):
        self.hidden, self.start, self.top_layers = hidden, start, top_layers

    def __len__(self) -> int:
        return len(self.hidden)

    @property
    def lengths(self) -> list[int]:
        return [int(h.shape[0]) for h in self.hidden]

    @property
    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for h in self.hidden)

    def subset(self, idx: Sequence[int]) -> SequenceCache:
        """The cache of sequences idx, in that order (shares the tensors)."""
        return SequenceCache([self.hidden[i] for i in idx], self.start, self.top_layers)

    def padded(self, idx: Sequence[int], width: int | None = None) -> torch.Tensor:
        """[B, width, H] rows idx, right-padded with zeros (what the padding holds never reaches a real
        position: the attention mask hides it and the layers act per position otherwise)."""
        rows = [self.hidden[i] for i in idx]
        width = max(int(h.shape[0]) for h in rows) if width is None else width
        out = rows[0].new_zeros((len(rows), width, rows[0].shape[-1]))
        for i, h in enumerate(rows):
            out[i, : h.shape[0]] = h
        return out


def right_padded_positions(width: int) -> torch.Tensor:
    """[1, width] position ids of right-padded rows (every row starts at 0), as the decoder builds itself."""
    return torch.arange(width).unsqueeze(0)


@torch.no_grad()
def cache_sequences(model: torch.nn.Module, seqs: Sequence[Sequence[int]], start: int, pad_id: int,
                    batch_size: int = 16, desc: str | None = "cache frozen layers") -> SequenceCache:
    """Run the embeddings and layers 0..start-1 once over every sequence (right-padded batches of similar
    lengths, eval mode) and keep each sequence's own positions: a SequenceCache of float32 [len_i, H].
    no_grad rather than inference_mode: the cached tensors later enter autograd graphs as inputs."""
    from tqdm.auto import tqdm

    n_layers = len(_base(model).get_decoder().layers)
    if not 0 < start < n_layers:
        raise ValueError(f"cache_sequences: start must be between 1 and {n_layers - 1}, got {start}")
    if any(len(s) == 0 for s in seqs):
        raise ValueError("cache_sequences: empty sequence")
    bottom = _view(model, slice(0, start), keep_norm=False)
    was_training = model.training
    bottom.eval()
    dec = bottom.get_decoder()
    device = next(model.parameters()).device
    hidden: list[torch.Tensor | None] = [None] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # similar lengths share a batch
    for b in tqdm(list(batches(len(seqs), batch_size, order)), desc=desc, disable=desc is None, leave=False):
        width = max(len(seqs[i]) for i in b)
        ids = torch.full((len(b), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(b), width), dtype=torch.long)
        for row, i in enumerate(b):
            ids[row, : len(seqs[i])] = torch.as_tensor(seqs[i], dtype=torch.long)
            mask[row, : len(seqs[i])] = 1
        out = dec(input_ids=ids.to(device), attention_mask=mask.to(device),
                  position_ids=right_padded_positions(width).to(device), use_cache=False).last_hidden_state
        for row, i in enumerate(b):
            hidden[i] = out[row, : len(seqs[i])].to("cpu", torch.float32).clone()  # clone: not a view of the batch
    model.train(was_training)
    return SequenceCache(hidden, start, n_layers - start)  # type: ignore[arg-type]
