"""The `llamacpp` teacher: a local GGUF run by llama-cpp-python, always in its own process (llama.cpp's
threads and torch's OpenMP in one process slowed llama.cpp ~50x here).

Decisions: its top-k logits after each prompt over the full vocabulary. Generation: completions sampled
by llama.cpp (cached like the hf teacher's). Response distributions: its top-k log-probabilities at every
response token, from one evaluation of prompt + response with all logits kept. The run's tokenizer is the
GGUF's own (dequantized once to a Hugging Face folder, which is also what the student is cut from unless
`student.base` / `student.model` say otherwise), so token ids mean the same on both sides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdk.errors import DistillError


def gguf_path(spec: str) -> Path:
    from sdk.models import EMBEDDED, _embedded_gguf

    if spec in EMBEDDED:
        return _embedded_gguf(spec)
    path = Path(spec).expanduser()
    if not path.is_file() or path.suffix != ".gguf":
        raise DistillError(f"teacher.model: {spec!r} is not a .gguf file")
    return path


class LlamaCppTeacher:
    kind = "llamacpp"

    def __init__(self, ctx):
        self.ctx = ctx
        self.cfg = ctx.config.teacher
        self.path = gguf_path(self.cfg.model)

    def identity(self) -> str:
        from sdk.models import file_sha256

        return "gguf-" + file_sha256(self.path)[:16]

    def usage(self) -> None:
        return None

    def _spec(self, n_ctx: int, logits_all: bool = False) -> dict[str, Any]:
        return {"model": str(self.path), "threads": self.cfg.threads, "n_ctx": min(self.cfg.n_ctx, n_ctx),
                **({"logits_all": True} if logits_all else {})}

    def _check_vocab(self, vocab: int) -> None:
        label_ids = self.ctx.run.task().get("label_ids") or []
        if any(i >= vocab for i in label_ids):
            raise DistillError(f"teacher.model {self.cfg.model!r}: its vocabulary ({vocab}) does not hold the run's "
                               "label token ids; student.base / student.model must share the GGUF's tokenizer")

    def _topk(self, op: dict[str, Any], n_ctx: int, logits_all: bool, name: str) -> dict[str, Any]:
        from evaluation.harness import run_worker

        if n_ctx > self.cfg.n_ctx:
            raise DistillError(f"teacher.n_ctx ({self.cfg.n_ctx}) is shorter than the longest sequence ({n_ctx} "
                               "tokens); raise it")
        res = run_worker({"format": "gguf", "spec": self._spec(n_ctx, logits_all), "topk": op},
                         self.ctx.run.path("annotations", "work"), name)
        self._check_vocab(res["topk"]["vocab"])
        return res["topk"]

    def decision_targets(self, prompts, texts, label_ids, label_words, top_k):
        import torch

        n_ctx = max(len(p) for p in prompts) + 8
        got = self._topk({"kind": "last", "prompts": prompts, "k": top_k}, n_ctx, False, "teacher-topk")
        return (torch.tensor(got["values"], dtype=torch.float32), torch.tensor(got["ids"], dtype=torch.long),
                {"source": "logits", "teacher_runtime": "llama_cpp"})

    def completions(self, prompts, texts, params):
        from sdk.teachers.hf import cached_completions

        n_ctx = max(len(p) for p in prompts) + params["max_new_tokens"] + 8
        job = {"format": "gguf", "spec": self._spec(max(n_ctx, 64))}
        completions, info = cached_completions(self.ctx, self.identity(), job, prompts, params)
        return completions, {"teacher_runtime": "llama_cpp", **info}

    def response_topk(self, prompts, responses, k):
        import torch

        n_ctx = max(len(p) + len(r) for p, r in zip(prompts, responses)) + 8
        got = self._topk({"kind": "responses", "prompts": [list(p) for p in prompts],
                          "responses": [list(r) for r in responses], "k": k}, n_ctx, True, "teacher-response-topk")
        rows = [(torch.tensor(lp, dtype=torch.float16).reshape(-1, k), torch.tensor(ix, dtype=torch.int32).reshape(-1, k))
                for lp, ix in got["rows"]]
        return rows, got["vocab"]

    def artifact(self):
        import math

        from deployment.gguf_header import GgufFile
        from evaluation.harness import Artifact

        c = self.ctx.config
        with GgufFile(self.path) as g:
            params = sum(math.prod(dims) for _, dims, _ in g.tensors)
        size = self.path.stat().st_size
        longest = max(len(p) for split in self.ctx.run.prompts().values() for p in split)
        extra = c.evaluation.max_new_tokens if self.ctx.template.task == "generation" else 0
        spec = {"model": str(self.path), "threads": c.evaluation.threads or self.cfg.threads,
                "n_ctx": max(512, longest + extra + 8)}
        return Artifact("teacher-gguf", "teacher", "gguf", None, str(self.path), params, size, spec,
                        8 * size / params if params else None)
