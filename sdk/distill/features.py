"""Feature distillation: the student's hidden states (and attention maps) pulled toward the teacher's at
mapped layers, added to the main loss (`distill.features` in YAML).

- hidden states: MSE or cosine distance between student layer j's output and teacher layer map[j]'s, over
  real (unpadded) positions; a learned linear projection (trained with the student, not exported) when the
  widths differ;
- attention maps: KL(teacher || student) between the attention distributions of every head and query
  position of the mapped layers (needs the same head count, and eager attention, which returns the maps:
  both models are switched to it, at a speed cost).

The default layer map pairs each student layer with the teacher layer it was cut from. Layer outputs are
captured with forward hooks on the decoder layers, so the same code serves the decision forward (left
padding) and the response forward (right padding), and nothing upstream changes. The teacher runs alongside
(it stays in memory; top-k stores carry no hidden states).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from sdk.distill.schedules import Scheduled, check_range, value_at
from sdk.errors import DistillError
from sdk.typed_config import TypedConfig


class FeatureConfig(TypedConfig):
    """`distill.features`: feature distillation beside the main loss (off when absent)."""

    layers: dict[int, int] | None = Field(None, description="Student layer -> teacher layer (0-based, each "
                                          "layer's output); default: every student layer and the teacher layer "
                                          "it was cut from.")
    loss: Literal["mse", "cosine"] = Field("cosine", description="Distance between hidden states: cosine (1 - "
                                           "cosine similarity, scale-free: the default) or mse (in the hidden "
                                           "states' own scale, which can be 1000x the KD term's: see the log).")
    weight: Scheduled = Field(1.0, description="Weight of the hidden-state term (a number or a schedule).")
    attention_weight: Scheduled = Field(0.0, description="Weight of the attention-map KL (0: off; > 0 switches "
                                        "both models to eager attention).")

    @field_validator("layers")
    @classmethod
    def _layer_map(cls, v: dict[int, int] | None) -> dict[int, int] | None:
        negative = [f"{j}: {t}" for j, t in (v or {}).items() if j < 0 or t < 0]
        if negative:
            raise ValueError(f"layers are counted from 0 ({', '.join(negative)})")
        return v

    @field_validator("weight", "attention_weight")
    @classmethod
    def _weights(cls, v: Scheduled) -> Scheduled:
        return check_range(v, "weight", 0.0, 1e6)


def layer_map_problem(layer_map: dict[int, int], n_student: int | None, n_teacher: int | None) -> str | None:
    """The pairs of `distill.features.layers` beyond the models' decoder layers (a count None: not known)."""
    bad = [f"{j}: {t}" for j, t in layer_map.items()
           if (n_student is not None and j >= n_student) or (n_teacher is not None and t >= n_teacher)]
    if not bad:
        return None
    return (f"distill.features.layers: {', '.join(bad)} out of range (student layers "
            f"0-{n_student - 1 if n_student is not None else '?'}, teacher layers "
            f"0-{n_teacher - 1 if n_teacher is not None else '?'})")


def _decoder_layers(model: torch.nn.Module) -> Sequence[torch.nn.Module]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder().layers


@contextlib.contextmanager
def capture(model: torch.nn.Module, layers: Sequence[int], attention: bool) -> Iterator[dict[tuple[str, int], Any]]:
    """Within the block, every forward of `model` records the outputs of decoder `layers` ("h", i) and,
    with `attention`, their attention maps ("a", i) [B, heads, L, L]."""
    out: dict[tuple[str, int], Any] = {}
    decoder_layers = _decoder_layers(model)
    hooks = []
    for i in layers:
        def keep_hidden(_m, _args, o, i=i):
            out[("h", i)] = o[0] if isinstance(o, tuple) else o
        hooks.append(decoder_layers[i].register_forward_hook(keep_hidden))
        if attention:
            def keep_attention(_m, _args, o, i=i):
                if not isinstance(o, tuple) or o[1] is None:
                    raise DistillError("attention-map distillation needs eager attention (the attention returned "
                                       "no weights)")
                out[("a", i)] = o[1]
            hooks.append(decoder_layers[i].self_attn.register_forward_hook(keep_attention))
    try:
        yield out
    finally:
        for h in hooks:
            h.remove()


class FeatureKD(torch.nn.Module):
    """The feature terms for a layer map; holds the projections (its parameters train with the student)."""

    def __init__(self, layer_map: dict[int, int], student_width: int, teacher_width: int, loss: str = "cosine",
                 weight: Any = 1.0, attention_weight: Any = 0.0):
        super().__init__()
        if not layer_map:
            raise DistillError("distill.features.layers: the layer map is empty")
        self.layer_map = dict(layer_map)
        self.loss = loss
        self.weight_schedule, self.attention_schedule = weight, attention_weight
        self.proj = None
        if student_width != teacher_width:
            self.proj = torch.nn.ModuleDict({str(j): torch.nn.Linear(student_width, teacher_width, bias=False)
                                             for j in self.layer_map})
        self.last_terms: dict[str, float] = {}
        self.set_progress(0.0)

    @property
    def attention(self) -> bool:
        return self.attention_weight > 0 or (not isinstance(self.attention_schedule, (int, float))
                                             and max(self.attention_schedule.span()) > 0)

    def set_progress(self, fraction: float) -> None:
        self.weight = value_at(self.weight_schedule, fraction)
        self.attention_weight = value_at(self.attention_schedule, fraction)

    def forward(self, student: dict, teacher: dict, mask: torch.Tensor) -> torch.Tensor:
        """Weighted mean of the terms over mapped layers and real positions (mask [B, L], 1 = token)."""
        keep = mask.bool()
        hidden = attn = None
        for j, t in self.layer_map.items():
            s_h, t_h = student[("h", j)].float()[keep], teacher[("h", t)].float()[keep].to(student[("h", j)].device)
            if self.proj is not None:
                s_h = self.proj[str(j)](s_h)
            d = ((s_h - t_h) ** 2).mean(-1) if self.loss == "mse" else 1 - F.cosine_similarity(s_h, t_h, dim=-1)
            hidden = d.mean() if hidden is None else hidden + d.mean()
            if self.attention_weight > 0:
                s_a = student[("a", j)].float()
                t_a = teacher[("a", t)].float().to(s_a.device)
                if s_a.shape != t_a.shape:
                    raise DistillError(f"attention maps of student layer {j} {tuple(s_a.shape)} and teacher layer "
                                       f"{t} {tuple(t_a.shape)} differ (head counts must match)")
                # rows of real query positions; keys beyond the mask carry 0 probability in both
                kl = (t_a * (t_a.clamp_min(1e-12).log() - s_a.clamp_min(1e-12).log())).sum(-1)  # [B, H, L]
                q = keep[:, None, :].expand_as(kl)
                attn = kl[q].mean() if attn is None else attn + kl[q].mean()
        hidden = hidden / len(self.layer_map)
        total = self.weight * hidden
        self.last_terms = {"feat_hidden": hidden.item()}
        if attn is not None:
            attn = attn / len(self.layer_map)
            total = total + self.attention_weight * attn
            self.last_terms["feat_attention"] = attn.item()
        return total


def with_features(batch_loss: Callable, feature_kd: FeatureKD, teacher: torch.nn.Module,
                  teacher_forward: Callable[[torch.nn.Module, list[int]], Any],
                  mask_of: Callable[[list[int]], torch.Tensor]) -> Callable:
    """batch_loss(model, idx) -> (summed loss, units) with the feature terms added (per unit, like the
    main loss): the student's forward inside batch_loss and teacher_forward(teacher, idx) are captured."""
    s_layers, t_layers = sorted(feature_kd.layer_map), sorted(set(feature_kd.layer_map.values()))

    def wrapped(model: torch.nn.Module, idx: list[int]):
        with capture(model, s_layers, feature_kd.attention) as s_out:
            summed, n = batch_loss(model, idx)
        with torch.no_grad(), capture(teacher, t_layers, feature_kd.attention) as t_out:
            teacher_forward(teacher, idx)
        mask = mask_of(idx).to(summed.device)
        return summed + feature_kd(s_out, t_out, mask) * n, n

    return wrapped


def use_eager_attention(*models: torch.nn.Module) -> None:
    """Attention maps are only returned by the eager implementation."""
    for m in models:
        m.set_attn_implementation("eager")
