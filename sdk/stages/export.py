"""export: every trained student -> GGUF F16, then llama.cpp's quantizer to the configured types.

Writes artifacts/<student>-<quant>.gguf and artifacts/exports.json ({student folder: {quant: file}}).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sdk.rundir import RunDir, replace_dir
from sdk.stages import Context
from sdk.stages.distill import SEQKD_DIR


def inputs(ctx: Context) -> Any:
    return [ctx.config.model_dump(mode="json")["export"]]


def outputs(run: RunDir) -> list[Path]:
    return [run.path("artifacts", "exports.json")]


def students(run: RunDir) -> list[str]:
    """Student folders of this run: the main one first."""
    return [f for f in ("student", SEQKD_DIR) if run.path(f, "config.json").is_file()]


def run(ctx: Context) -> dict[str, Any]:
    import json

    from deployment.gguf import quantize, write_gguf
    from sdk.models import read_meta
    from sdk.rundir import atomic_write_text
    from sdk.stages.package import task_metadata

    run_dir = ctx.run
    tmp = run_dir.tmp_dir("artifacts")
    files: dict[str, dict[str, str]] = {}
    # the task's facts go into the F16 file (the quantizer copies them); evaluation adds the threshold (package)
    meta = task_metadata(ctx.template, run_dir.task())
    for folder in students(run_dir):
        src = run_dir.path(folder)
        f16 = write_gguf(src, tmp / f"{folder}-F16.gguf", "F16", read_meta(src).get("gguf_pre_tokenizer"),
                         chat_template=bool(ctx.template.chat), metadata=meta)
        files[folder] = {"F16": f16.name}
        quants = ctx.config.export.quants if folder == "student" else ctx.config.export.quants[-1:]
        for q in quants:
            if q != "F16":
                files[folder][q] = quantize(f16, tmp / f"{folder}-{q}.gguf", q, ctx.config.evaluation.threads).name
    atomic_write_text(tmp / "exports.json", json.dumps(files, indent=2))
    replace_dir(tmp, run_dir.path("artifacts"))
    return {"note": "; ".join(f"{folder}: " + ", ".join(f"{q} {os.path.getsize(run_dir.path('artifacts', f)) / 1e6:.1f} MB"
                                                        for q, f in qs.items()) for folder, qs in files.items())}
