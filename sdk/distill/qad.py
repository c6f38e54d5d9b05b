"""Quantization-aware distillation (QAD) for llama.cpp's GGUF types.

After the student is trained, a twin continues from its weights for a few more steps with every weight
passing through fake quantization to exactly what llama.cpp's quantizer will store for it: the GGUF type
llama.cpp gives that tensor at the target (asked of llama.cpp itself, `quantized_tensor_types`: the _M
mixes' higher-bit layers, the fallbacks for rows that are not a multiple of 256), after the F16 rounding of
the exporter's intermediate file, reproduced block for block by `sdk.distill.ggml_quant`. The gradient
passes straight through (STE); the KD loss against the teacher keeps the student near it while it learns
weights whose quantized values work. The twin is saved with its latent float weights, which llama.cpp's
real quantizer then turns into the very values it trained with.

A control twin continues as many steps without fake quantization: GGUFs of it are the "without QAD" side
at the same total steps.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field, field_validator
from torch import nn
from torch.nn.utils import parametrize

from sdk.typed_config import TypedConfig

QAD_PREFIX = "student-qad-"  # + the target GGUF type: the twin trained through that type's fake quantization
CONTROL_DIR = "student-cont"  # the twin trained as many more steps without it


class QADConfig(TypedConfig):
    types: list[str] = Field(..., min_length=1, description="GGUF types (llama.cpp ftypes, e.g. Q4_K_M, Q2_K) "
                             "to train a QAD twin for; each is exported in that type only.")
    steps: int = Field(64, ge=1, description="Optimizer steps of each QAD twin (and of the control twin) after "
                       "the main training.")
    lr: float | None = Field(None, gt=0, description="Learning rate of those steps (default: distill.lr).")
    control: bool = Field(True, description="Also continue the student `steps` steps without fake "
                          "quantization (student-cont) and export it in every QAD type: the comparison at the "
                          "same total steps.")

    @field_validator("types")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from deployment.gguf import QUANT_TYPES

        bad = [q for q in v if q not in QUANT_TYPES or q == "F16"]
        if bad:
            raise ValueError(f"unknown or unquantized GGUF type(s) {bad} (known: "
                             f"{', '.join(q for q in QUANT_TYPES if q != 'F16')})")
        if len(set(v)) != len(v):
            raise ValueError(f"listed twice: {sorted({q for q in v if v.count(q) > 1})}")
        return v


class _StraightThrough(torch.autograd.Function):
    """Forward: the quantized values exactly (w + (q - w).detach() is off by float rounding); backward: the
    gradient goes to w unchanged."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
        return quantized.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


class GgufFakeQuant(nn.Module):
    """weight -> the dequantized values llama.cpp stores for it in `ggml_type` (after F16 rounding), with an
    identity gradient. The quantized values are kept until the weight changes (its version counter moves at
    every optimizer step): validation batches and gradient-accumulation micro-batches reuse them, and a
    frozen weight is quantized once."""

    def __init__(self, ggml_type: str):
        super().__init__()
        self.ggml_type = ggml_type
        self._kept: tuple[int, int, torch.Tensor] | None = None

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        from sdk.distill.ggml_quant import quantize_dequantize

        key = (w.data_ptr(), w._version)
        if self._kept is None or self._kept[:2] != key:
            self._kept = (*key, self._target(w, quantize_dequantize))
        return _StraightThrough.apply(w, self._kept[2]) if w.requires_grad else self._kept[2]

    def _target(self, w: torch.Tensor, quantize_dequantize) -> torch.Tensor:
        # the exporter writes 2-D weights as F16 first; llama.cpp quantizes those values
        w16 = w.detach().to(torch.float16).to(torch.float32)
        out = w16 if self.ggml_type == "F16" else quantize_dequantize(w16, self.ggml_type)
        return out.to(w.dtype)

    def extra_repr(self) -> str:
        return self.ggml_type


def attach(model: nn.Module, types: Mapping[str, str]) -> dict[str, int]:
    """Fake-quantize every weight of `model` named in `types` (HF weight name -> ggml type; F32 tensors are
    left alone); a tied output layer gets its embedding's type. Returns the count of tensors per type."""
    modules = dict(model.named_modules())
    counts: dict[str, int] = {}
    tied = getattr(model.config, "tie_word_embeddings", False)
    plan = dict(types)
    if tied and "lm_head.weight" not in plan and "model.embed_tokens.weight" in plan:
        plan["lm_head.weight"] = plan["model.embed_tokens.weight"]  # llama.cpp reuses token_embd as the output
    for name, ggml_type in plan.items():
        if ggml_type == "F32" or not name.endswith(".weight"):
            continue
        module = modules.get(name.removesuffix(".weight"))
        if module is None:
            raise KeyError(f"QAD: the model has no module for weight {name!r}")
        parametrize.register_parametrization(module, "weight", GgufFakeQuant(ggml_type), unsafe=True)
        counts[ggml_type] = counts.get(ggml_type, 0) + 1
    return counts


def detach(model: nn.Module) -> None:
    """Remove the fake quantization, keeping the latent (float) weights: llama.cpp's quantizer makes the
    trained values of them again at export."""
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
