"""`distill bundle`: what an on-prem install needs, from a finished run, and nothing of the SDK.

    bundle/
      bundle.json     template, prompt format version, label words and token ids, decision rule, input columns,
                      per artifact: file, threshold and operating point chosen on validation, gate, metrics
      predict.py      deployment/bundle_predict.py: numpy + tokenizers + llama-cpp-python or onnxruntime
      prompt.py       the template's prompt builder (standard library only), when the template has one
      tokenizer/      the run's tokenizer (tokenizer.json, tokenizer_config.json, ...)
      models/         the chosen artifacts (GGUF files, ONNX folders)
      MODEL_CARD.md   intended use, data, metrics with intervals, latency, hardware, gates: from the report
      requirements.txt, SHA256SUMS

Only artifacts that passed their release gate go in (an inconclusive one when named with --artifact); every
claim the bundle makes is checked while it is written: prompt.py reproduces the SDK's prompts and the tokenizer
the run's token ids on the test rows, and the bundle's decision rule the template's decisions on the
evaluation's test probabilities; an artifact whose file cannot be the one evaluated (empty, cut short, not a
GGUF, ONNX of another size) is refused. The bundle is written beside --out and moved there whole at the end.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
import struct
import tarfile
from pathlib import Path
from typing import Any

import typer

from evaluation.report import gate_verdict
from sdk.errors import DistillError
from sdk.rundir import rerun_command

RUNTIME_PACKAGES = {"gguf": "llama_cpp_python", "onnx": "onnxruntime"}
PIP_NAMES = {"llama_cpp_python": "llama-cpp-python", "onnxruntime": "onnxruntime"}


MAX_CATEGORY_VALUES = 5000  # per column, in bundle.json's trained_category_values


def _num(x: float | None, nd: int = 4) -> str:
    """A gate's figure; "-" where the metric was undefined on validation (evaluation.gates)."""
    return "-" if x is None else f"{x:.{nd}f}"


def choose_artifacts(entries: list[dict[str, Any]], names: list[str] | None) -> list[dict[str, Any]]:
    """The named artifacts (default: every export of the main student), each runnable outside the SDK and
    past its release gate; a named one that is not is an error saying why."""
    candidates = [e for e in entries if e["role"] == "student" and not e.get("variant")
                  and e["format"] in RUNTIME_PACKAGES]
    if names:
        known = {e["name"]: e for e in entries}
        chosen = []
        for n in names:
            if n not in known:
                raise DistillError(f"--artifact {n!r}: not evaluated in this run (evaluated: {', '.join(known)})")
            e = known[n]
            if e not in candidates:
                raise DistillError(f"--artifact {n!r}: a {e['role']} {e['format']} artifact; bundles hold the "
                                   f"student's {' and '.join(RUNTIME_PACKAGES)} exports")
            chosen.append(e)
    else:
        chosen = candidates
    for e in chosen:
        gate = e.get("gate")
        if gate is None:
            raise DistillError(f"artifact {e['name']!r} has no release gate result (a run evaluated before gates "
                               "existed): run `distill run` again to evaluate it")
        verdict = gate_verdict(gate)
        if verdict == "fail" and names:
            raise DistillError(f"artifact {e['name']!r} failed its release gate: {gate['metric']} on validation "
                               f"{_num(gate['value'])} vs the student's {_num(gate['reference_value'])} "
                               f"(below {gate['min_retention']:.0%}); it is kept out of bundles")
        if verdict == "inconclusive" and names:
            why = gate.get("reason") or (f"{gate['metric']} on validation {_num(gate['value'])} vs the student's "
                                         f"{_num(gate['reference_value'])} on {gate.get('n', '?')} examples")
            print(f"[distill] warning: {e['name']}: release gate inconclusive ({why}); bundled because it was "
                  "named, and the model card says so")
    # named: passed and inconclusive ones; by default only those that passed
    shippable = {"pass", "inconclusive"} if names else {"pass"}
    chosen = [e for e in chosen if gate_verdict(e["gate"]) in shippable]
    if not chosen:
        raise DistillError("no artifact of this run passed its release gate: nothing to bundle (see the report's "
                           "Release gates; an inconclusive one can be named with --artifact)")
    return chosen


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def write_bundle(run_dir: str | Path, out: str | Path, artifacts: list[str] | None = None) -> Path:
    """Write the bundle of a finished run to `out` (a folder, or a .tar.gz file); returns `out`."""
    from sdk.rundir import replace_dir
    from sdk.scoring import load_run

    out, as_tar, folder = _bundle_destination(Path(out))
    run = load_run(run_dir)
    t = run.template
    if t.task != "decision":
        raise DistillError(f"template {t.name!r} generates text: bundles hold decision templates so far (serve a "
                           "generation student with `distill serve` or see docs/gpu-serving.md)")
    chosen = choose_artifacts(run.entries, artifacts)
    sources = {e["name"]: check_artifact(run.run, e) for e in chosen}
    # written beside `out` under a name of this process's own (not mkdtemp's: its mode 0700 would go with the
    # bundle), moved into place whole at the end: a failed or interrupted bundle leaves nothing at `out` (an
    # earlier bundle there stays as it was) and nothing beside it
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    _remove_stale_partials(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write(run, t, chosen, sources, tmp)
        if as_tar:  # packed straight from the partial folder: nothing beside `out` is touched
            partial = tmp.with_name(tmp.name + ".tar.gz")
            try:
                with tarfile.open(partial, "w:gz") as tar:
                    tar.add(tmp, arcname=folder)
                partial.replace(out)
            finally:
                partial.unlink(missing_ok=True)
        else:
            replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write(run, t, chosen: list[dict[str, Any]], sources: dict[str, Path], tmp: Path) -> None:
    """The bundle's files into `tmp`, each claim checked on the run's test rows."""
    import numpy as np
    import pandas as pd

    from deployment.bundle_predict import decide
    from sdk.models import file_sha256
    from sdk.scoring import decide_labels
    from sdk.stages.evaluate import load_details
    from sdk.tables import prompt_function

    (tmp / "models").mkdir()
    # models
    files: dict[str, dict[str, Any]] = {}
    for e in chosen:
        src = sources[e["name"]]
        dst = tmp / "models" / src.name
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
        files[e["name"]] = {"format": e["format"], "quant": e["quant"], "path": f"models/{src.name}",
                            "threshold": e["metrics"].get("threshold"), "operating_point": e.get("operating_point"),
                            "size_bytes": e["size_bytes"], "gate": e["gate"], "metrics": e["metrics"],
                            "latency_ms": e["latency_ms"], "threads": e["threads"]}

    # tokenizer, and the checks that the bundle reproduces the run's inputs
    tok = run.tokenizer
    tok.save_pretrained(tmp / "tokenizer")
    if not (tmp / "tokenizer" / "tokenizer.json").is_file():
        raise DistillError("the run's tokenizer has no fast (tokenizer.json) form; predict.py reads that file")
    test = pd.read_parquet(run.run.path("data", "test.parquet"))
    rows = test.to_dict("records")
    sdk_prompts = [prompt_function(t, run.table)(r) for r in rows]
    has_prompt = hasattr(t, "standalone_prompt") and (run.table is None or run.table.mode == "template")
    if has_prompt:
        source = t.standalone_prompt()
        scope: dict[str, Any] = {}
        exec(compile(source, "prompt.py", "exec"), scope)  # noqa: S102 - the template's own code, checked below
        for i, (r, p) in enumerate(zip(rows, sdk_prompts)):
            if scope["prompt"](r) != p:
                raise DistillError(f"template {t.name!r}: its standalone prompt differs from its prompt on test row "
                                   f"{i + 1}; fix standalone_prompt() before bundling")
        (tmp / "prompt.py").write_text(f'"""The {t.name} template\'s prompt builder (prompt format version '
                                       f'{getattr(t, "prompt_version", "1")}): prompt(row) -> str."""\n\n' + source)
    _check_tokenizer(tmp / "tokenizer" / "tokenizer.json", sdk_prompts, run.tokenize(sdk_prompts), t.chat)

    # predict.py's rule (two labels and a threshold, else the most probable) must give the template's decisions
    details = load_details(run.run, [e["name"] for e in chosen])
    for e in chosen:
        if e["name"] not in details:
            # evaluate's only recorded output is artifacts.json: without it, `distill run` evaluates again
            raise DistillError(f"{run.run.path('evaluation', e['name'] + '.details.npz')} is missing: the evaluation "
                               f"of {e['name']!r} is incomplete; delete {run.run.path('evaluation', 'artifacts.json')} "
                               f"and run {rerun_command(run.run.root)} to evaluate again")
        probs = np.asarray(details[e["name"]]["probs_test"])
        threshold = e["metrics"].get("threshold")
        if [decide(p, threshold) for p in probs] != decide_labels(t, probs, threshold, run.options):
            raise DistillError(f"template {t.name!r} decides differently from the bundle's rule (threshold on "
                               "two labels, else the most probable): its decisions cannot be bundled yet")

    default = min(chosen, key=lambda e: e["size_bytes"])["name"]
    from sdk.stages.package import DECISION_RULE

    manifest = {
        "bundle_version": 1, "project": run.config.name, "template": t.name,
        "prompt_format_version": str(getattr(t, "prompt_version", "1")), "task": t.task, "chat": bool(t.chat),
        "label_words": [t.label_words[i] for i in range(len(t.label_words))],
        "label_token_ids": list(run.task["label_ids"]), "decision_rule": DECISION_RULE,
        "input_columns": list(run.table.names) if run.table is not None else list(t.columns),
        # columns that may be empty (free text; a user table's missing values read as n/a); the others may not
        "optional_columns": (list(run.table.names) if run.table is not None and run.table.mode == "columns"
                             else [c for c in t.columns if c in set(getattr(t, "text_columns", ()))]),
        "prompt_builder": "prompt.py" if has_prompt else None, "default_artifact": default, "artifacts": files,
        # predict.py names category values no training row held (as `distill score` does); a column of more
        # values than a bundle should carry is left out
        "trained_category_values": {c: sorted(v) for c, v in run.trained_category_values().items()
                                    if len(v) <= MAX_CATEGORY_VALUES},
        "sdk_version": _version("distill-sdk"),
    }
    (tmp / "bundle.json").write_text(json.dumps(manifest, indent=2))
    shutil.copy2(Path(__file__).parents[1] / "deployment" / "bundle_predict.py", tmp / "predict.py")
    needs = sorted({RUNTIME_PACKAGES[e["format"]] for e in chosen})
    # every package at the version the evaluation ran with: a newer numpy or jinja2 is not the measured setup
    reqs = [f"numpy=={_version('numpy')}", f"tokenizers=={_version('tokenizers')}"] + [
        f"{PIP_NAMES[p]}=={_version(p)}" for p in needs]
    if t.chat:
        reqs.append(f"jinja2=={_version('jinja2')}")
    (tmp / "requirements.txt").write_text("\n".join(reqs) + "\n")
    report = json.loads(run.run.path("report.json").read_text()) if run.run.path("report.json").is_file() else {}
    (tmp / "MODEL_CARD.md").write_text(model_card(manifest, report, t))
    sums = [f"{file_sha256(p)}  {p.relative_to(tmp).as_posix()}" for p in sorted(tmp.rglob("*")) if p.is_file()]
    (tmp / "SHA256SUMS").write_text("\n".join(sums) + "\n")


def check_artifact(run, e: dict[str, Any]) -> Path:
    """The artifact's file in the run folder, refused (a DistillError naming it) unless it can be the file the
    evaluation measured. The run records no hash. An ONNX folder's .onnx bytes must add up to the evaluated
    size (nothing rewrites them after evaluation). A GGUF's recorded size is from before the package stage,
    which rewrites its metadata in place (tensors unchanged), so the file is checked on its own: not empty,
    the GGUF magic, a readable header, and tensor data reaching where its tensor table says it ends."""
    from deployment.exporters import folder_bytes
    from deployment.gguf_header import GgufFile
    from sdk.stages.package import check_packaged, redo_export

    src = run.path("artifacts", Path(e["path"]).name)  # entries may hold paths relative to another cwd
    redo = redo_export(run)
    what = f"artifact {e['name']!r}: {src}"
    if not src.exists():
        raise DistillError(f"{what} is missing; {redo}")
    if e["format"] == "onnx":
        graph = src / "decision.onnx"  # what predict.py loads
        if not graph.is_file() or graph.stat().st_size == 0:
            raise DistillError(f"artifact {e['name']!r}: {graph} is missing or empty; {redo}")
        size = folder_bytes(src, ("*.onnx",))  # as the export measured it
        if e.get("size_bytes") is not None and size != e["size_bytes"]:
            raise DistillError(f"{what}: its .onnx files hold {size} bytes, the evaluated ones {e['size_bytes']}: "
                               f"not the evaluated model; {redo}")
        return src
    size = src.stat().st_size if src.is_file() else 0
    if size == 0:
        raise DistillError(f"{what} is empty (0 bytes) or not a file; {redo}")
    try:
        with GgufFile(src) as g:
            if not g.tensors:
                raise DistillError(f"{src}: a GGUF without tensors")
            end = _gguf_data_end(g)
    except struct.error:  # shorter than the fixed part of the header
        raise DistillError(f"{what}: its GGUF header is cut short ({size} bytes); {redo}") from None
    except (DistillError, ValueError) as err:  # the reader's errors name the file
        raise DistillError(f"artifact {e['name']!r}: {err if str(src) in str(err) else f'{src}: {err}'}; "
                           f"{redo}") from None
    if size < end:
        raise DistillError(f"{what} is truncated: {size} bytes, its tensors end at byte {end}; {redo}")
    check_packaged(run, e["name"], src, redo)  # a same-size change (a flipped byte) shows here
    return src


def _gguf_data_end(g) -> int:
    """Where a GGUF's tensor data ends: the data section's start plus the furthest tensor's offset and size
    (gguf-py's block sizes; a type it does not know counts with its offset alone). The tensor infos are
    name, dims, type, then the offset this reads."""
    from gguf import GGML_QUANT_SIZES

    buf, off, end = g.buf, g.header.tensor_infos[0], 0
    for _, dims, ggml_type in g.tensors:
        off += 8 + struct.unpack_from("<Q", buf, off)[0]  # the name: its length, then its bytes
        off += 4 + 8 * len(dims) + 4  # n_dims, dims, type
        (offset,) = struct.unpack_from("<Q", buf, off)
        off += 8
        block, nbytes = GGML_QUANT_SIZES.get(ggml_type, (1, 0))
        end = max(end, offset + math.prod(dims) // block * nbytes)
    return g.header.data_offset + end


TAR_SUFFIXES = (".tar.gz", ".tgz")


def _remove_stale_partials(out: Path) -> None:
    """Partial bundles beside `out` left by a process that was killed (SIGKILL runs no cleanup): removed, unless
    their process still runs (another bundle being written to the same place)."""
    for p in out.parent.glob(f".{glob.escape(out.name)}.*.partial*"):
        pid = p.name[len(out.name) + 2:].split(".")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # alive
        except ProcessLookupError:
            pass
        except PermissionError:  # alive, another user's
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _bundle_destination(out: Path) -> tuple[Path, bool, str]:
    """(out, as a .tar.gz?, the bundle's folder name) after refusing a destination that holds anything but
    an earlier bundle: `--out` replaces an earlier bundle, never the user's files."""
    if out.name in ("", ".", ".."):
        raise DistillError(f"--out {str(out)!r}: give a new folder or a .tar.gz file name, not {str(out)!r}")
    as_tar = out.name.endswith(TAR_SUFFIXES)
    if not as_tar and out.suffix in (".zip", ".tar", ".gz", ".bz2", ".xz", ".7z"):
        raise DistillError(f"--out {out}: a bundle is a folder or a .tar.gz file")
    folder = out.name.removesuffix(".tar.gz").removesuffix(".tgz") if as_tar else out.name
    if out.is_symlink() or (out.exists() and not _earlier_bundle(out, as_tar, folder)):
        what = "folder" if out.is_dir() else "file"
        raise DistillError(f"--out {out}: this {what} exists and is not a bundle written by `distill bundle`; "
                           "it is left as it is (choose another --out, or remove it)")
    if not out.parent.is_dir():
        raise DistillError(f"--out {out}: the folder {out.parent} does not exist")
    return out, as_tar, folder


def _earlier_bundle(out: Path, as_tar: bool, folder: str) -> bool:
    if as_tar:
        if not out.is_file():
            return False
        try:
            with tarfile.open(out, "r:gz") as tar:
                return f"{folder}/bundle.json" in tar.getnames()
        except (tarfile.TarError, OSError, EOFError):
            return False
    if out.is_dir():
        if not any(out.iterdir()):
            return True
        sums = out / "SHA256SUMS"
        if not ((out / "bundle.json").is_file() and sums.is_file()):
            return False
        # nothing but what the bundle listed: a virtual environment or the user's rows made inside it stay
        listed = {line.split("  ", 1)[1] for line in sums.read_text().splitlines() if "  " in line}
        return all(p.relative_to(out).as_posix() in listed | {"SHA256SUMS"}
                   for p in out.rglob("*") if p.is_file() or p.is_symlink())
    return False


def _check_tokenizer(path: Path, prompts: list[str], expected: list[list[int]], chat: bool) -> None:
    """The tokenizers library on the saved tokenizer.json gives the run's token ids (what predict.py relies on)."""
    if chat:
        return  # predict.py renders the chat template with jinja2; checked by the bundle test on a chat run
    from tokenizers import Tokenizer

    got = [e.ids for e in Tokenizer.from_file(str(path)).encode_batch(prompts, add_special_tokens=True)]
    for i, (g, x) in enumerate(zip(got, expected)):
        if list(g) != list(x):
            raise DistillError(f"tokenizer.json alone tokenises test prompt {i + 1} differently from the run "
                               f"({len(g)} vs {len(x)} ids): predict.py would score other inputs")


def about_bundle(text: str, bundled: list[str], artifacts: list[str]) -> bool:
    """Whether a report's warning or note concerns a bundle of `bundled`: it names one of them, or no artifact at
    all (the data, the teacher, the run). One about artifacts left out (another quantization, a comparison
    twin) is not this bundle's limitation."""
    named = [n for n in artifacts if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text)]
    return not named or any(n in bundled for n in named)


def model_card(manifest: dict[str, Any], report: dict[str, Any], template) -> str:
    """MODEL_CARD.md: from the evaluation report, for the bundled artifacts."""
    from evaluation.report import class_balance, uses_thresholds

    d = report.get("data", {})
    iv = (report.get("intervals") or {}).get("metrics", {})
    pm = report.get("primary_metric", template.primary_metric)
    hm = report.get("headline_metric", pm)
    op = report.get("operating_point")
    machine = report.get("machine", {})
    lines = [f"# Model card: {manifest['project']} ({manifest['template']})", "",
             "## Intended use", "", getattr(template, "description", "").strip() or manifest["template"], "",
             f"Input: one row with the columns {', '.join(manifest['input_columns'])}; output: "
             f"{' / '.join(w.strip() for w in manifest['label_words'])} with its probability. "
             + (f"Operating point: {op['description']}." if op else ""), "",
             "Not for: inputs unlike the training data (other columns, languages or value ranges), or decisions "
             "without a person able to review them; see Limitations.", "",
             "## Data", "",
             f"Train {d.get('n_train', '?')}, validation {d.get('n_val', '?')}, test {d.get('n_test', '?')} examples"
             + (f" (test: {class_balance(d, 'test')})" if d.get("test_positives") is not None else "")
             + (". Thresholds were chosen on validation" if uses_thresholds(report)
                else ". Each decision is the most probable label")
             + "; the figures below are on the held-out test split.", "",
             "## Metrics (test split, 95% intervals)", "",
             f"| artifact | {hm} | {pm} | size MB | P50 ms | P99 ms | threads | release gate |",
             "|---|---|---|---|---|---|---|---|"]
    for name, a in manifest["artifacts"].items():
        def cell(m: str) -> str:
            v = a["metrics"].get(m)
            ci = iv.get(name, {}).get(m)
            return "-" if v is None else f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        g = a["gate"]
        kept = "-" if g["retention"] is None else f"{g['retention']:.3f}"
        lines.append(f"| {name} | {cell(hm)} | {cell(pm)} | {a['size_bytes'] / 1e6:.1f} | {a['latency_ms']['p50']:.1f} "
                     f"| {a['latency_ms']['p99']:.1f} | {a['threads']} | {gate_verdict(g)}: {g['metric']} "
                     f"{_num(g['value'], 3)} vs student {_num(g['reference_value'], 3)} (x{kept}) |")
    teacher = next((a for a in report.get("artifacts", []) if a.get("role") == "teacher"), None)
    if teacher:
        lines += ["", f"Teacher ({teacher['name']}): {hm} {_num(teacher['metrics'].get(hm), 3)}."]
    lines += ["", "## Hardware", "",
              f"Measured on {machine.get('cpus', '?')} CPUs ({machine.get('platform', '?')}), batch 1, latency per "
              "decision after warm-up. Other machines differ: measure on yours (predict.py prints decisions; time "
              "it there).", "",
              "## Limitations", ""]
    said = [x for x in report.get("warnings", []) + report.get("notes", [])
            if about_bundle(x, list(manifest["artifacts"]),
                            [a["name"] for a in report.get("artifacts", []) if a.get("role") == "student"])]
    lines += [f"- {x}" for x in said] or ["- None recorded by the evaluation."]
    lines += ["", "## Files", "", "`predict.py` (run `python predict.py --verify` first), `bundle.json`, "
              "`SHA256SUMS`, `requirements.txt`."]
    return "\n".join(lines) + "\n"


def bundle_command(run_dir: Path = typer.Argument(..., help="A finished run folder."),
                   out: Path = typer.Option(..., "--out", help="Bundle folder, or a file ending in .tar.gz."),
                   artifact: list[str] = typer.Option(None, "--artifact", help="Artifact to include (repeat; "
                                                      "default: every student export that passed its gate).")) -> None:
    """Write an on-prem bundle: gated artifacts, tokenizer, prompt builder, predict.py, model card, checksums."""
    try:
        path = write_bundle(run_dir, out, artifact or None)
    except DistillError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2)
    typer.echo(f"bundle: {path}")
