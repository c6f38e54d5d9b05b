"""A content-addressed, resumable cache of teacher answers, in one SQLite file.

Keyed by a hash of the teacher's identity, the generation parameters and the request itself (the prompt's
token ids for a local teacher, the exact request body for an API), so a changed teacher or setting never
gets an old answer. Each answer is committed as soon as it arrives (a killed process loses at most the
requests in flight) and stored with a digest of its value: a corrupt or truncated entry is detected on
read, dropped and fetched again, never served. A cache file that SQLite cannot open is moved aside.
SQLite because it is one file with transactions that several threads and processes can share.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdk.errors import DistillError
from sdk.rundir import stable_hash

CACHE_FILE = "teacher-cache.sqlite"


def _not_a_database(err: sqlite3.DatabaseError) -> bool:
    """SQLITE_NOTADB (26) or SQLITE_CORRUPT (11), extended codes included; Python 3.10 gives no code, so its
    message is read."""
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (11, 26)
    return any(m in str(err) for m in ("file is not a database", "database disk image is malformed"))


def request_key(namespace: Any, request: Any) -> str:
    return hashlib.sha256(json.dumps([namespace, request], sort_keys=True, default=str).encode()).hexdigest()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class ResponseCache:
    """get(key) -> value or None; put(key, value) commits at once. Safe to share between threads."""

    def __init__(self, path: Path, busy_timeout_s: float = 60.0):
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s  # how long to wait for another process's write
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dropped = 0  # corrupt entries found (and removed) since opening
        self._lock = threading.Lock()
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as err:
            # only a file that is not a database (truncated or overwritten) is moved aside; a locked, full or
            # unreachable cache of paid answers is an error to report, not a reason to start empty
            if not _not_a_database(err):
                raise DistillError(f"teacher cache {self.path}: {err} (nothing was moved or deleted)") from None
            stamp = int(time.time())
            for suffix in ("", "-wal", "-shm"):  # the WAL files belong to the old file, not to a new one
                part = self.path.with_name(self.path.name + suffix)
                if part.exists():
                    part.rename(part.with_name(f"{self.path.name}.corrupt-{stamp}{suffix}"))
            warnings.warn(f"teacher cache {self.path} was unreadable ({err}); moved to "
                          f"{self.path.name}.corrupt-{stamp}, starting empty", stacklevel=2)
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.busy_timeout_s, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")  # readers and one writer at a time, across processes
        db.execute("PRAGMA synchronous=FULL")  # a committed answer survives a crash
        db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                   "digest TEXT NOT NULL, created REAL NOT NULL)")
        db.execute("SELECT count(*) FROM answers").fetchone()
        return db

    def get(self, key: str) -> Any | None:
        with self._lock:
            row = self._db.execute("SELECT value, digest FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        value, digest = row
        try:
            if _digest(value) != digest:
                raise ValueError("digest mismatch")
            return json.loads(value)
        except ValueError:  # corrupt or truncated: never served, fetched again
            with self._lock:
                self._db.execute("DELETE FROM answers WHERE key = ?", (key,))
            self.dropped += 1
            return None

    def put(self, key: str, value: Any) -> None:
        text = json.dumps(value)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)", (key, text, _digest(text), time.time()))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self._db.close()


class CompletionCache:
    """A local teacher's completions per tokenised prompt, under one (teacher, parameters) namespace."""

    def __init__(self, root: Path, teacher_id: str, params: dict[str, Any]):
        self.store = ResponseCache(Path(root) / CACHE_FILE)
        self.namespace = ["local-completions", teacher_id, stable_hash(params)]

    def get(self, prompt_ids: Sequence[int]) -> Any | None:
        return self.store.get(request_key(self.namespace, list(prompt_ids)))

    def put_many(self, items: list[tuple[Sequence[int], Any]]) -> None:
        for prompt_ids, value in items:
            self.store.put(request_key(self.namespace, list(prompt_ids)), value)


def teacher_identity(model_dir: Path, adapter_dir: Path | None) -> str:
    """Content identity of a teacher: every file of its folder (and adapter's) with its relative path, so
    any change of weights (safetensors or .bin), config, tokenizer, chat template or remote code is a new
    teacher. Hidden entries (a hub download's .cache/ metadata with timestamps) are left out."""
    h = hashlib.sha256()
    for role, folder in enumerate(p for p in (model_dir, adapter_dir) if p is not None):
        folder = Path(folder)
        for f in sorted(folder.rglob("*")):
            rel = f.relative_to(folder)
            if not f.is_file() or any(part.startswith(".") for part in rel.parts):
                continue
            h.update(f"{role}/{rel.as_posix()}\0{f.stat().st_size}\0".encode())
            with open(f, "rb") as fh:
                while block := fh.read(1 << 22):
                    h.update(block)
    return h.hexdigest()[:16]
