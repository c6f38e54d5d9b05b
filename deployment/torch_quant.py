"""Quantized torch students through torchao (the maintained successor of torch.ao.quantization, whose eager
`quantize_dynamic` is deprecated; docs/notes/issue8-onnx-quantization-research.md section 3):

- "int8": dynamic INT8 (W8A8): weights int8 per output row, activations quantized per token at run time;
  CPU or CUDA, in the model's own dtype.
- "fp8": FP8 E4M3 weights (per row) and activations (per token, dynamic) on NVIDIA GPUs of compute
  capability >= 8.9 (Ada, Hopper: H100/H200). The model is cast to bf16 on CUDA first: torchao's rowwise
  scaled matmul produces bf16 (pytorch/ao#2431). Other hardware is refused with a DistillError before the
  model is touched.

Only nn.Linear modules are quantized, and the `keep_float` ones (the output head) are not: the head maps
the last hidden state straight onto the vocabulary logits every decision and generated token is read from,
so its error lands unfiltered on the label probabilities; a low-bit head is a known cause of degraded output
(onnxruntime#24384) and, for tied models, quantizing it would also untie it from the embedding matrix. The
embeddings stay as they are because they are not Linear: a lookup costs no matmul, so quantizing it saves
memory but no time.

Speed: INT8 here saves memory, not time, on CPUs without VNNI/AMX. torchao's eager W8A8 matmul then falls
back to an int32 matmul: a 6-layer 576-wide llama, batch 8x64, 2 threads, AVX2 EPYC, torch 2.13 took 16.9 s
against fp32's 1.3 s (torch.compile did not help: 17.1 s; weight-only INT8 took 1.8 s). FP8 on Hopper uses
torch._scaled_mm.

Imports torch, and torchao only when a model is quantized; nothing here needs pydantic.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sdk.errors import DistillError

KINDS = ("int8", "fp8")
FP8_CAPABILITY = (8, 9)


def fp8_capable(device: torch.device | str | int | None = None) -> bool:
    """Whether `device` (default: the current CUDA device) runs FP8 matmuls: the check torchao itself makes
    (torchao.utils.is_sm_at_least_89), without importing torchao."""
    return bool(torch.cuda.is_available() and torch.version.cuda
                and torch.cuda.get_device_capability(device) >= FP8_CAPABILITY)


def describe_device(device: torch.device | str | int | None = None) -> str:
    """The CUDA device in words (name and compute capability), or why there is none."""
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        return f"no CUDA device (torch {torch.__version__}, {build})"
    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"


def check_kind(kind: str, device: torch.device | str | int | None = None) -> None:
    """Raises, before any model work, if `kind` is unknown (ValueError) or the hardware cannot run it
    (DistillError)."""
    if kind not in KINDS:
        raise ValueError(f"unknown torch quantization {kind!r} (known: {', '.join(KINDS)})")
    if kind == "fp8" and not fp8_capable(device):
        need = ".".join(map(str, FP8_CAPABILITY))
        raise DistillError(f"fp8 quantization needs an NVIDIA GPU of compute capability >= {need} (Ada, Hopper "
                           f"H100/H200); this machine has {describe_device(device)}. Use 'int8' instead.")


def _torchao():
    try:
        import torchao.quantization as q
    except ImportError:
        raise DistillError("torch quantization needs the torchao package: pip install torchao") from None
    return q


def quantize_model(model: torch.nn.Module, kind: str, keep_float: Sequence[str] = ("lm_head",)) -> torch.nn.Module:
    """`model` with its Linear weights quantized in place (torchao tensor subclasses; see the module doc),
    except modules whose qualified name contains one of `keep_float`. "int8" keeps the model's device and
    dtype; "fp8" moves it to CUDA (its own device if already there) in bf16. Returns the model."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = device if device.type == "cuda" else None  # fp8 then goes to the current CUDA device
    check_kind(kind, device)
    q = _torchao()
    if kind == "int8":
        config = q.Int8DynamicActivationInt8WeightConfig(granularity=q.PerRow(), set_inductor_config=False)
    else:  # per-row scales (torchao's default is one per tensor): an outlier row costs only its own precision.
        # pytorch/ao#4582: PerRow fails on H100 for large K with M <= 256; benchmarks/gpu_check_issue8.py probes it
        config = q.Float8DynamicActivationFloat8WeightConfig(granularity=q.PerRow(), set_inductor_config=False)
        model = model.to(device or "cuda", torch.bfloat16)
    # set_inductor_config=False: it only tunes torch.compile, and it would change inductor's global flags

    def body_linear(module: torch.nn.Module, fqn: str) -> bool:
        return isinstance(module, torch.nn.Linear) and not any(k in fqn for k in keep_float)

    q.quantize_(model, config, filter_fn=body_linear)
    return model.eval()


def _is_quantized(t: torch.Tensor) -> bool:
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    return is_traceable_wrapper_subclass(t)


def quantized_modules(model: torch.nn.Module) -> list[str]:
    """Qualified names of the modules whose weight is a quantized tensor (torchao leaves a Linear whose shape
    its kernels cannot take, e.g. fp8 with a dimension not a multiple of 16, in high precision)."""
    return [name for name, m in model.named_modules()
            if isinstance(getattr(m, "weight", None), torch.Tensor) and _is_quantized(m.weight)]


def _tensor_bytes(t: torch.Tensor) -> int:
    if _is_quantized(t):  # a torchao tensor: int8/fp8 data plus its scales (and zero points), as held
        names, _ = t.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def quantized_bytes(model: torch.nn.Module) -> int:
    """Bytes of `model`'s parameters as they are held in memory: quantized weights count their low-bit data
    and scales, others their elements; a tied weight counts once. Works on any submodule."""
    return sum(_tensor_bytes(p) for p in model.parameters())
