#!/usr/bin/env python3
"""Decisions from this bundle's model, with nothing of distill-sdk installed.

Needs numpy, tokenizers and the artifact's runtime: llama-cpp-python (GGUF) or onnxruntime (ONNX); see
requirements.txt. Shipped as predict.py in every bundle written by `distill bundle` (sdk.bundle).

    python predict.py rows.jsonl [--artifact NAME] [--out decisions.jsonl] [--threads N]
    python predict.py --prompts prompts.txt     # one prompt per line, already built
    python predict.py --verify                  # check every file against SHA256SUMS, and name the files
                                                # it lacks that this script could read or run

Each output line: the row's index, the label probabilities, `score` (the last label's probability: what the
threshold is applied to), `decision` (label index) and `label` (its word). The rule is bundle.json's
`decision_rule`, with the artifact's threshold chosen on validation when the run was evaluated.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # Python puts a script's folder first on sys.path: a json.py or numpy.py put beside this one would be
    # imported in place of the real module, before --verify could name it. Nothing is imported from the
    # bundle's folder (prompt.py is read and run by its path); os and sys are loaded before any script runs.
    _folder = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != _folder]

import argparse  # noqa: E402 - after sys.path is cleaned
import hashlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
from pathlib import Path, PurePosixPath, PureWindowsPath  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent


class BadInput(ValueError):
    """Input this script cannot use (a file, a row, an argument): exit code 2 from the command line."""


SUMS_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")  # sha256sum's format: digest, space, ' ' or '*', name
BUNDLE_FILES = {"bundle.json", "predict.py", "prompt.py", "MODEL_CARD.md", "requirements.txt"}
BUNDLE_FOLDERS = {"models", "tokenizer"}
# Python code: what another program run or imported from this folder (a notebook's `import predict`) would
# import in place of the installed packages
CODE_SUFFIXES = (".py", ".pyc", ".pyd", ".so", ".pth")


def _outside(name: str) -> bool:
    """A name that leads out of the bundle folder: absolute (POSIX or Windows), or through '..'."""
    if "\\" in name or PureWindowsPath(name).drive:
        return True
    p = PurePosixPath(name)
    return p.is_absolute() or ".." in p.parts or not p.parts


def read_sums(root: Path = HERE) -> dict[str, tuple[str, int]]:
    """SHA256SUMS as {file: (digest, line number)}; BadInput names the line that is malformed or leads out."""
    path = root / "SHA256SUMS"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise BadInput(f"{path}: cannot be read ({getattr(err, 'strerror', None) or err}); get the bundle again")
    sums: dict[str, tuple[str, int]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = SUMS_LINE.fullmatch(line)
        if m is None:
            raise BadInput(f"{path}: line {n} is not '<64 hex digits>  <file>': {line[:80]!r}")
        digest, name = m.group(1).lower(), m.group(2)
        if _outside(name):  # verifying must never read (or vouch for) a file outside the bundle
            raise BadInput(f"{path}: line {n} names {name!r}, outside the bundle folder; refused")
        name = PurePosixPath(name).as_posix()  # ./models/x and models/x are one file
        if name in sums:
            raise BadInput(f"{path}: line {n} lists {name} again (line {sums[name][1]})")
        sums[name] = (digest, n)
    return sums


def verify(root: Path = HERE) -> dict[str, list[str]]:
    """What differs from SHA256SUMS, by kind (empty: all intact): "changed" (another SHA-256), "missing",
    "not listed" (a file of the bundle's own, or Python code, that SHA256SUMS does not name). The user's other
    files in the folder (rows, decisions, a virtual environment) are not the bundle's and are left out."""
    sums = read_sums(root)
    real_root = root.resolve()
    out: dict[str, list[str]] = {"changed": [], "missing": [], "not listed": []}
    for name, (digest, n) in sums.items():
        path = root / name
        if not path.resolve().is_relative_to(real_root):
            raise BadInput(f"{root / 'SHA256SUMS'}: line {n}: {name} is a link to {path.resolve()}, outside the "
                           "bundle folder; refused")
        if not path.is_file():
            out["missing"].append(name)
            continue
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        if h.hexdigest() != digest:
            out["changed"].append(name)
    out["not listed"] = _unlisted(root, set(sums))
    return {k: v for k, v in out.items() if v}


def _unlisted(root: Path, listed: set[str]) -> list[str]:
    """Files SHA256SUMS does not name that this script could read or run: inside the bundle's folders, under
    a bundle file's name, or Python code anywhere. A virtual environment made in the folder (the documented
    install) is skipped."""
    shipped = BUNDLE_FOLDERS | {n.split("/")[0] for n in listed if "/" in n}
    found = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if here != root and (here / "pyvenv.cfg").is_file():
            dirs[:] = []
            continue
        # a linked folder is not walked (it may lead anywhere): it counts as one entry
        entries = files + [d for d in dirs if (here / d).is_symlink()]
        for f in entries:
            rel = (here / f).relative_to(root).as_posix()
            if rel == "SHA256SUMS" or rel in listed:
                continue
            if ("/" in rel and rel.split("/")[0] in shipped) or rel in BUNDLE_FILES or rel.endswith(CODE_SUFFIXES):
                found.append(rel)
    return sorted(found)


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


def read_rows(path: Path) -> list[dict]:
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                hint = (" (predict.py reads JSONL, one JSON object a line; the SDK's `distill score` reads CSV)"
                        if path.suffix.lower() in (".csv", ".tsv", ".txt") else "")
                raise BadInput(f"{path}: line {n} is not JSON: {err}{hint}") from None
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
        missing = [c for c in bundle["input_columns"] if c not in row and c not in optional]
        if missing:
            raise BadInput(f"{source}: row {i + 1} lacks column(s) {', '.join(missing)}")
        row = {**{c: None for c in optional if c not in row}, **row}  # a row may leave free text out (no note)
        blank = [c for c in bundle["input_columns"] if c not in optional
                 and (row[c] is None or (isinstance(row[c], str) and not row[c].strip()))]
        if blank:  # as the SDK's `distill score` refuses it
            raise BadInput(f"{source}: row {i + 1}: column {blank[0]!r} is empty")
        try:
            out.append(scope["prompt"](row))
        except Exception as err:  # the template's prompt names the column whose value it cannot read
            raise BadInput(f"{source}: row {i + 1}: {type(err).__name__}: {err}") from None
    return out


def category_text(value) -> str:
    """A category value as text to compare with the training data's: a code read as 5411.0 (a column with gaps
    is float) is 5411, as a request or a file without gaps gives it."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def unseen_values(columns: dict[str, list], trained: dict[str, set[str]]) -> dict[str, dict[str, int]]:
    """{column: {value: rows}} of the given category values (missing ones left out) that the training data
    never held: the model scores them, but learned from no example of them (shared with the SDK's scoring)."""
    out: dict[str, dict[str, int]] = {}
    for col, values in columns.items():
        if col not in trained:
            continue
        counts: dict[str, int] = {}
        for v in values:
            text = category_text(v)
            if text not in trained[col]:
                counts[text] = counts.get(text, 0) + 1
        if counts:
            out[col] = counts
    return out


def unseen_warnings(unseen: dict[str, dict[str, int]], rows: int, named: int = 5) -> list[str]:
    lines = []
    for col, values in unseen.items():
        shown = ", ".join(f"{v!r} x{n}" for v, n in list(values.items())[:named])
        more = f" and {len(values) - named} more" if len(values) > named else ""
        lines.append(f"warning: column {col!r}: {sum(values.values())} of {rows} rows hold values the training data "
                     f"never had ({shown}{more}): the model reads them, but learned from no example of them")
    return lines


# bundle.json's fields this script reads, with their JSON types
FIELDS = {"default_artifact": str, "artifacts": dict, "label_words": list, "label_token_ids": list, "chat": bool,
          "input_columns": list}


def load_bundle(root: Path = HERE) -> dict:
    """bundle.json, checked for what this script reads: BadInput names the file and the field."""
    path = root / "bundle.json"
    again = "`python predict.py --verify` checks the bundle's files; or write the bundle again with `distill bundle`"
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{path} is missing: this folder is not a whole bundle ({again})") from None
    except json.JSONDecodeError as err:
        raise BadInput(f"{path}: not valid JSON ({err}); {again}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise BadInput(f"{path}: cannot be read ({getattr(err, 'strerror', None) or err}); {again}") from None
    if not isinstance(bundle, dict):
        raise BadInput(f"{path}: not a JSON object; {again}")
    for field, kind in FIELDS.items():
        if not isinstance(bundle.get(field), kind):
            raise BadInput(f"{path}: field {field!r} is missing or not a JSON {kind.__name__}; {again}")
    ids = bundle["label_token_ids"]
    if len(ids) != len(bundle["label_words"]) or not all(type(i) is int for i in ids):
        raise BadInput(f"{path}: field 'label_token_ids' must be one token id (an integer) per label word; {again}")
    for name, spec in bundle["artifacts"].items():
        threshold = spec.get("threshold") if isinstance(spec, dict) else None
        if (not isinstance(spec, dict) or not isinstance(spec.get("format"), str)
                or not isinstance(spec.get("path"), str) or _outside(spec["path"])
                or not (threshold is None or type(threshold) in (int, float))):
            raise BadInput(f"{path}: field 'artifacts.{name}' needs a 'format', a 'path' inside the bundle and a "
                           f"numeric or null 'threshold'; {again}")
    return bundle


def predict(prompts: list[str], artifact: str | None = None, threads: int | None = None,
            bundle: dict | None = None) -> list[dict]:
    bundle = bundle if bundle is not None else load_bundle()
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
    if not args.verify and not args.prompts and not args.rows:
        ap.error("give a rows file or --prompts")
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads {args.threads}: give 1 or more (or leave it out: every core)")
    try:
        if args.verify:
            found = verify()
            for kind, names in found.items():
                print(f"{kind.upper()}: {', '.join(names)}")
            if "not listed" in found:
                print("(files that are not in SHA256SUMS but that predict.py could read or run: remove them, or "
                      "get the bundle again)")
            print("all files intact" if not found else "the bundle differs from SHA256SUMS")
            return 1 if found else 0
        bundle = load_bundle()
        if args.prompts:
            with open(args.prompts) as f:
                prompts = [line.rstrip("\n") for line in f if line.strip()]
        else:
            rows = read_rows(Path(args.rows))
            prompts = prompts_from_rows(rows, bundle, args.rows)
            trained = {c: set(v) for c, v in (bundle.get("trained_category_values") or {}).items()}
            present = {c: [r[c] for r in rows if r.get(c) is not None and r[c] == r[c]] for c in trained}
            for line in unseen_warnings(unseen_values(present, trained), len(rows)):
                print(line, file=sys.stderr)
        lines = [json.dumps(r) for r in predict(prompts, args.artifact, args.threads, bundle)]
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
