"""Students: cut from the teacher by keeping a subset of its decoder layers, or any HF causal LM."""

from __future__ import annotations

import copy
import re

import numpy as np
import torch
from transformers import AutoModelForCausalLM

_LAYER_KEY = re.compile(r"\.layers\.(\d+)\.")


def evenly_spaced_layers(n_teacher: int, n_keep: int) -> list[int]:
    """Indices of n_keep layers spread over the teacher's depth, first and last included."""
    if not 1 <= n_keep <= n_teacher:
        raise ValueError(f"student.layers must be between 1 and the teacher's {n_teacher} layers, got {n_keep}")
    if n_keep == 1:
        return [n_teacher - 1]
    return sorted({int(round(x)) for x in np.linspace(0, n_teacher - 1, n_keep)})


def bottom_and_spread_layers(n_teacher: int, n_keep: int, frozen_bottom: int) -> list[int]:
    """The teacher's first `frozen_bottom` layers, then n_keep - frozen_bottom layers evenly spaced over the
    rest of its depth (last included)."""
    if frozen_bottom == 0:
        return evenly_spaced_layers(n_teacher, n_keep)
    if not 0 < frozen_bottom < n_keep <= n_teacher:
        raise ValueError(f"student.frozen_bottom ({frozen_bottom}) must be below student.layers ({n_keep}), "
                         f"which must not exceed the teacher's {n_teacher} layers")
    rest = n_keep - frozen_bottom
    top = [frozen_bottom + i for i in evenly_spaced_layers(n_teacher - frozen_bottom, rest)]
    if len(set(top)) < rest:  # rounding collided: take the top layers consecutively
        top = list(range(n_teacher - rest, n_teacher))
    return list(range(frozen_bottom)) + top


def freeze_layers(model: torch.nn.Module, n_bottom: int) -> None:
    """No gradient for the first n_bottom decoder layers."""
    for layer in list(model.get_decoder().layers)[:n_bottom]:
        layer.requires_grad_(False)


def student_from_teacher(teacher: torch.nn.Module, keep: list[int]) -> torch.nn.Module:
    """A new model with the teacher's config but only the layers in `keep`, their weights copied."""
    cfg = copy.deepcopy(teacher.config)
    cfg.num_hidden_layers = len(keep)
    if isinstance(getattr(cfg, "layer_types", None), list):  # per-layer attention kinds (e.g. Gemma 3)
        cfg.layer_types = [cfg.layer_types[i] for i in keep]
    student = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    new_index = {old: new for new, old in enumerate(keep)}
    state = {}
    for key, value in teacher.state_dict().items():
        m = _LAYER_KEY.search(key)
        if m is None:
            state[key] = value
        elif int(m.group(1)) in new_index:
            state[key[: m.start()] + f".layers.{new_index[int(m.group(1))]}." + key[m.end():]] = value
    missing, unexpected = student.load_state_dict(state, strict=False)
    # tied output embeddings show up as "missing" lm_head when the teacher ties them
    missing = [k for k in missing if not (k.endswith("lm_head.weight") and cfg.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"student weights did not line up: missing={missing[:5]} unexpected={unexpected[:5]}")
    if cfg.tie_word_embeddings:
        student.tie_weights()
    return student.eval()


def count_params(model: torch.nn.Module) -> int:
    """Parameters counted once even when tied."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def decoder_linear_names(model: torch.nn.Module) -> list[str]:
    """Short names of the linear layers inside decoder blocks (q_proj, ..., down_proj for llama):
    the LoRA targets, found from the model instead of a per-architecture table."""
    return sorted({name.rsplit(".", 1)[-1] for name, mod in model.named_modules()
                   if isinstance(mod, torch.nn.Linear) and _LAYER_KEY.search(name + ".")})


def count_params_on_disk(model_dir) -> int:
    """Parameters of a saved HF folder, read from the safetensors headers (no weights loaded)."""
    from pathlib import Path

    from safetensors import safe_open

    total = 0
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(f, framework="pt") as st:
            for key in st.keys():
                total += int(np.prod(st.get_slice(key).get_shape()))
    return total
