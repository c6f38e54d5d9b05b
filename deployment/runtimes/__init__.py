"""Runtimes behind one protocol, so the evaluation harness treats torch, llama.cpp (and later ONNX,
OpenAI-compatible servers) alike. A runtime is built from a plain spec dict, inside the process that
measures it (see evaluation.worker)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class Runtime(Protocol):
    threads: int

    def label_probs(self, seqs: Sequence[Sequence[int]], label_ids: Sequence[int]) -> np.ndarray:
        """[N, len(label_ids)]: next-token probabilities of the label words after each prompt,
        renormalised over those words."""
        ...

    def decide_one(self, seq: Sequence[int], label_ids: Sequence[int]) -> np.ndarray:
        """One decision at batch 1 (what a latency measurement times)."""
        ...


def _torch(spec: dict[str, Any]) -> Runtime:
    from deployment.runtimes.torch_runtime import TorchRuntime

    return TorchRuntime(**spec)


def _llama_cpp(spec: dict[str, Any]) -> Runtime:
    from deployment.runtimes.llama_cpp_runtime import LlamaCppRuntime

    return LlamaCppRuntime(**spec)


# format -> constructor; the edge registry of runtimes
RUNTIMES = {"torch": _torch, "gguf": _llama_cpp}


def open_runtime(fmt: str, spec: dict[str, Any]) -> Runtime:
    if fmt not in RUNTIMES:
        raise ValueError(f"no runtime for format {fmt!r} (known: {', '.join(RUNTIMES)})")
    return RUNTIMES[fmt](spec)
