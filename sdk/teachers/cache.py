"""A resumable, append-only cache of teacher outputs, keyed so that it never serves a stale answer.

One JSONL file per (teacher identity, generation parameters); one line per prompt, keyed by a hash of
the prompt's token ids. Lines are appended and flushed as each batch finishes, so an interrupted
annotation resumes where it stopped; a torn last line (a crash mid-write) is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdk.rundir import stable_hash


def prompt_key(prompt_ids: Sequence[int]) -> str:
    return hashlib.sha256(json.dumps(list(prompt_ids)).encode()).hexdigest()[:24]


class CompletionCache:
    def __init__(self, root: Path, teacher_id: str, params: dict[str, Any]):
        self.path = Path(root) / f"{teacher_id}-{stable_hash(params)}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._entries: dict[str, Any] = {}
        if self.path.is_file():
            with open(self.path) as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a torn line from an interrupted write
                    self._entries[rec["key"]] = rec["value"]

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, prompt_ids: Sequence[int]) -> Any | None:
        return self._entries.get(prompt_key(prompt_ids))

    def put_many(self, items: list[tuple[Sequence[int], Any]]) -> None:
        with open(self.path, "a") as f:
            for prompt_ids, value in items:
                key = prompt_key(prompt_ids)
                self._entries[key] = value
                f.write(json.dumps({"key": key, "value": value}) + "\n")
            f.flush()
            os.fsync(f.fileno())


def teacher_identity(model_dir: Path, adapter_dir: Path | None) -> str:
    """Content identity of a teacher: hashes of its weight, config and tokenizer files (and adapter)."""
    h = hashlib.sha256()
    for folder in [p for p in (model_dir, adapter_dir) if p is not None]:
        for f in sorted(Path(folder).rglob("*")):
            if f.is_file() and f.suffix in (".safetensors", ".json", ".gguf", ".txt", ".model"):
                h.update(f.name.encode())
                with open(f, "rb") as fh:
                    while block := fh.read(1 << 22):
                        h.update(block)
    return h.hexdigest()[:16]
