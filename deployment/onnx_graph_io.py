"""The inputs and outputs of the exported ONNX graphs, shared by the exporter (deployment.onnx_export, torch)
and the runtime (deployment.runtimes.onnx_runtime, which must not import torch: its process is measured as
an onnxruntime deployment would run)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def kv_shape(config) -> tuple[int, int, int]:
    """(layers, key/value heads, head dim) of a llama-family config (a transformers config, or any object
    with its attributes)."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, getattr(config, "num_key_value_heads", None) or heads, head_dim


def past_names(n_layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """int64 input_ids and attention_mask with the prompts padded on the left, as
    sdk.distill.batching.left_pad makes them for torch."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), width), dtype=np.int64)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s):] = s
            mask[i, width - len(s):] = 1
    return ids, mask
