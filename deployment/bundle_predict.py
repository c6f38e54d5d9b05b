#!/usr/bin/env python3
"""Decisions from this bundle's model, with nothing of distill-sdk installed.

Needs numpy, tokenizers and the artifact's runtime: llama-cpp-python (GGUF) or onnxruntime (ONNX); see
requirements.txt. Shipped as predict.py in every bundle written by `distill bundle` (sdk.bundle).

    python predict.py rows.jsonl [--artifact NAME] [--out decisions.jsonl] [--threads N]
    python predict.py --prompts prompts.txt     # one prompt per line, already built
    python predict.py --verify                  # check every file against SHA256SUMS

Each output line: the row's index, the label probabilities, `score` (the last label's probability: what the
threshold is applied to), `decision` (label index) and `label` (its word). The rule is bundle.json's
`decision_rule`, with the artifact's threshold chosen on validation when the run was evaluated.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def verify(root: Path = HERE) -> list[str]:
    """Files whose SHA-256 differs from SHA256SUMS (empty: all intact)."""
    bad = []
    for line in (root / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(None, 1)
        h = hashlib.sha256()
        with open(root / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        if h.hexdigest() != digest:
            bad.append(name)
    return bad


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class GgufScorer:
    def __init__(self, path: Path, threads: int | None, n_ctx: int):
        import llama_cpp
        from llama_cpp import Llama

        # a llama.cpp built with its AMX kernels (-march=native on newer Xeons) segfaults on quantized models
        # (ggml-org/llama.cpp#20824): say so and how to rebuild, rather than die without a message
        if ("AMX_INT8 = 1" in llama_cpp.llama_print_system_info().decode(errors="replace")
                and os.environ.get("DISTILL_ALLOW_LLAMA_AMX") != "1"):
            flags = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
            sys.exit("llama-cpp-python was built with llama.cpp's AMX kernels, which crash on quantized models; "
                     f"reinstall it without them: CMAKE_ARGS=\"-DCMAKE_C_FLAGS='{flags}' -DCMAKE_CXX_FLAGS='{flags}'\" "
                     "pip install --force-reinstall --no-deps --no-cache-dir llama-cpp-python (or set "
                     "DISTILL_ALLOW_LLAMA_AMX=1 where they are known to work)")
        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_threads=threads or os.cpu_count(),
                         n_threads_batch=threads or os.cpu_count(), logits_all=False, verbose=False,
                         type_k=0, type_v=0)  # the KV cache in F32 (GGML_TYPE_F32), as the SDK evaluated and serves

    def label_probs(self, ids: list[int], label_ids: list[int]) -> np.ndarray:
        import llama_cpp

        self.llm.reset()
        self.llm.eval(ids)
        row = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)  # the last position's logits
        return _softmax(np.array([row[i] for i in label_ids], dtype=np.float64))


class OnnxScorer:
    def __init__(self, path: Path, threads: int | None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = ort.InferenceSession(str(path / "decision.onnx"), opts, providers=providers)

    def label_probs(self, ids: list[int], label_ids: list[int]) -> np.ndarray:
        x = np.array([ids], dtype=np.int64)
        logits = self.session.run(None, {"input_ids": x, "attention_mask": np.ones_like(x)})[0][0]
        return _softmax(logits[label_ids].astype(np.float64))


def open_scorer(spec: dict, threads: int | None, longest: int):
    path = HERE / spec["path"]
    if spec["format"] == "gguf":
        return GgufScorer(path, threads, max(512, longest + 8))
    if spec["format"] == "onnx":
        return OnnxScorer(path, threads)
    raise SystemExit(f"artifact format {spec['format']!r} is not runnable by this script")


def tokenize(texts: list[str], chat: bool) -> list[list[int]]:
    """Token ids as the run made them: the tokenizer's special tokens added (raw prompts), or a chat template's
    user turn rendered first (which then holds its special tokens)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(HERE / "tokenizer" / "tokenizer.json"))
    if not chat:
        return [e.ids for e in tok.encode_batch(texts, add_special_tokens=True)]
    import jinja2  # a chat template is Jinja: the same renderer transformers uses

    cfg = json.loads((HERE / "tokenizer" / "tokenizer_config.json").read_text())
    template = cfg.get("chat_template") or (HERE / "tokenizer" / "chat_template.jinja").read_text()
    render = jinja2.Environment(trim_blocks=True, lstrip_blocks=True).from_string(template).render
    rendered = [render(messages=[{"role": "user", "content": t}], add_generation_prompt=True,
                       bos_token=cfg.get("bos_token") or "", eos_token=cfg.get("eos_token") or "") for t in texts]
    return [e.ids for e in tok.encode_batch(rendered, add_special_tokens=False)]


def decide(probs: np.ndarray, threshold: float | None) -> int:
    """Two labels and a threshold: the last label when its probability reaches it; else the most probable."""
    if len(probs) == 2 and threshold is not None:
        return int(probs[1] >= threshold)
    return int(np.argmax(probs))


class BadInput(ValueError):
    """Input this script cannot use (a file, a row, an argument): exit code 2 from the command line."""


def read_rows(path: Path) -> list[dict]:
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise BadInput(f"{path}: line {n} is not JSON: {err}") from None
            if not isinstance(row, dict):
                raise BadInput(f"{path}: line {n} is not a JSON object")
            rows.append(row)
    return rows


def prompts_from_rows(rows: list[dict], bundle: dict, source: str) -> list[str]:
    if not (HERE / "prompt.py").is_file():
        raise BadInput("this bundle has no prompt.py (its template's prompt needs the SDK): pass --prompts")
    scope: dict = {}
    exec(compile((HERE / "prompt.py").read_text(), str(HERE / "prompt.py"), "exec"), scope)
    optional = set(bundle.get("optional_columns", bundle["input_columns"]))  # bundles before 2026-12-03: unchecked
    out = []
    for i, row in enumerate(rows):
        missing = [c for c in bundle["input_columns"] if c not in row]
        if missing:
            raise BadInput(f"{source}: row {i + 1} lacks column(s) {', '.join(missing)}")
        blank = [c for c in bundle["input_columns"] if c not in optional
                 and (row[c] is None or (isinstance(row[c], str) and not row[c].strip()))]
        if blank:  # as the SDK's `distill score` refuses it
            raise BadInput(f"{source}: row {i + 1}: column {blank[0]!r} is empty")
        try:
            out.append(scope["prompt"](row))
        except Exception as err:  # the template's prompt names the column whose value it cannot read
            raise BadInput(f"{source}: row {i + 1}: {type(err).__name__}: {err}") from None
    return out


def predict(prompts: list[str], artifact: str | None = None, threads: int | None = None) -> list[dict]:
    bundle = json.loads((HERE / "bundle.json").read_text())
    name = artifact or bundle["default_artifact"]
    if name not in bundle["artifacts"]:
        raise BadInput(f"no artifact {name!r} in this bundle (it has: {', '.join(bundle['artifacts'])})")
    spec = bundle["artifacts"][name]
    seqs = tokenize(prompts, bundle["chat"])
    scorer = open_scorer(spec, threads, max((len(s) for s in seqs), default=1))
    words, label_ids = bundle["label_words"], bundle["label_token_ids"]
    out = []
    for i, ids in enumerate(seqs):
        probs = scorer.label_probs(ids, label_ids)
        d = decide(probs, spec.get("threshold"))
        out.append({"index": i, "artifact": name, "probs": {w.strip(): float(p) for w, p in zip(words, probs)},
                    "score": float(probs[-1]), "decision": d, "label": words[d].strip()})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows", nargs="?", help="JSONL file of rows with the template's input columns")
    ap.add_argument("--prompts", help="a text file of built prompts, one per line, instead of rows")
    ap.add_argument("--artifact", help="artifact name (default: bundle.json's default_artifact)")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", help="write JSONL here (default: standard output)")
    ap.add_argument("--verify", action="store_true", help="check the files against SHA256SUMS and exit")
    args = ap.parse_args(argv)
    if args.verify:
        bad = verify()
        print("all files intact" if not bad else "CHANGED: " + ", ".join(bad))
        return 1 if bad else 0
    if not args.prompts and not args.rows:
        ap.error("give a rows file or --prompts")
    bundle = json.loads((HERE / "bundle.json").read_text())
    try:
        if args.prompts:
            with open(args.prompts) as f:
                prompts = [line.rstrip("\n") for line in f if line.strip()]
        else:
            prompts = prompts_from_rows(read_rows(Path(args.rows)), bundle, args.rows)
        lines = [json.dumps(r) for r in predict(prompts, args.artifact, args.threads)]
        if args.out:
            Path(args.out).write_text("\n".join(lines) + "\n")
    except BadInput as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError) as err:  # a missing or unreadable file named by the user
        print(f"error: {getattr(err, 'filename', None) or ''}: {getattr(err, 'strerror', None) or err}",
              file=sys.stderr)
        return 2
    if not args.out:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
