"""The run folder's one I/O layer: atomic writes (text, JSON, tensors, tables, folders), the manifest
(versions, seeds, hashes, timings), stage bookkeeping, and the splits and tokenised prompts that every
stage reads (read once per process, written once by the data stage)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from sdk.errors import DistillError, speaks_python

PACKAGES = ("distill-sdk", "torch", "transformers", "peft", "gguf", "llama_cpp_python", "scikit-learn",
            "pandas", "numpy")


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def remove_orphaned_temporaries(folder: Path) -> int:
    """Delete the temporary files atomic_write left in `folder` when its process was killed mid-write (SIGKILL,
    power loss): `.name.<pid>.<thread>.tmp` of a process that no longer runs (a checkpoint's is the size of the
    model). Live writers' files are kept. Returns the bytes freed."""
    freed = 0
    for tmp in Path(folder).glob(".*.tmp"):
        parts = tmp.name.split(".")
        if len(parts) < 5 or not parts[-3].isdigit():
            continue
        pid = int(parts[-3])
        try:
            os.kill(pid, 0)
            continue  # a process of that id runs (maybe the writer): keep its file
        except ProcessLookupError:
            pass
        except PermissionError:  # another user's process of that id
            continue
        try:
            freed += tmp.stat().st_size
            tmp.unlink()
        except FileNotFoundError:
            pass
    return freed


def atomic_write(path: Path, write) -> Path:
    """write(tmp_path) then rename into place: a crash never leaves a half-written file at `path`, and a
    power loss never leaves the new name on unwritten data (the file, then its folder, are synced). The
    temporary name is the writer's own, so two processes writing the same file never share one."""
    path = Path(path)
    if path.is_dir():
        raise DistillError(f"cannot write {path}: it is a folder (give a file name)")
    if path.parent.exists() and not path.parent.is_dir():
        raise DistillError(f"cannot write {path}: {path.parent} is a file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # a platform without directory handles (Windows): the rename is as durable as it gets
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_dir(tmp: Path, final: Path) -> None:
    """Move a completed folder into place, replacing an older one."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    return out


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def machine() -> dict[str, Any]:
    """What decides the numbers besides seeds and versions: the thread counts (float sums are reduced in
    another order with other counts), the CPU's instruction set (torch picks other kernels with AVX-512 or
    AMX) and the GPU. Runs on the same machine, threads and versions are bit-identical
    (tests/sdk/distill/test_recipe_mechanics.py); across machines they are not (docs/distillation.md)."""
    import torch

    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    out: dict[str, Any] = {"cpu": model, "cpu_flags": [f for f in ISA_FLAGS if f in flags],
                           "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                           "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
                           "cpu_count": os.cpu_count(), "platform": platform.platform()}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        out["cuda"] = torch.version.cuda
    return out


def rerun_command(root: Path) -> str:
    """The command that runs a run folder's project again into the same folder (finished stages are kept): the
    CLI's, or the Python call when the Python API asked (sdk.errors.speaking)."""
    if speaks_python():
        return f"`Project.from_yaml({str(Path(root) / 'config.yaml')!r}).run(out={str(root)!r})`"
    return f"`distill run {Path(root) / 'config.yaml'} --out {root}`"


def _load_json(path: Path, root: Path) -> Any:
    """A run folder's JSON file; a missing or damaged one is named (a stage wrote it, so the fix is a re-run)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DistillError(f"{path} is missing: the stage that writes it has not run to the end; run "
                           f"{rerun_command(root)}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DistillError(f"{path} is damaged (not valid JSON: {err}); delete it and run {rerun_command(root)} to "
                           "rewrite it") from None


class RunDir:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.root / "manifest.json"
        self.manifest: dict[str, Any] = (_load_json(self.manifest_path, self.root) if self.manifest_path.is_file()
                                         else {"stages": {}})
        if not isinstance(self.manifest, dict) or not isinstance(self.manifest.get("stages", {}), dict):
            raise DistillError(f"{self.manifest_path}: not a run manifest (expected an object with `stages`); the "
                               "run folder is damaged: move the file aside and run again (every stage re-runs)")

        self._cache: dict[str, Any] = {}

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def forget(self) -> None:
        """Drop what was read: a stage has just replaced files."""
        self._cache.clear()

    # ---- typed reads and atomic writes
    def write_json(self, rel: str | Path, obj: Any) -> Path:
        path = self.root / rel
        atomic_write_text(path, json.dumps(obj, indent=2, default=str))
        self._cache.pop(str(rel), None)
        return path

    def read_json(self, rel: str | Path) -> Any:
        key = str(rel)
        if key not in self._cache:
            self._cache[key] = _load_json(self.root / rel, self.root)
        return self._cache[key]

    def write_torch(self, rel: str | Path, obj: Any) -> Path:
        import torch

        return atomic_write(self.root / rel, lambda tmp: torch.save(obj, tmp))

    def read_torch(self, rel: str | Path) -> Any:
        import torch

        return torch.load(self.root / rel, weights_only=True)

    # ---- what the data stage writes once and every later stage reads
    SPLITS = ("train", "val", "test")

    def splits(self) -> dict[str, Any]:
        """{split: DataFrame}, read once per process."""
        if "splits" not in self._cache:
            import pandas as pd

            self._cache["splits"] = {s: pd.read_parquet(self.root / "data" / f"{s}.parquet") for s in self.SPLITS}
        return self._cache["splits"]

    def prompts(self) -> dict[str, list[list[int]]]:
        """{split: token ids of every row's prompt}, tokenised once by the data stage."""
        return self.read_json("data/prompts.json")

    def prompt_texts(self) -> dict[str, list[str]]:
        """{split: every row's prompt as the template wrote it (before any chat template)}: what an API
        teacher is sent."""
        return self.read_json("data/texts.json")

    def task(self) -> dict[str, Any]:
        """Facts of the task for this tokenizer (shape, label token ids, eos ids), written by the data stage."""
        return self.read_json("data/task.json")

    def tmp_dir(self, name: str) -> Path:
        """A fresh temporary folder beside `name`, to be moved into place with replace_dir."""
        tmp = self.root / f".{name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp

    def checkpoint_dir(self, stage: str, key: str) -> Path:
        """checkpoints/<stage>-<input hash>: a run resumes only from a checkpoint of the same inputs;
        checkpoints of other inputs (an earlier config) are removed."""
        root = self.root / "checkpoints"
        for old in root.glob(f"{stage}-*"):
            if old.name != f"{stage}-{key}":
                shutil.rmtree(old, ignore_errors=True)
        return root / f"{stage}-{key}"

    def drop_checkpoints(self, key: str) -> int:
        """Remove the checkpoints a finished stage wrote (all keyed by its input hash); bytes freed. They only
        serve to resume that stage, whose outputs now exist."""
        freed = 0
        for d in (self.root / "checkpoints").glob(f"*-{key}"):
            freed += sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
            shutil.rmtree(d, ignore_errors=True)
        return freed

    def discard_partials(self) -> None:
        for p in self.root.glob(".*.partial"):
            shutil.rmtree(p, ignore_errors=True)

    def is_done(self, stage: str, inputs_hash: str, outputs: list[Path]) -> bool:
        rec = self.manifest["stages"].get(stage)
        return bool(rec and rec.get("hash") == inputs_hash and all(p.exists() for p in outputs))

    def record(self, stage: str, inputs_hash: str, seconds: float, **info: Any) -> None:
        self.manifest["stages"][stage] = {"hash": inputs_hash, "seconds": round(seconds, 2),
                                          "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
        self.save()

    def unrecord(self, stages: list[str]) -> None:
        """Forget that these stages finished (persisted at once): called before a stage runs, for it and every
        stage below it, so a run killed before they finish again never finds them up to date with outputs
        made from the stage's old outputs."""
        dropped = [s for s in stages if self.manifest["stages"].pop(s, None) is not None]
        if dropped:
            self.save()

    def save(self, **top: Any) -> None:
        self.manifest.update(top)
        atomic_write_text(self.manifest_path, json.dumps(self.manifest, indent=2, default=str))
