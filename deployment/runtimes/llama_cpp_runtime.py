"""llama.cpp runtime (llama-cpp-python). Prompts are scored from token ids with eval(); echo=True
prompt logprobs were wrong in 0.3.x. Without logits_all, Llama.eval() no longer copies the last
logits row into `scores`, so it is read with llama_get_logits_ith(ctx, -1)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np


class LlamaCppRuntime:
    def __init__(self, model: str, threads: int | None = None, n_ctx: int = 512, logits_all: bool = False,
                 kv_f32: bool = False):
        """kv_f32: keep the KV cache in F32 instead of llama.cpp's default F16 (exact parity checks)."""
        from llama_cpp import Llama

        if not os.path.isfile(model):
            raise FileNotFoundError(f"GGUF file {model} does not exist")
        self.threads = threads or os.cpu_count() or 1
        self.llm = Llama(model_path=model, n_ctx=n_ctx, n_batch=n_ctx, n_threads=self.threads,
                         n_threads_batch=self.threads, logits_all=logits_all, verbose=False,
                         **({"type_k": 0, "type_v": 0} if kv_f32 else {}))  # 0 = GGML_TYPE_F32

    def logits(self, seq: Sequence[int]) -> np.ndarray:
        """[len(seq), vocab] logits at every position (needs logits_all=True)."""
        self.llm.reset()
        self.llm.eval(list(seq))
        return np.array(self.llm.scores[: self.llm.n_tokens], dtype=np.float32)

    def decide_one(self, seq: Sequence[int], label_ids: Sequence[int]) -> np.ndarray:
        import llama_cpp

        self.llm.reset()
        self.llm.eval(list(seq))
        row = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        z = np.array([row[i] for i in label_ids], dtype=np.float64)
        e = np.exp(z - z.max())
        return e / e.sum()

    def label_probs(self, seqs: Sequence[Sequence[int]], label_ids: Sequence[int]) -> np.ndarray:
        from tqdm.auto import tqdm

        return np.stack([self.decide_one(s, label_ids) for s in tqdm(seqs, desc="llama.cpp scoring", leave=False)])
