"""package: every evaluated student GGUF gets the metadata a user needs to run it alone.

Runs after `evaluate` (the threshold is chosen there, per artifact, on validation) and rewrites each
evaluated GGUF's key-values in place, atomically (tensors unchanged, so the evaluation's figures hold):

    distill.template, distill.prompt_format_version, distill.task, distill.chat
    decision:   distill.label_words, distill.label_token_ids (JSON lists, label 0..n-1),
                distill.threshold (decimal string, exact), distill.operating_point (JSON, when the
                template has one), distill.decision_rule
    generation: distill.stop (JSON list), distill.max_new_tokens

Numbers and lists are strings: llama.cpp lists no array key-values in a model's metadata and prints
floats with 6 decimals, so a plain llama-cpp-python script would not see them exactly otherwise.
Writes artifacts/package.json: {artifact: {"file", "metadata", "sha256"}} (what was written, and the final
file's SHA-256).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdk.rundir import RunDir
from sdk.stages import Context

DECISION_RULE = ("score = probability of the last label word, softmax over the label words' next-token logits "
                 "after the prompt; decision = last label if score >= threshold")


def inputs(ctx: Context) -> Any:
    c = ctx.config.model_dump(mode="json")
    return [ctx.template.name, prompt_version(ctx.template), ctx.template.task, c["annotate"]["stop"],
            c["evaluation"]["max_new_tokens"]]


def outputs(run: RunDir) -> list[Path]:
    # inside artifacts/: a new export replaces the folder, so packaging runs again for the new files
    return [run.path("artifacts", "package.json")]


def prompt_version(template) -> str:
    """The template's prompt format version (a template changing its prompt bumps `prompt_version`)."""
    return str(getattr(template, "prompt_version", "1"))


def task_metadata(template, task: dict[str, Any], *, stop: list[str] | None = None,
                  max_new_tokens: int | None = None) -> dict[str, Any]:
    """What every GGUF of this run carries, known from the data stage on (export writes it too)."""
    meta: dict[str, Any] = {"distill.template": template.name, "distill.prompt_format_version": prompt_version(template),
                            "distill.task": template.task, "distill.chat": bool(task.get("chat", False))}
    if template.task == "decision":
        words = [template.label_words[i] for i in range(len(template.label_words))]
        meta["distill.label_words"] = json.dumps(words)
        meta["distill.label_token_ids"] = json.dumps(list(task["label_ids"]))
    else:
        if stop is not None:
            meta["distill.stop"] = json.dumps(list(stop))
        if max_new_tokens is not None:
            meta["distill.max_new_tokens"] = int(max_new_tokens)
    return meta


def artifact_metadata(entry: dict[str, Any]) -> dict[str, Any]:
    """What the evaluation chose for one artifact: its threshold and operating point."""
    meta: dict[str, Any] = {}
    threshold = entry.get("metrics", {}).get("threshold")
    if threshold is not None:
        meta["distill.threshold"] = repr(float(threshold))  # repr round-trips a float64 exactly
        meta["distill.decision_rule"] = DECISION_RULE
    if entry.get("operating_point") is not None:
        meta["distill.operating_point"] = json.dumps(entry["operating_point"], sort_keys=True)
    return meta


def redo_export(run: RunDir) -> str:
    """How to export and evaluate a run's students again (a file damaged or changed since): without export's
    record the next `distill run` exports anew, and every stage after it follows; the stages before are kept."""
    from sdk.rundir import rerun_command

    return (f"export and evaluate it again: delete {run.path('artifacts', 'exports.json')} and run "
            f"{rerun_command(run.root)} (the stages before export are kept)")


def check_packaged(run: RunDir, name: str, path: Path, redo: str) -> None:
    """Refuse (DistillError) a packaged GGUF whose bytes differ from what this stage wrote: changed or damaged
    since the evaluation. Runs packaged before 2026-12-04 recorded no hash and pass unchecked."""
    from sdk.errors import DistillError
    from sdk.models import known_file_sha256

    if not run.path("artifacts", "package.json").is_file():
        return
    expected = run.read_json("artifacts/package.json").get(name, {}).get("sha256")
    if expected is not None and known_file_sha256(path) != expected:
        raise DistillError(f"artifact {name!r}: {path} differs from the file the package stage wrote (SHA-256 "
                           f"{expected[:12]}...): changed since the evaluation; {redo}")


def gguf_path(run: RunDir, entry: dict[str, Any]) -> Path:
    """The artifact's file in this run folder (entries may hold a path relative to where the run started)."""
    return run.path("artifacts", Path(entry["path"]).name)


def run(ctx: Context) -> dict[str, Any]:
    from deployment.gguf import rewrite_metadata
    from sdk.models import file_sha256

    c, run_dir = ctx.config, ctx.run
    base = task_metadata(ctx.template, run_dir.task(), stop=list(c.annotate.stop),
                         max_new_tokens=c.evaluation.max_new_tokens)
    written: dict[str, dict[str, Any]] = {}
    for entry in run_dir.read_json("evaluation/artifacts.json"):
        if entry["format"] != "gguf" or entry["role"] != "student":  # a GGUF teacher is the user's file, untouched
            continue
        path = gguf_path(run_dir, entry)
        meta = {**base, **artifact_metadata(entry)}
        # a raw-prompt (chat=False) model carries no chat template: export leaves it out, an older file loses it here
        remove = [] if ctx.template.chat else ["tokenizer.chat_template"]
        # a key this artifact no longer has (a rubric run has no threshold) goes, not left from an earlier packaging
        remove += [k for k in ("distill.threshold", "distill.decision_rule", "distill.operating_point") if k not in meta]
        rewrite_metadata(path, meta, remove=remove)
        # the final file's hash: `distill bundle` ships only the file that was evaluated and packaged
        written[entry["name"]] = {"file": path.name, "metadata": meta, "sha256": file_sha256(path)}
    run_dir.write_json("artifacts/package.json", written)
    return {"note": f"distill.* metadata in {len(written)} GGUF file(s)", "files": sorted(written)}
