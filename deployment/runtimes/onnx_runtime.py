"""onnxruntime over a folder written by deployment.onnx_export.export_folder: decision.onnx for scoring,
generation.onnx (KV-cached steps) for generation. The execution providers are the ones asked for that the
installed onnxruntime has (CUDA with onnxruntime-gpu on a GPU machine), CPU otherwise; `providers` reports
those the session actually runs."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from deployment.runtimes.generation import Generation, GenerationParams, finish_generation


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class OnnxRuntime:
    def __init__(self, model: str, threads: int | None = None, batch_size: int = 32,
                 providers: Sequence[str] = ("CUDAExecutionProvider", "CPUExecutionProvider")):
        import onnxruntime as ort
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig

        from deployment.onnx_export import kv_shape, past_names

        folder = Path(model)
        if not (folder / "decision.onnx").is_file():
            raise FileNotFoundError(f"{folder}: no decision.onnx (write the folder with deployment.onnx_export.export_folder)")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.threads = threads or os.cpu_count() or 1  # onnxruntime's default (0) uses every core
        available = set(ort.get_available_providers())
        chosen = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        self.decision = ort.InferenceSession(str(folder / "decision.onnx"), opts, providers=chosen)
        self.providers = self.decision.get_providers()
        gen = folder / "generation.onnx"
        self.generation = ort.InferenceSession(str(gen), opts, providers=chosen) if gen.is_file() else None
        self.config = AutoConfig.from_pretrained(folder)
        self.tok = AutoTokenizer.from_pretrained(folder)
        self.batch_size = batch_size
        eos = GenerationConfig.from_pretrained(folder).eos_token_id
        self.eos_ids = sorted({i for i in ([self.tok.eos_token_id] + (eos if isinstance(eos, list) else [eos]))
                               if i is not None})
        self.n_layers, self.kv_heads, self.head_dim = kv_shape(self.config)
        self.past_names = past_names(self.n_layers)

    def score(self, seqs: Sequence[Sequence[int]], label_ids: Sequence[int]) -> np.ndarray:
        from sdk.distill.batching import left_pad

        out = []
        for lo in range(0, len(seqs), self.batch_size):
            batch = left_pad(seqs[lo: lo + self.batch_size], self.tok.pad_token_id or 0)
            logits = self.decision.run(None, {"input_ids": batch["input_ids"].numpy(),
                                              "attention_mask": batch["attention_mask"].numpy()})[0]
            out.append(_softmax(logits[:, list(label_ids)].astype(np.float64)))
        return np.concatenate(out) if out else np.zeros((0, len(label_ids)))

    def score_one(self, seq: Sequence[int], label_ids: Sequence[int]) -> np.ndarray:
        return self.score([seq], label_ids)[0]

    def generate(self, prompts: Sequence[Sequence[int]], params: GenerationParams,
                 progress: str | None = None) -> list[list[Generation]]:
        return [[self.generate_one(p, params)] * params.n for p in prompts]

    def generate_one(self, prompt: Sequence[int], params: GenerationParams) -> Generation:
        if self.generation is None:
            raise ValueError("this ONNX folder has no generation.onnx (exported for decisions only)")
        if not params.greedy:
            raise ValueError("the ONNX runtime decodes greedily only (temperature 0) so far")
        if not prompt:
            raise ValueError("the prompt is empty: generation needs at least one prompt token")
        past = {n: np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=np.float32) for n in self.past_names}
        ids = np.array([list(prompt)], dtype=np.int64)
        length, new, ended, ttft = 0, [], False, 0.0
        start = time.perf_counter()
        while len(new) < params.max_new_tokens:
            feeds = {"input_ids": ids, "attention_mask": np.ones((1, length + ids.shape[1]), dtype=np.int64),
                     "position_ids": np.arange(length, length + ids.shape[1], dtype=np.int64)[None, :], **past}
            logits, *present = self.generation.run(None, feeds)
            length += ids.shape[1]
            past = dict(zip(self.past_names, present))
            token = int(logits[0].argmax())
            if not new and not ttft:
                ttft = time.perf_counter() - start
            if token in self.eos_ids:
                ended = True
                break
            new.append(token)
            if params.stop and any(s in self._decode(new) for s in params.stop):
                break
            ids = np.array([[token]], dtype=np.int64)
        return finish_generation(new, self._decode, params.stop, ended, ttft, time.perf_counter() - start)

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)
