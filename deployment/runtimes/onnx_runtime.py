"""onnxruntime over a folder written by deployment.onnx_export.export_folder: decision.onnx (decision
templates) or generation.onnx (KV-cached steps; it also scores, as one step with an empty past). The execution providers are the ones asked for that the
installed onnxruntime has (CUDA with onnxruntime-gpu on a GPU machine), CPU otherwise; `providers` reports
those the session actually runs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from deployment.onnx_graph_io import left_pad
from deployment.runtimes.generation import Generation, GenerationParams, finish_generation


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class OnnxRuntime:
    def __init__(self, model: str, threads: int | None = None, batch_size: int = 32,
                 providers: Sequence[str] = ("CUDAExecutionProvider", "CPUExecutionProvider")):
        # onnxruntime, tokenizers and the folder's JSON only: no torch or transformers in this process, whose
        # time and memory are measured as an onnxruntime deployment's (as bundle_predict.py runs it)
        import onnxruntime as ort

        from deployment.onnx_graph_io import kv_shape, past_names

        folder = Path(model)
        dec, gen = folder / "decision.onnx", folder / "generation.onnx"
        if not dec.is_file() and not gen.is_file():
            raise FileNotFoundError(f"{folder}: no decision.onnx or generation.onnx (write the folder with "
                                    "deployment.onnx_export.export_folder)")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.threads = threads or os.cpu_count() or 1  # onnxruntime's default (0) uses every core
        available = set(ort.get_available_providers())
        chosen = [p for p in providers if p in available] or ["CPUExecutionProvider"]
        self.decision = ort.InferenceSession(str(dec), opts, providers=chosen) if dec.is_file() else None
        self.generation = ort.InferenceSession(str(gen), opts, providers=chosen) if gen.is_file() else None
        self.providers = (self.decision or self.generation).get_providers()
        self.config = SimpleNamespace(**json.loads((folder / "config.json").read_text()))
        self.tok, specials = _folder_tokenizer(folder)
        self.pad_id = specials.get("pad_token")
        self.batch_size = batch_size
        gen_cfg = folder / "generation_config.json"
        eos = json.loads(gen_cfg.read_text()).get("eos_token_id") if gen_cfg.is_file() else None
        self.eos_ids = sorted({i for i in ([specials.get("eos_token")] + (eos if isinstance(eos, list) else [eos]))
                               if i is not None})
        self.n_layers, self.kv_heads, self.head_dim = kv_shape(self.config)
        self.past_names = past_names(self.n_layers)

    def score(self, seqs: Sequence[Sequence[int]], label_ids: Sequence[int]) -> np.ndarray:
        out = []
        for lo in range(0, len(seqs), self.batch_size):
            ids, mask = left_pad(seqs[lo: lo + self.batch_size], self.pad_id or 0)
            if self.decision is not None:
                logits = self.decision.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            else:
                logits = self.generation.run(None, self._prefill_feeds(ids, mask))[0]
            out.append(_softmax(logits[:, list(label_ids)].astype(np.float64)))
        return np.concatenate(out) if out else np.zeros((0, len(label_ids)))

    def score_one(self, seq: Sequence[int], label_ids: Sequence[int]) -> np.ndarray:
        return self.score([seq], label_ids)[0]

    def _prefill_feeds(self, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Generation-graph inputs for left-padded prompts and an empty past: positions count real tokens
        only (as transformers derives them from the mask), padding gets position 0."""
        empty = np.zeros((ids.shape[0], self.kv_heads, 0, self.head_dim), dtype=np.float32)
        positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int64)
        return {"input_ids": ids, "attention_mask": mask, "position_ids": positions,
                **{n: empty for n in self.past_names}}

    def generate(self, prompts: Sequence[Sequence[int]], params: GenerationParams,
                 progress: str | None = None) -> list[list[Generation]]:
        """Greedy completions, `batch_size` prompts per KV-cached batch (left-padded); a batch runs until
        each row has ended or hit a stop string, or max_new_tokens. Greedy completions are the same for
        every one of the n asked for."""
        from tqdm.auto import tqdm

        out: list[list[Generation]] = []
        with tqdm(total=len(prompts), desc=progress or "generate", unit="prompt", disable=progress is None) as bar:
            for lo in range(0, len(prompts), self.batch_size):
                out += [[g] * params.n for g in self._generate_batch(prompts[lo: lo + self.batch_size], params)]
                bar.update(min(self.batch_size, len(prompts) - lo))
        return out

    def generate_one(self, prompt: Sequence[int], params: GenerationParams) -> Generation:
        return self._generate_batch([prompt], params)[0]

    def _generate_batch(self, prompts: Sequence[Sequence[int]], params: GenerationParams) -> list[Generation]:
        if self.generation is None:
            raise ValueError("this ONNX folder has no generation.onnx (exported for decisions only)")
        if not params.greedy:
            raise ValueError("the ONNX runtime decodes greedily only (temperature 0) so far")
        if any(not p for p in prompts):
            raise ValueError("a prompt is empty: generation needs at least one prompt token")
        start = time.perf_counter()
        ids, mask = left_pad(prompts, self.pad_id or 0)
        feeds = self._prefill_feeds(ids, mask)
        positions = feeds["position_ids"][:, -1:]
        rows = len(prompts)
        new: list[list[int]] = [[] for _ in range(rows)]
        ended, done = [False] * rows, [False] * rows
        ttft = 0.0
        for _ in range(params.max_new_tokens):
            logits, *present = self.generation.run(None, feeds)
            ttft = ttft or time.perf_counter() - start
            tokens = logits.argmax(-1)
            for r in range(rows):
                if done[r]:
                    continue
                token = int(tokens[r])
                if token in self.eos_ids:
                    ended[r] = done[r] = True
                    continue
                new[r].append(token)
                if params.stop and any(s in self._decode(new[r]) for s in params.stop):
                    done[r] = True
            if all(done):
                break
            positions = positions + 1
            mask = np.concatenate([mask, np.ones((rows, 1), dtype=mask.dtype)], axis=1)
            feeds = {"input_ids": tokens.astype(np.int64)[:, None], "attention_mask": mask,
                     "position_ids": positions, **dict(zip(self.past_names, present))}
        seconds = time.perf_counter() - start
        return [finish_generation(new[r], self._decode, params.stop, ended[r], ttft, seconds) for r in range(rows)]

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)


def _folder_tokenizer(folder: Path):
    """The folder's tokenizer.json (the `tokenizers` library, which transformers' fast tokenizers wrap) and the
    ids of its special tokens named in tokenizer_config.json (a name, or an {"content": ...} entry)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    specials = {}
    for key in ("pad_token", "eos_token"):
        value = cfg.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str) and tok.token_to_id(value) is not None:
            specials[key] = tok.token_to_id(value)
    return tok, specials
