"""The teacher-signal store: a teacher's sparse top-k log-probabilities at every response token, paid for
once and read by any number of students and runs.

One folder per (teacher identity, k): `store.json` (format version, teacher, k, vocabulary, id bits) and
shards `shard-<digest>.npz`, each written once, atomically, and never changed. A row is one (prompt,
response) pair, keyed by a hash of their token ids, so any run over the same teacher finds the rows it
shares with earlier runs (other students, other data subsets) and asks the teacher only for the rest,
which become a new shard. A shard holds, for its rows: the keys, row offsets, the token ids bit-packed to
ceil(log2(vocabulary)) bits, the log-probabilities as float16, and each response token's character span
in the response text (what cross-tokenizer distillation aligns on); numpy's zip container compresses it.

No maintained format does this (safetensors stores raw tensors uncompressed and unpacked; DistillKit's and
TRL's offline logits are framework-specific pickles/parquet of one run): hence this small one, readable
with numpy alone.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sdk.errors import DistillError

FORMAT = "distill-sdk/signals-v1"
KEY_BYTES = 16
_SHARD_KEYS = ("keys", "offsets", "ids_packed", "logprobs", "char_spans")


def row_key(prompt: Sequence[int], response: Sequence[int]) -> bytes:
    """The content key of one row: its prompt and response token ids."""
    return hashlib.sha256(json.dumps([list(map(int, prompt)), list(map(int, response))]).encode()).digest()[:KEY_BYTES]


def store_dir(root: str | Path, teacher_identity: str, k: int) -> Path:
    """Where the store of this teacher and k lives under `root`."""
    digest = hashlib.sha256(json.dumps([teacher_identity, k]).encode()).hexdigest()[:16]
    return Path(root) / f"k{k}-{digest}"


def pack_ids(ids: np.ndarray, bits: int) -> np.ndarray:
    """Non-negative ids -> a little-endian bit stream of `bits` bits each (uint8)."""
    flat = ids.astype(np.uint32).reshape(-1)
    bitplanes = ((flat[:, None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    return np.packbits(bitplanes.reshape(-1), bitorder="little")


def unpack_ids(packed: np.ndarray, count: int, bits: int) -> np.ndarray:
    planes = np.unpackbits(packed, count=count * bits, bitorder="little").reshape(count, bits)
    return (planes.astype(np.int64) << np.arange(bits, dtype=np.int64)).sum(1)


class SignalStore:
    """Rows of (logprobs [L, k] float32, ids [L, k] int64, char_spans [L, 2] int32) by row key."""

    def __init__(self, path: Path, meta: dict[str, Any]):
        self.path, self.meta = Path(path), meta
        self._index: dict[bytes, tuple[Path, int]] = {}
        self._loaded: dict[Path, dict[str, np.ndarray]] = {}
        self._scan()

    # --- opening

    @classmethod
    def open(cls, path: str | Path, *, teacher: str, k: int, vocab_size: int) -> SignalStore:
        """The store at `path`, created for this teacher, k and vocabulary if it does not exist; an existing
        store made for another teacher, k or vocabulary is an error (it would serve wrong targets)."""
        path = Path(path)
        meta = {"format": FORMAT, "teacher": teacher, "k": int(k), "vocab_size": int(vocab_size),
                "id_bits": max(1, math.ceil(math.log2(max(2, vocab_size))))}
        if (path / "store.json").is_file():
            store = cls.read(path)
            for key in ("teacher", "k", "vocab_size"):
                if store.meta[key] != meta[key]:
                    raise DistillError(f"signal store {path}: made for {key} {store.meta[key]!r}, asked for "
                                       f"{meta[key]!r}; use another annotate.signals folder")
            return store
        path.mkdir(parents=True, exist_ok=True)
        _atomic_write(path / "store.json", json.dumps(meta, indent=2).encode())
        return cls(path, meta)

    @classmethod
    def read(cls, path: str | Path) -> SignalStore:
        path = Path(path)
        try:
            meta = json.loads((path / "store.json").read_text())
        except FileNotFoundError:
            raise DistillError(f"{path} is not a signal store (no store.json)") from None
        except json.JSONDecodeError as err:
            raise DistillError(f"signal store {path}: store.json is corrupt ({err})") from None
        if meta.get("format") != FORMAT:
            raise DistillError(f"signal store {path}: format {meta.get('format')!r}, this version reads {FORMAT!r}")
        missing = [k for k in ("teacher", "k", "vocab_size", "id_bits") if k not in meta]
        if missing:
            raise DistillError(f"signal store {path}: store.json lacks {', '.join(missing)}")
        return cls(path, meta)

    def _scan(self) -> None:
        for shard in sorted(self.path.glob("shard-*.npz")):
            try:  # only the keys: a shard's arrays are read when a row of it is asked for
                with np.load(shard, allow_pickle=False) as z:
                    keys = z["keys"]
            except Exception as err:  # zipfile/numpy raise several types for truncated or garbled files
                raise DistillError(f"signal store shard {shard} is unreadable: {type(err).__name__}: {err}") from None
            for i, key in enumerate(keys):
                self._index.setdefault(key.tobytes(), (shard, i))

    def _shard(self, shard: Path) -> dict[str, np.ndarray]:
        if shard not in self._loaded:
            try:
                with np.load(shard, allow_pickle=False) as z:
                    arrays = {key: z[key] for key in z.files}
            except Exception as err:  # zipfile/numpy raise several types for truncated or garbled files
                raise DistillError(f"signal store shard {shard} is unreadable: {type(err).__name__}: {err}") from None
            if any(key not in arrays for key in _SHARD_KEYS):
                raise DistillError(f"signal store shard {shard} lacks {[k for k in _SHARD_KEYS if k not in arrays]}")
            n = len(arrays["keys"])
            tokens = int(arrays["offsets"][-1]) if len(arrays["offsets"]) else -1
            if (len(arrays["offsets"]) != n + 1 or arrays["logprobs"].shape != (tokens, self.k)
                    or arrays["char_spans"].shape != (tokens, 2)):
                raise DistillError(f"signal store shard {shard} is corrupt: {n} rows, offsets "
                                   f"{arrays['offsets'].shape}, logprobs {arrays['logprobs'].shape}")
            arrays["ids"] = unpack_ids(arrays.pop("ids_packed"), tokens * self.k, self.meta["id_bits"]).reshape(tokens, self.k)
            self._loaded[shard] = arrays
        return self._loaded[shard]

    # --- facts

    @property
    def k(self) -> int:
        return int(self.meta["k"])

    def __contains__(self, key: bytes) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def shards(self) -> list[Path]:
        return sorted(self.path.glob("shard-*.npz"))

    # --- rows

    def get(self, keys: Sequence[bytes]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(logprobs float32 [L, k], ids int64 [L, k], char_spans int32 [L, 2]) per key."""
        out = []
        for key in keys:
            if key not in self._index:
                raise KeyError(f"signal store {self.path} has no row {key.hex()}")
            shard, i = self._index[key]
            a = self._shard(shard)
            s = slice(int(a["offsets"][i]), int(a["offsets"][i + 1]))
            out.append((a["logprobs"][s].astype(np.float32), a["ids"][s], a["char_spans"][s]))
        return out

    def add(self, keys: Sequence[bytes], rows: Sequence[tuple[Any, Any]], char_spans: Sequence[Any]) -> Path | None:
        """One new shard of rows ((logprobs [L, k], ids [L, k]) as tensors or arrays) with their character
        spans [L, 2]; rows already stored are skipped. Returns the shard written, or None."""
        new = [(key, r, c) for key, r, c in zip(keys, rows, char_spans, strict=True) if key not in self._index]
        new = list({key: (key, r, c) for key, r, c in new}.values())  # the same row twice in one batch
        if not new:
            return None
        lps, ids, spans = [], [], []
        for key, (lp, ix), cs in new:
            lp, ix, cs = _np(lp).astype(np.float16), _np(ix).astype(np.int64), _np(cs).astype(np.int32)
            if lp.shape != ix.shape or lp.ndim != 2 or lp.shape[1] != self.k or cs.shape != (lp.shape[0], 2):
                raise DistillError(f"signal store {self.path}: row {key.hex()} has logprobs {lp.shape}, ids "
                                   f"{ix.shape}, spans {cs.shape}; expected [L, {self.k}] twice and [L, 2]")
            if ix.size and (ix.min() < 0 or ix.max() >= self.meta["vocab_size"]):
                raise DistillError(f"signal store {self.path}: row {key.hex()} has ids outside the vocabulary "
                                   f"of {self.meta['vocab_size']}")
            lps.append(lp), ids.append(ix), spans.append(cs)
        offsets = np.zeros(len(new) + 1, dtype=np.int64)
        np.cumsum([len(x) for x in lps], out=offsets[1:])
        arrays = {"keys": np.frombuffer(b"".join(key for key, _, _ in new), dtype=np.uint8).reshape(-1, KEY_BYTES),
                  "offsets": offsets, "ids_packed": pack_ids(np.concatenate(ids), self.meta["id_bits"]),
                  "logprobs": np.concatenate(lps), "char_spans": np.concatenate(spans)}
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        data = buf.getvalue()
        shard = self.path / f"shard-{hashlib.sha256(data).hexdigest()[:16]}.npz"
        _atomic_write(shard, data)
        self._loaded.pop(shard, None)
        for i, (key, _, _) in enumerate(new):
            self._index.setdefault(key, (shard, i))
        return shard

    def summary(self) -> dict[str, Any]:
        """Size, bytes per token, k and coverage (the probability mass the kept top-k hold)."""
        shards = self.shards()
        tokens = rows = 0
        mass = []
        for shard in shards:
            a = self._shard(shard)
            rows += len(a["keys"])
            tokens += int(a["offsets"][-1])
            mass.append(np.exp(a["logprobs"].astype(np.float64)).sum(-1))
        size = sum(p.stat().st_size for p in shards)
        m = np.concatenate(mass) if mass else np.zeros(0)
        return {"path": str(self.path), "format": self.meta["format"], "teacher": self.meta["teacher"], "k": self.k,
                "vocab_size": self.meta["vocab_size"], "id_bits": self.meta["id_bits"], "shards": len(shards),
                "rows": rows, "tokens": tokens, "bytes": size,
                "bytes_per_token": size / tokens if tokens else None,
                "coverage_mean": float(m.mean()) if m.size else None,
                "coverage_p10": float(np.quantile(m, 0.1)) if m.size else None}


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
