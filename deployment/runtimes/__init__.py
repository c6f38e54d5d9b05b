"""Runtimes behind one protocol, so the evaluation harness treats torch, llama.cpp (and later ONNX,
OpenAI-compatible servers) alike. A runtime is built from a plain spec dict, inside the process that
measures it (see evaluation.worker)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from deployment.runtimes.generation import Generation, GenerationParams


class Runtime(Protocol):
    threads: int

    def score(self, seqs: Sequence[Sequence[int]], label_ids: Sequence[int]) -> np.ndarray:
        """[N, len(label_ids)]: next-token probabilities of the label words after each prompt,
        renormalised over those words."""
        ...

    def score_one(self, seq: Sequence[int], label_ids: Sequence[int]) -> np.ndarray:
        """One decision at batch 1 (what a latency measurement times)."""
        ...

    def generate(self, prompts: Sequence[Sequence[int]], params: GenerationParams,
                 progress: str | None = None) -> list[list[Generation]]:
        """params.n completions of each tokenised prompt, in prompt order. Token ids in, so every runtime
        continues exactly the same ids (the SDK tokenises once)."""
        ...

    def generate_one(self, prompt: Sequence[int], params: GenerationParams) -> Generation:
        """One completion at batch 1 (params.n is not used), timed: what latency and tokens/s measure."""
        ...


def _torch(spec: dict[str, Any]) -> Runtime:
    from deployment.runtimes.torch_runtime import TorchRuntime

    return TorchRuntime(**spec)


def _llama_cpp(spec: dict[str, Any]) -> Runtime:
    from deployment.runtimes.llama_cpp_runtime import LlamaCppRuntime

    return LlamaCppRuntime(**spec)


def _openai(spec: dict[str, Any]) -> Runtime:
    from deployment.runtimes.openai_runtime import OpenAIRuntime

    return OpenAIRuntime(**spec)


def _onnx(spec: dict[str, Any]) -> Runtime:
    from deployment.runtimes.onnx_runtime import OnnxRuntime

    return OnnxRuntime(**spec)


# format -> constructor; the edge registry of runtimes
RUNTIMES = {"torch": _torch, "gguf": _llama_cpp, "openai": _openai, "onnx": _onnx}
# formats whose runtime takes the template's prompt texts (it tokenises itself), not the run's token ids
TEXT_FORMATS = frozenset({"openai"})


def open_runtime(fmt: str, spec: dict[str, Any]) -> Runtime:
    if fmt not in RUNTIMES:
        raise ValueError(f"no runtime for format {fmt!r} (known: {', '.join(RUNTIMES)})")
    return RUNTIMES[fmt](spec)
