"""The teacher's top-k log-probabilities at every response token, stored sparsely in one safetensors file.

Written once per annotation run, read by every training run on it. Rows have different lengths (one per
response), so the file holds their flat concatenation plus an offsets array (row i is tokens
offsets[i]:offsets[i+1]). Log-probabilities are float16, ids the smallest integer type that holds the
vocabulary: 4 bytes per (token, k) entry for vocabularies up to 65536.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from sdk.errors import DistillError

FORMAT = "distill-sdk/topk-v1"
_KEYS = ("logprobs", "ids", "offsets")


def ids_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id (0 .. vocab_size-1) fits, else int32."""
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


class TopKStore:
    def __init__(self, logprobs: np.ndarray, ids: np.ndarray, offsets: np.ndarray, vocab_size: int,
                 path: Path | None = None):
        self._logprobs, self._ids, self._offsets = logprobs, ids, offsets
        self.vocab_size = vocab_size
        self.path = path

    # --- writing and reading

    @classmethod
    def write(cls, path: str | Path, rows: Sequence[tuple[torch.Tensor, torch.Tensor]],
              vocab_size: int | None = None) -> TopKStore:
        """One file from rows of (logprobs [L_i, k], ids [L_i, k]), written atomically.
        vocab_size (the model's) picks the id dtype; by default the largest stored id + 1."""
        path = Path(path)
        if not rows:
            raise DistillError(f"top-k store {path}: no rows to write")
        k = rows[0][0].shape[-1]
        for i, (lp, ix) in enumerate(rows):
            if lp.ndim != 2 or lp.shape != ix.shape or lp.shape[1] != k:
                raise DistillError(f"top-k store {path}: row {i} has logprobs {tuple(lp.shape)} and ids "
                                   f"{tuple(ix.shape)}; expected two [tokens, {k}] arrays")
        logprobs = torch.cat([lp.detach().to("cpu", torch.float16) for lp, _ in rows]).numpy()
        ids = torch.cat([ix.detach().to("cpu", torch.int64) for _, ix in rows]).numpy()
        top_id = int(ids.max()) if ids.size else -1
        if ids.size and int(ids.min()) < 0:
            raise DistillError(f"top-k store {path}: negative token id {int(ids.min())}")
        vocab = top_id + 1 if vocab_size is None else int(vocab_size)
        if top_id >= vocab:
            raise DistillError(f"top-k store {path}: token id {top_id} is outside the vocabulary of {vocab}")
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([lp.shape[0] for lp, _ in rows], out=offsets[1:])
        arrays = {"logprobs": logprobs, "ids": ids.astype(ids_dtype(vocab)), "offsets": offsets}
        meta = {"format": FORMAT, "k": str(k), "vocab_size": str(vocab), "rows": str(len(rows))}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two runs writing the same store write apart
        save_file(arrays, str(tmp), metadata=meta)
        os.replace(tmp, path)
        return cls(logprobs, arrays["ids"], offsets, vocab, path)

    @classmethod
    def read(cls, path: str | Path) -> TopKStore:
        path = Path(path)
        if not path.is_file():
            raise DistillError(f"teacher top-k file {path} is missing (re-run the annotation stage)")
        try:
            with safe_open(str(path), framework="np") as f:
                meta = f.metadata() or {}
                arrays = {key: f.get_tensor(key) for key in f.keys()}
        except Exception as err:  # safetensors raises its own error types for truncated/garbled files
            raise DistillError(f"teacher top-k file {path} is unreadable: {type(err).__name__}: {err}") from None
        if meta.get("format") != FORMAT or any(key not in arrays for key in _KEYS):
            raise DistillError(f"teacher top-k file {path} is not a top-k store "
                               f"(format {meta.get('format')!r}, arrays {sorted(arrays)})")
        logprobs, ids, offsets = arrays["logprobs"], arrays["ids"], arrays["offsets"]
        try:
            k, vocab = int(meta["k"]), int(meta["vocab_size"])
        except (KeyError, ValueError):
            raise DistillError(f"teacher top-k file {path} is corrupt: metadata {meta}") from None
        consistent = (logprobs.ndim == 2 and logprobs.shape == ids.shape and logprobs.shape[1] == k
                      and offsets.ndim == 1 and len(offsets) >= 2 and offsets[0] == 0
                      and offsets[-1] == logprobs.shape[0] and bool((np.diff(offsets) >= 0).all()))
        if not consistent:
            raise DistillError(f"teacher top-k file {path} is corrupt: logprobs {logprobs.shape}, ids {ids.shape}, "
                               f"k {k}, offsets ending at {offsets[-1] if len(offsets) else None}")
        return cls(logprobs, ids, offsets, vocab, path)

    # --- access

    @property
    def k(self) -> int:
        return int(self._logprobs.shape[1])

    @property
    def bytes_per_token(self) -> int:
        return self.k * (self._logprobs.itemsize + self._ids.itemsize)

    @property
    def lengths(self) -> list[int]:
        """Tokens per row."""
        return np.diff(self._offsets).tolist()

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def _span(self, i: int) -> slice:
        if not -len(self) <= i < len(self):
            raise IndexError(f"top-k store{f' {self.path}' if self.path else ''} has {len(self)} rows, asked for {i}")
        i %= len(self)
        return slice(int(self._offsets[i]), int(self._offsets[i + 1]))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(logprobs float32 [L_i, k], ids long [L_i, k])."""
        return self.rows([i])

    def rows(self, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows idx concatenated in that order: (logprobs float32 [sum L, k], ids long [sum L, k])."""
        spans = [self._span(i) for i in idx]
        logprobs = np.concatenate([self._logprobs[s] for s in spans]) if spans else self._logprobs[:0]
        ids = np.concatenate([self._ids[s] for s in spans]) if spans else self._ids[:0]
        return torch.from_numpy(logprobs.astype(np.float32)), torch.from_numpy(ids.astype(np.int64))

    def subset(self, idx: Sequence[int]) -> TopKStore:
        """An in-memory store of rows idx, in that order (row i of the result is row idx[i] here)."""
        spans = [self._span(i) for i in idx]
        lengths = [s.stop - s.start for s in spans]
        offsets = np.zeros(len(spans) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        pick = np.concatenate([np.arange(s.start, s.stop) for s in spans]) if spans else np.zeros(0, dtype=np.int64)
        return TopKStore(self._logprobs[pick], self._ids[pick], offsets, self.vocab_size)
