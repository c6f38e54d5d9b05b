"""Hugging Face llama or Qwen2 folder -> GGUF, then llama.cpp's own quantizer.

Written with the `gguf` package's GGUFWriter, tensor-name map and SpecialVocab, following llama.cpp's
convert_hf_to_gguf.py for LlamaModel and Qwen2Model (the converter itself needs its bundled gguf-py, so it
is not a dependency). Files are written under a temporary name and renamed when complete.

`rewrite_metadata` sets key-value metadata of a finished file (e.g. `distill.*` keys once the evaluation
has chosen a threshold), copying its tensors unchanged (deployment/gguf_header.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from sdk.errors import DistillError

# model_type -> GGUF architecture. Only architectures whose tensor layout is handled below.
SUPPORTED = {"llama": "LLAMA", "qwen2": "QWEN2"}
# Architectures llama.cpp runs with NEOX-style rope (rotating the two halves of a head, as HF's
# rotate_half does): their Q/K weights are written as stored; llama's are permuted (see _permute_qk).
NEOX_ROPE = {"qwen2"}
# llama_ftype values (llama.h; the same as llama_cpp.LLAMA_FTYPE_MOSTLY_<name>). The K-quants work on
# rows of 256 values; llama.cpp's quantizer gives narrower tensors another type.
QUANT_TYPES = {"F16": 1, "Q8_0": 7, "Q6_K": 18, "Q5_K_M": 17, "Q4_K_M": 15, "Q4_0": 2, "Q3_K_M": 12, "Q2_K": 10}
# Qwen2's pre-tokenizer split (its tokenizer.json, DeepSeek-R1-Distill-Qwen's too), followed by a byte-level
# step without a regex of its own; llama.cpp knows it as pre-tokenizer "qwen2".
QWEN2_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""


def _permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    # HF stores rotary halves as [first half | second half]; GGML's rope expects them interleaved.
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _adds_bos(tok) -> bool:
    """Whether transformers' tokenizer puts a BOS token in front of a text (add_special_tokens=True)."""
    bos = tok.bos_token_id
    with_special, plain = tok("a")["input_ids"], tok("a", add_special_tokens=False)["input_ids"]
    return bos is not None and with_special[:1] == [bos] and plain[:1] != [bos]


def _known_pre_tokenizer(tok) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer where it is recognised here ("qwen2"),
    else "default"."""
    pre = json.loads(tok.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [(s.get("type"), s.get("pattern", {}).get("Regex"), s.get("use_regex"), s.get("add_prefix_space"))
             for s in steps]
    if kinds == [("Split", QWEN2_SPLIT, None, None), ("ByteLevel", None, False, False)]:
        return "qwen2"
    return "default"


def _sliding_layers(cfg: Mapping[str, Any]) -> list[int]:
    """Layers transformers runs with sliding-window attention (Qwen2's use_sliding_window); llama.cpp's
    qwen2 attends to the whole context in every layer."""
    if "layer_types" in cfg:
        return [i for i, kind in enumerate(cfg["layer_types"]) if kind == "sliding_attention"]
    if cfg.get("use_sliding_window") and cfg.get("sliding_window") is not None:
        return list(range(cfg.get("max_window_layers", 0), cfg["num_hidden_layers"]))
    return []


def _vocab(tok, vocab_size: int):
    """Tokens and token types as llama.cpp's converter lists them for a BPE (gpt2-style) tokenizer."""
    import gguf

    reverse = {i: t for t, i in tok.get_vocab().items()}
    added = tok.get_added_vocab()
    decoder = tok.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif reverse[i] in added:
            tokens.append(reverse[i])
            special = decoder[i].special if i in decoder else False
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def write_gguf(model_dir: Path, out_path: Path, dtype: str = "F16", pre_tokenizer: str | None = None, *,
               chat_template: bool = True, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write an unquantized (F32 or F16) GGUF of a llama or Qwen2 HF folder; returns out_path.

    pre_tokenizer: llama.cpp's name for the tokenizer's pre-tokenizer (e.g. kept from the GGUF a model came
    from); None: "qwen2" for Qwen2's split, else "default".

    chat_template=False leaves out the tokenizer's chat template: a model trained on raw prompts must not
    advertise a chat format (llama.cpp servers and clients would wrap inputs in it). `metadata`: extra
    key-values (str, bool, int, float), e.g. the `distill.*` facts of the task; llama.cpp's quantizer
    copies them into every quantized file.
    """
    import gguf
    from transformers import AutoTokenizer

    model_dir, out_path = Path(model_dir), Path(out_path)
    cfg = json.loads((model_dir / "config.json").read_text())
    if cfg.get("model_type") not in SUPPORTED:
        raise DistillError(f"GGUF export supports model types {sorted(SUPPORTED)}, "
                           f"not {cfg.get('model_type')!r} ({model_dir / 'config.json'})")
    if dtype not in ("F32", "F16"):
        raise ValueError("write_gguf writes F32 or F16; quantize() makes the other types")
    arch = getattr(gguf.MODEL_ARCH, SUPPORTED[cfg["model_type"]])
    n_layer, n_head = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_head)
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    # transformers >= 5 writes rope_parameters; older configs rope_theta and rope_scaling (type or rope_type)
    rope, scaling = cfg.get("rope_parameters") or {}, cfg.get("rope_scaling") or {}
    rope_theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
    rope_type = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type != "default":
        raise DistillError(f"GGUF export: rope_type {rope_type!r} is not handled ({model_dir})")
    if sliding := _sliding_layers(cfg):
        raise DistillError(f"GGUF export: layers {sliding} use sliding-window attention, which llama.cpp's "
                           f"{cfg['model_type']} does not ({model_dir / 'config.json'})")
    if cfg["model_type"] == "qwen2" and n_head * head_dim != cfg["hidden_size"]:  # llama.cpp: q is n_embd x n_embd
        raise DistillError(f"GGUF export: llama.cpp's qwen2 needs heads x head_dim = hidden_size, not "
                           f"{n_head} x {head_dim} != {cfg['hidden_size']} ({model_dir / 'config.json'})")
    if cfg.get("hidden_act", "silu") != "silu":  # llama.cpp's llama and qwen2 graphs use SiLU
        raise DistillError(f"GGUF export: hidden_act {cfg['hidden_act']!r} is not handled ({model_dir})")
    permute = cfg["model_type"] not in NEOX_ROPE

    tmp = out_path.with_name(out_path.name + ".tmp")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[arch])
    w.add_name(model_dir.name)
    w.add_context_length(cfg.get("max_position_embeddings", 2048))
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(n_layer)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(float(rope_theta))
    w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    w.add_rope_dimension_count(head_dim)
    if head_dim != cfg["hidden_size"] // n_head:  # llama.cpp's default is n_embd / n_head
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "F32" else gguf.LlamaFileType.MOSTLY_F16)
    w.add_vocab_size(cfg["vocab_size"])

    tok = AutoTokenizer.from_pretrained(model_dir)
    tokens, types = _vocab(tok, cfg["vocab_size"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre_tokenizer or _known_pre_tokenizer(tok))
    w.add_token_list(tokens)
    w.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))
    # llama.cpp's tokenize(add_special=True) then adds a BOS exactly when the tokenizer the SDK uses does,
    # so a prompt tokenised by llama.cpp gets the ids the data stage gave it
    special.add_special_token["bos"] = _adds_bos(tok)
    if not chat_template:
        special.chat_template = None
    special.add_to_gguf(w, quiet=True)
    for key, value in (metadata or {}).items():
        w.add_key_value(key, value, _value_type(key, value))

    names = gguf.get_tensor_name_map(arch, n_layer)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise DistillError(f"no *.safetensors weights in {model_dir}")
    for f in files:
        with safe_open(f, framework="numpy") as st:
            for key in st.keys():
                t = st.get_tensor(key)
                if key == "lm_head.weight" and cfg.get("tie_word_embeddings"):
                    continue  # llama.cpp reuses token_embd for tied output
                name = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise DistillError(f"GGUF export: no GGUF name for tensor {key!r} ({f})")
                if permute and key.endswith(("q_proj.weight", "q_proj.bias")):
                    t = _permute_qk(t, n_head)
                elif permute and key.endswith(("k_proj.weight", "k_proj.bias")):
                    t = _permute_qk(t, n_kv)
                # 1-D tensors (norms) stay F32, as llama.cpp's converter keeps them
                t = t.astype(np.float16 if dtype == "F16" and t.ndim > 1 else np.float32)
                w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, out_path)
    return out_path


def _value_type(key: str, value: Any):
    """The GGUF type of a plain metadata value (bool before int: a bool is an int in Python)."""
    import gguf

    for kind, vtype in ((bool, gguf.GGUFValueType.BOOL), (int, gguf.GGUFValueType.INT64),
                        (float, gguf.GGUFValueType.FLOAT64), (str, gguf.GGUFValueType.STRING)):
        if isinstance(value, kind):
            return vtype
    raise TypeError(f"GGUF metadata {key!r}: values must be str, bool, int or float, got {type(value).__name__}")


def read_metadata(path: Path, prefix: str = "") -> dict[str, Any]:
    """Scalar and array key-values of a GGUF file whose key starts with `prefix` (arrays as lists)."""
    from deployment.gguf_header import read_metadata as read

    return read(path, prefix)


def rewrite_metadata(path: Path, set_keys: Mapping[str, Any], remove: Sequence[str] = ()) -> Path:
    """Set (or replace) key-values of a GGUF file and drop the keys in `remove`, in place and atomically: a copy
    with the new metadata and the same tensor bytes is written beside it, then renamed over it."""
    from deployment.gguf_header import GgufFile, rewrite

    with GgufFile(path) as g:
        if "general.architecture" not in g.header.kv:
            raise DistillError(f"{path}: not a model GGUF (no general.architecture)")
    return rewrite(path, set_keys, remove)


def quantize(src: Path, dst: Path, qtype: str, threads: int | None = None) -> Path:
    """Quantize with llama.cpp's own quantizer, in a child process (keeps llama.cpp's threads
    out of the torch process)."""
    if qtype not in QUANT_TYPES:
        raise DistillError(f"unknown GGUF quant type {qtype!r} (known: {', '.join(QUANT_TYPES)})")
    tmp = dst.with_name(dst.name + ".tmp")
    cmd = [sys.executable, "-m", "deployment.gguf", str(src), str(tmp), qtype, str(threads or os.cpu_count())]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"llama.cpp quantization to {qtype} failed:\n{proc.stderr[-2000:]}")
    os.replace(tmp, dst)
    return dst


def tensor_names(model_dir: Path) -> dict[str, str]:
    """HF weight name -> the GGUF tensor that write_gguf makes of it (a tied lm_head maps to token_embd, which
    llama.cpp reuses as the output)."""
    import gguf

    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    if cfg.get("model_type") not in SUPPORTED:
        raise DistillError(f"GGUF export supports model types {sorted(SUPPORTED)}, not {cfg.get('model_type')!r}")
    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, SUPPORTED[cfg["model_type"]]),
                                     cfg["num_hidden_layers"])
    out = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(f, framework="numpy") as st:
            for key in st.keys():
                name = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if key == "lm_head.weight" and cfg.get("tie_word_embeddings"):
                    name = names.get_name("model.embed_tokens.weight", try_suffixes=(".weight",))
                if name is not None:
                    out[key] = name
    return out


def quantized_tensor_types(model_dir: Path, qtype: str, threads: int | None = None) -> dict[str, str]:
    """HF weight name -> the ggml type (e.g. "Q4_K", "Q6_K", "Q5_0", "F32") llama.cpp's quantizer gives it
    when this model is quantized to `qtype`. Asked of llama.cpp itself (an F16 file quantized in a
    temporary folder) rather than re-derived: its per-tensor choices (the _M mixes' higher-bit layers, the
    types for rows that are not a multiple of 256) change between versions."""
    import tempfile

    import gguf

    with tempfile.TemporaryDirectory(prefix="distill-gguf-types-") as tmp:
        f16 = write_gguf(Path(model_dir), Path(tmp) / "model-F16.gguf", "F16", chat_template=False)
        types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(
            quantize(f16, Path(tmp) / f"model-{qtype}.gguf", qtype, threads)).tensors}
    return {key: types[name] for key, name in tensor_names(model_dir).items() if name in types}


def _quantize_main(src: str, dst: str, qtype: str, threads: str) -> int:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_TYPES[qtype]
    params.nthread = int(threads)
    return int(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))


if __name__ == "__main__":
    sys.exit(_quantize_main(*sys.argv[1:5]))
