"""Teacher backends behind one protocol, chosen by `teacher.kind` (each validates its own config section):

- `hf`: a local Hugging Face causal LM (full logits, hidden states, LoRA adaptation): sdk/teachers/hf.py
- `llamacpp`: a local GGUF through llama-cpp-python (generation, top-k log-probabilities): llamacpp.py
- `openai`: any OpenAI-compatible endpoint (text, reasoning text, top-k log-probabilities): openai_api.py

The stages ask a teacher for decision targets, completions and response top-k distributions and for the
artifact that evaluates it; they never name a backend. A teacher without weights (an API) cannot be cut
into a student: the run's local model (`base_model`) is then `student.base` or `student.model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from sdk.config import ProjectConfig

if TYPE_CHECKING:  # torch is imported by the backends that use it: the CLI's checks start without it
    import torch


class Teacher(Protocol):
    kind: str

    def identity(self) -> str:
        """What its answers depend on (weights hash, or endpoint + model): part of every cache key."""
        ...

    def decision_targets(self, prompts: list[list[int]], texts: list[str], label_ids: list[int],
                         label_words: list[str], top_k: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """(values [N, k], token ids [N, k], info): the teacher's logits (or log-probabilities) at the answer
        position over k tokens of the run's tokenizer, for the decision loss."""
        ...

    def completions(self, prompts: list[list[int]], texts: list[str], params: dict[str, Any]
                    ) -> tuple[list[list[dict[str, Any]]], dict[str, Any]]:
        """params["n"] completions per prompt, each {"text", "reasoning"} (reasoning None when there is none)."""
        ...

    def response_topk(self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], k: int):
        """(rows, vocab size): top-k log-probabilities at every response token, or None when the teacher cannot
        give distributions over the run's vocabulary (an API)."""
        ...

    def usage(self) -> dict[str, Any] | None:
        """Calls, cache hits, tokens and cost so far (API teachers), else None."""
        ...


def base_model_spec(config: ProjectConfig) -> str:
    """The local model whose tokenizer the run uses and the student comes from (whole or cut)."""
    s, t = config.student, config.teacher
    return s.model or s.base or t.model


def trust_remote_code(config: ProjectConfig) -> bool:
    return bool(getattr(config.teacher, "trust_remote_code", False))


def open_teacher(ctx) -> Teacher:
    """The configured backend for a stage context (the edge registry of teacher kinds)."""
    kind = ctx.config.teacher.kind
    if kind == "hf":
        from sdk.teachers.hf import HFTeacher

        return HFTeacher(ctx)
    if kind == "llamacpp":
        from sdk.teachers.llamacpp import LlamaCppTeacher

        return LlamaCppTeacher(ctx)
    if kind == "openai":
        from sdk.teachers.openai_backend import OpenAIBackend

        return OpenAIBackend(ctx)
    raise NotImplementedError(f"teacher.kind {kind!r} has no backend yet")
