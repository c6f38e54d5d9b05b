"""Exporters behind one protocol: a trained student folder in, artifacts out, each with what a runtime needs
to run it. Registered as entry points (`distill_sdk.exporters`), so the export and evaluate stages never
name a format; a third party adds one in its own pyproject.toml:

    [project.entry-points."distill_sdk.exporters"]
    tensorrt = "my_pkg.trt:TensorRTExporter"

Each exporter owns its typed config (`Config`, the keys under `export.formats.<kind>` in a project file).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, Field, field_validator

from sdk.typed_config import TypedConfig


@dataclass
class Exported:
    """One artifact written by an exporter."""

    name: str  # "<kind>-<quant>", e.g. gguf-Q4_K_M, onnx-int8, torch-int8
    format: str  # the runtime format that runs it (deployment.runtimes.RUNTIMES)
    quant: str | None
    path: Path  # a file or folder the exporter wrote, or the student folder itself (torch quantizes on load)
    size_bytes: int
    spec: dict[str, Any] = field(default_factory=dict)  # runtime arguments besides the model path and threads


@dataclass
class ExportRequest:
    """What every exporter is told about the student it exports (plain values, no project config)."""

    student: Path
    out_dir: Path  # where to write files (a temporary folder the stage moves into place)
    stem: str  # prefix of the files written: the student folder's name (student, student-seqkd)
    task: str  # "decision" | "generation": decision graphs only, or generation with a KV cache too
    chat: bool  # the student was trained on chat-formatted prompts
    metadata: dict[str, Any]  # the task's facts (distill.*), for formats that carry metadata
    threads: int | None = None
    only_last: bool = False  # export the exporter's last (most compressed) type only (a comparison twin)


class Exporter(Protocol):
    kind: ClassVar[str]
    Config: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel) -> None: ...

    def export(self, request: ExportRequest) -> list[Exported]: ...

    @staticmethod
    def runtime_spec(path: Path, spec: dict[str, Any], *, threads: int | None, batch_size: int,
                     context_length: int) -> dict[str, Any]:
        """The runtime's constructor arguments for an exported artifact at `path` on this machine."""
        ...


def folder_bytes(path: Path, patterns: Sequence[str] = ("*",)) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for p in patterns for f in path.rglob(p) if f.is_file())


class GgufExporter:
    """GGUF for llama.cpp: an F16 file written from the student's weights, then llama.cpp's own quantizer
    for each requested type."""

    kind = "gguf"

    class Config(TypedConfig):
        quants: list[str] = Field(["Q8_0", "Q4_K_M"], description="GGUF types made by llama.cpp's quantizer "
                                  "from the F16 file (F16 itself to keep it).")

        @field_validator("quants")
        @classmethod
        def _known(cls, v: list[str]) -> list[str]:
            from deployment.gguf import QUANT_TYPES

            bad = [q for q in v if q not in QUANT_TYPES]
            if bad:
                raise ValueError(f"unknown GGUF type(s) {bad} (known: {', '.join(QUANT_TYPES)})")
            return v

    def __init__(self, config: Config):
        self.config = config

    def export(self, request: ExportRequest) -> list[Exported]:
        from deployment.gguf import quantize, write_gguf
        from sdk.models import read_meta

        r = request
        quants = self.config.quants[-1:] if r.only_last else self.config.quants
        f16 = write_gguf(r.student, r.out_dir / f"{r.stem}-F16.gguf", "F16",
                         read_meta(r.student).get("gguf_pre_tokenizer"), chat_template=r.chat, metadata=r.metadata)
        out = []
        for q in quants:
            path = f16 if q == "F16" else quantize(f16, r.out_dir / f"{r.stem}-{q}.gguf", q, r.threads)
            out.append(Exported(f"gguf-{q}", "gguf", q, path, path.stat().st_size))
        if "F16" not in quants:
            f16.unlink()
        return out

    @staticmethod
    def runtime_spec(path, spec, *, threads, batch_size, context_length):
        # The KV cache in F32, as `distill serve` keeps it (its prefix reuse is exact only so): with llama.cpp's
        # default F16 cache the education demo's Q4_K_M gave probabilities up to 0.21 away from the served ones
        # and 10 of 1,000 test decisions differed; what is measured must be what is served.
        return {"model": str(path), "threads": threads, "n_ctx": context_length, "kv_f32": True, **spec}


class OnnxExporter:
    """ONNX for onnxruntime: torch.onnx's graphs (deployment.onnx_export) in fp32, then onnxruntime's
    quantizers: INT8 in blocks (8-bit MatMulNBits: weights in blocks of 32 with one scale each, activations
    quantized per block at run time, llama.cpp's Q8_0 scheme), dynamic INT8 (per-channel weights, one
    activation scale per tensor) and 4-bit weight-only MatMulNBits (W4A16) with chosen modules at 8 bits."""

    kind = "onnx"

    class Config(TypedConfig):
        quants: list[Literal["fp32", "int8", "int8-dynamic", "int4"]] = Field(
            ["int8"], description="Graphs written: fp32; int8 (8-bit MatMulNBits: blocks of 32 weights, int8 "
            "activations per block; keeps a generation student's pass@1); int8-dynamic (onnxruntime's "
            "quantize_dynamic: per-channel weights, one activation scale per tensor; lost 21% of the code "
            "student's pass@1 on 200 problems, docs/export.md); int4 (4-bit weight-only MatMulNBits, the "
            "int4_eight_bit modules at 8 bits). The modules in keep_float stay fp32.")
        keep_float: list[str] = Field(["lm_head"], description="Modules whose MatMuls stay fp32 in the "
                                      "quantized graphs (a quantized output head costs the most quality).")
        int4_block_size: int = Field(32, ge=16, description="int4: weights per quantization block (a power "
                                     "of 2); smaller blocks keep more quality and cost more scales.")
        int4_accuracy_level: Literal[1, 2, 3, 4] | None = Field(
            None, description="int4: MatMulNBits compute type of the 4-bit nodes (null/1 fp32, 4 int8 "
            "activations: faster on CPU, flips argmaxes on some models, onnxruntime#29849).")
        int4_eight_bit: list[str] = Field(
            ["down_proj", "v_proj"], description="int4: modules quantized to 8 bits instead of 4 (what "
            "llama.cpp's Q4_K_M gives 6 bits): on the code student 0.433 -> 0.517 pass@1 for +6% size.")

        @field_validator("int4_block_size")
        @classmethod
        def _power_of_two(cls, v: int) -> int:
            if v & (v - 1):
                raise ValueError(f"must be a power of 2, got {v}")
            return v

    def __init__(self, config: Config):
        self.config = config

    def export(self, request: ExportRequest) -> list[Exported]:
        from deployment.onnx_export import export_folder, quantize_int4, quantize_int8, quantize_weight_only

        r, c = request, self.config
        quants = c.quants[-1:] if r.only_last else c.quants
        fp32 = export_folder(r.student, r.out_dir / f"{r.stem}-onnx-fp32", generation=r.task == "generation")
        out = []
        for q in quants:
            path, dst = fp32, r.out_dir / f"{r.stem}-onnx-{q}"
            if q == "int8":
                path = quantize_weight_only(fp32, dst, bits=8, block_size=32, keep_float=c.keep_float)
            elif q == "int8-dynamic":
                path = quantize_int8(fp32, dst, keep_float=c.keep_float)
            elif q == "int4":
                path = quantize_int4(fp32, dst, block_size=c.int4_block_size, keep_float=c.keep_float,
                                     accuracy_level=c.int4_accuracy_level, eight_bit=c.int4_eight_bit)
            out.append(Exported(f"onnx-{q}", "onnx", q, path, folder_bytes(path, ("*.onnx",))))
        if "fp32" not in quants:
            shutil.rmtree(fp32)
        return out

    @staticmethod
    def runtime_spec(path, spec, *, threads, batch_size, context_length):
        return {"model": str(path), "threads": threads, "batch_size": batch_size, **spec}


class TorchExporter:
    """The student itself, quantized by torchao when the runtime loads it (deployment.torch_quant): dynamic
    INT8 on CPU or CUDA, FP8 (E4M3) on GPUs with FP8 (compute capability >= 8.9). Nothing is written:
    quantizing at load takes well under a second for a small student and keeps one file set to ship."""

    kind = "torch"

    class Config(TypedConfig):
        quants: list[Literal["int8", "fp8"]] = Field(["int8"], description="torchao quantizations applied when "
                                                     "loading: int8 (CPU or CUDA), fp8 (CUDA, Hopper/Ada).")

    def __init__(self, config: Config):
        self.config = config

    def export(self, request: ExportRequest) -> list[Exported]:
        quants = self.config.quants[-1:] if request.only_last else self.config.quants
        out = []
        for q in quants:
            # quantizing once here measures the size, and FP8 without an FP8 GPU fails now, saying what it needs
            size = _quantized_size(request.student, q)
            spec = {"quantize": q, **({"device": "cuda"} if q == "fp8" else {})}
            out.append(Exported(f"torch-{q}", "torch", q, request.student, size, spec))
        return out

    @staticmethod
    def runtime_spec(path, spec, *, threads, batch_size, context_length):
        return {"model": str(path), "threads": threads, "batch_size": batch_size, **spec}


def _quantized_size(student: Path, kind: str) -> int:
    """Bytes of the student's weights once quantized (what the runtime holds; nothing is written)."""
    from deployment.torch_quant import quantize_model, quantized_bytes
    from sdk.models import load_causal_lm

    model, _ = load_causal_lm(str(student))
    return quantized_bytes(quantize_model(model.float().eval(), kind))

