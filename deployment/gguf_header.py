"""A GGUF file's header (key-values and tensor infos) read and rewritten without touching its tensor data.

Hand-rolled over the GGUF layout (llama.cpp's docs/gguf.md) because gguf-py's GGUFReader builds a numpy
memmap view for every element of every array while it parses: 4.6 s for the SmolLM2 vocabulary's 49k
tokens and 48k merges, paid by every read of a student's metadata and by the package stage once per file
(eight files in a run with QAD twins). This reads the same header in tens of milliseconds; the values are
those of gguf-py's `ReaderField.contents()` (tests/deployment/test_gguf_header.py holds it to that, and to
llama.cpp loading the rewritten file). Little-endian files only (llama.cpp's own writers on every
little-endian host); a big-endian file is refused with its name.
"""

from __future__ import annotations

import mmap
import os
import shutil
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdk.errors import DistillError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# GGUF value types (gguf.GGUFValueType) -> struct format of a scalar of that type
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
BOOL, INT64, FLOAT64 = 7, 11, 12


@dataclass
class Header:
    version: int
    kv: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # key -> (entry start, value start, end)
    tensors: list[tuple[str, tuple[int, ...], int]] = field(default_factory=list)  # (name, dims, ggml type)
    tensor_infos: tuple[int, int] = (0, 0)  # byte span of the tensor infos
    data_offset: int = 0


def _string(buf, off: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<Q", buf, off)
    return bytes(buf[off + 8:off + 8 + n]).decode("utf-8"), off + 8 + n


def _skip(buf, off: int, vtype: int) -> int:
    if vtype in SCALARS:
        return off + struct.calcsize(SCALARS[vtype])
    if vtype == STRING:
        return off + 8 + struct.unpack_from("<Q", buf, off)[0]
    if vtype == ARRAY:
        itype, count = struct.unpack_from("<IQ", buf, off)
        off += 12
        if itype in SCALARS:
            return off + count * struct.calcsize(SCALARS[itype])
        for _ in range(count):  # strings or nested arrays: each carries its own length
            off = _skip(buf, off, itype)
        return off
    raise ValueError(f"unknown GGUF value type {vtype}")


def _value(buf, off: int, vtype: int) -> Any:
    if vtype in SCALARS:
        return struct.unpack_from("<" + SCALARS[vtype], buf, off)[0]
    if vtype == STRING:
        return _string(buf, off)[0]
    itype, count = struct.unpack_from("<IQ", buf, off)
    off += 12
    if itype in SCALARS:
        return list(struct.unpack_from(f"<{count}{SCALARS[itype]}", buf, off))
    out = []
    for _ in range(count):
        out.append(_value(buf, off, itype))
        off = _skip(buf, off, itype)
    return out


def _parse(buf, path: Path) -> Header:
    if bytes(buf[:4]) != MAGIC:
        raise DistillError(f"{path}: not a GGUF file (no GGUF magic)")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
    if version & 0xFFFF == 0:
        raise DistillError(f"{path}: a big-endian GGUF; only little-endian files are supported")
    head, off = Header(version), 24
    try:
        for _ in range(n_kv):
            start = off
            key, off = _string(buf, off)
            (vtype,) = struct.unpack_from("<I", buf, off)
            off = _skip(buf, off + 4, vtype)
            head.kv[key] = (start, start + 8 + len(key.encode()) + 4, off)
        ti_start = off
        for _ in range(n_tensors):
            name, off = _string(buf, off)
            (n_dims,) = struct.unpack_from("<I", buf, off)
            dims = struct.unpack_from(f"<{n_dims}Q", buf, off + 4)
            (ggml_type,) = struct.unpack_from("<I", buf, off + 4 + 8 * n_dims)
            off += 4 + 8 * n_dims + 4 + 8
            head.tensors.append((name, tuple(dims), ggml_type))
    except (struct.error, ValueError, UnicodeDecodeError) as e:
        raise DistillError(f"{path}: malformed GGUF header ({e})") from e
    head.tensor_infos = (ti_start, off)
    align = int(value(buf, head, "general.alignment") or DEFAULT_ALIGNMENT)
    head.data_offset = off + (-off) % align
    return head


def value(buf, head: Header, key: str) -> Any:
    """The value of `key` (None when absent): as gguf-py's ReaderField.contents() gives it."""
    if key not in head.kv:
        return None
    start, vstart, _ = head.kv[key]
    (vtype,) = struct.unpack_from("<I", buf, vstart - 4)
    return _value(buf, vstart, vtype)


class GgufFile:
    """A GGUF file's header, memory-mapped: `with GgufFile(path) as g: g.metadata(), g.tensors`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = open(self.path, "rb")
        try:
            self.buf = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            self.header = _parse(self.buf, self.path)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> GgufFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "buf", None) is not None:
            self.buf.close()
            self.buf = None
        self._file.close()

    @property
    def tensors(self) -> list[tuple[str, tuple[int, ...], int]]:
        return self.header.tensors

    def metadata(self, prefix: str = "") -> dict[str, Any]:
        return {k: value(self.buf, self.header, k) for k in self.header.kv if k.startswith(prefix)}


def read_metadata(path: Path, prefix: str = "") -> dict[str, Any]:
    with GgufFile(path) as g:
        return g.metadata(prefix)


def encode_kv(key: str, value: Any) -> bytes:
    """One key-value entry (bool, int as INT64, float as FLOAT64, str); TypeError names the key otherwise."""
    k = key.encode()
    head = struct.pack("<Q", len(k)) + k
    if isinstance(value, bool):  # before int: a bool is an int in Python
        return head + struct.pack("<IB", BOOL, value)
    if isinstance(value, int):
        return head + struct.pack("<Iq", INT64, value)
    if isinstance(value, float):
        return head + struct.pack("<Id", FLOAT64, value)
    if isinstance(value, str):
        v = value.encode()
        return head + struct.pack("<IQ", STRING, len(v)) + v
    raise TypeError(f"GGUF metadata {key!r}: values must be str, bool, int or float, got {type(value).__name__}")


def rewrite(path: Path, set_keys: Mapping[str, Any], remove: Sequence[str] = ()) -> Path:
    """Set (or replace) key-values and drop the keys in `remove`, in place and atomically: the other entries,
    the tensor infos and the tensor data are copied byte for byte into a file beside it, renamed over it.
    Tensor offsets are relative to the data section, so only the padding before it changes."""
    path = Path(path)
    new = b"".join(encode_kv(k, v) for k, v in set_keys.items())  # a bad value raises before any write
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with GgufFile(path) as g, open(tmp, "wb") as out:
            h, buf = g.header, g.buf
            kept = [span for k, span in h.kv.items() if k not in set_keys and k not in remove]
            align = int(value(buf, h, "general.alignment") or DEFAULT_ALIGNMENT)
            out.write(MAGIC + struct.pack("<IQQ", h.version, len(h.tensors), len(kept) + len(set_keys)))
            for start, _, end in kept:
                out.write(buf[start:end])
            out.write(new)
            out.write(buf[h.tensor_infos[0]:h.tensor_infos[1]])
            out.write(b"\0" * (-out.tell() % align))
            g._file.seek(h.data_offset)
            shutil.copyfileobj(g._file, out, 16 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
