"""qad: quantization-aware distillation twins of the trained student (sdk.distill.qad), when `distill.qad` is
set; a run without it skips this stage and its hash chain does not include it.

From the student's weights, each twin trains `distill.qad.steps` more steps on the distill stage's loss (its
last distilling stage's, with `distill.stages`) and data, through fake quantization to one target GGUF type (student-qad-<type>/); the control twin trains as
many steps without it (student-cont/). Export writes each QAD twin in its type and the control in every QAD
type; the report puts them side by side.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from sdk.distill.qad import CONTROL_DIR, QAD_PREFIX
from sdk.rundir import RunDir
from sdk.stages import Context


def inputs(ctx: Context) -> Any:
    q = ctx.config.distill.qad
    return None if q is None else q.model_dump(mode="json")


def folders(ctx: Context) -> list[str]:
    """The student folders this stage writes for the configured `distill.qad` (none without it)."""
    q = ctx.config.distill.qad
    if q is None:
        return []
    return ([CONTROL_DIR] if q.control else []) + [f"{QAD_PREFIX}{t}" for t in q.types]


def outputs(run: RunDir) -> list[Path]:
    """qad.json and the model files of every twin it lists (a deleted twin trains again)."""
    from sdk.stages.distill import model_files

    listing = run.path("qad.json")
    try:
        twins = list(dict(json.loads(listing.read_text())))
    except (OSError, ValueError, TypeError):
        return [listing]
    return [listing] + [p for folder in twins for p in model_files(run.path(folder))]


def run(ctx: Context) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from deployment.gguf import quantized_tensor_types
    from sdk.distill import qad as qad_mod
    from sdk.distill.recipe import pick_device
    from sdk.models import load_causal_lm, read_meta
    from sdk.rundir import atomic_write_text
    from sdk.stages import distill as d
    from sdk.teachers import trust_remote_code

    c, q = ctx.config, ctx.config.distill.qad
    loss = c.distill.continued_loss()  # with distill.stages: the last stage's that distils
    cx = dataclasses.replace(ctx, config=c.model_copy(update={"distill": c.distill.model_copy(
        update={"lr": q.lr or c.distill.lr})}))
    meta = {k: v for k, v in read_meta(ctx.run.path("student")).items() if k not in ("stages", "features", "on_policy")}
    device = pick_device(c.distill.device)
    data = d._generation_data(ctx) if ctx.template.task == "generation" else None

    def fresh():  # each twin starts from the trained student as saved (the teacher is not loaded again)
        model, _ = load_causal_lm(ctx.run.path("student"), trust_remote_code(c))
        d._freeze(ctx, model)
        return model.to(device)

    tok = AutoTokenizer.from_pretrained(ctx.run.path("student"), trust_remote_code=trust_remote_code(c))

    def train_twin(twin, name: str):
        if data is None:
            return d._distill_decision(cx, twin, tok, loss, name, steps=q.steps)
        return d._distill_generation(cx, twin, tok, loss, name, data, steps=q.steps,
                                     cache=d._frozen_cache(cx, twin, tok, data))

    out: dict[str, Any] = {}
    precision = d.train_settings(cx)["precision"]
    if q.control:
        print(f"[distill] QAD control: {q.steps} more steps without fake quantization", flush=True)
        twin = fresh()
        res = train_twin(twin, "qad-control")
        info = {"type": None, "steps": q.steps, "lr": cx.config.distill.lr, "precision": precision}
        d._save(ctx, twin, tok, CONTROL_DIR, {**meta, "loss": loss, "continued": info})
        out[CONTROL_DIR] = {"train": res.__dict__, **info}
    for qtype in q.types:
        types = quantized_tensor_types(ctx.run.path("student"), qtype, c.evaluation.threads)
        twin = fresh()
        counts = qad_mod.attach(twin, types)
        print(f"[distill] QAD to {qtype}: {q.steps} steps through llama.cpp's per-tensor types "
              f"({', '.join(f'{n} {t}' for t, n in sorted(counts.items()))})", flush=True)
        res = train_twin(twin, f"qad-{qtype}")
        qad_mod.detach(twin)
        info = {"type": qtype, "steps": q.steps, "lr": cx.config.distill.lr, "tensor_types": counts,
                "precision": precision}
        d._save(ctx, twin, tok, f"{QAD_PREFIX}{qtype}", {**meta, "loss": loss, "qad": info})
        out[f"{QAD_PREFIX}{qtype}"] = {"train": res.__dict__, **info}
    atomic_write_text(ctx.run.path("qad.json"), json.dumps(out, indent=2))
    note = "; ".join(f"{folder}: {o['steps']} steps" + (f" through {o['type']}" if o["type"] else " without fake "
                     "quantization") + f", {d.describe(d._Res(**o['train']))}" for folder, o in out.items())
    return {"note": note, "twins": out}
