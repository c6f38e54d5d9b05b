"""export: every trained student through each configured exporter (`export.formats`, registered in
`distill_sdk.exporters`: gguf, onnx, torch).

Writes artifacts/ (files and folders named <student>-<...>) and artifacts/exports.json:
{student folder: [{"name", "format", "quant", "path" (relative to the run folder), "size_bytes", "spec",
"exporter"}]}. A twin (sequence-KD alone, or labels alone) is exported in the first format's last (most
compressed) type only; a QAD twin in its GGUF type, the QAD control in every QAD type.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdk.rundir import RunDir, replace_dir
from sdk.stages import Context
from sdk.distill.qad import CONTROL_DIR, QAD_PREFIX
from sdk.stages.distill import TWINS


def inputs(ctx: Context) -> Any:
    return [ctx.config.model_dump(mode="json")["export"]["formats"]]


def outputs(run: RunDir) -> list[Path]:
    """exports.json and every artifact it lists (a deleted GGUF file exports again instead of failing the
    evaluate stage)."""
    listing = run.path("artifacts", "exports.json")
    try:
        exported = json.loads(listing.read_text())
        paths = [run.root / a["path"] for per in exported.values() for a in per]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return [listing]
    # a folder artifact (ONNX) needs its graphs: an emptied folder gives a path that never exists
    return [listing] + [g for p in paths for g in
                        ((sorted(p.glob("*.onnx")) or [p / "*.onnx"]) if p.is_dir() else [p])]


def students(ctx: Context) -> list[str]:
    """Student folders of this run: the main one first, then the comparison twins, then the QAD control and
    twins of the configured `distill.qad` (sdk/stages/qad.py)."""
    from sdk.stages.qad import folders

    return [f for f in ("student", *TWINS, *folders(ctx)) if ctx.run.path(f, "config.json").is_file()]


def _qad_exporter(ctx: Context, folder: str):
    """The GGUF exporter for a QAD twin (its own type) or the QAD control (every QAD type); None for the
    other students."""
    from sdk.registry import EXPORTERS, load

    q = ctx.config.distill.qad
    if folder == CONTROL_DIR:
        quants = list(q.types) if q is not None else []
    elif folder.startswith(QAD_PREFIX):
        quants = [folder.removeprefix(QAD_PREFIX)]
    else:
        return None
    cls = load(EXPORTERS, "gguf")
    return cls(cls.Config(quants=quants))


def exporters(ctx: Context) -> list[Any]:
    """The configured exporters, in the order of `export.formats`."""
    from sdk.registry import EXPORTERS, load

    out = []
    for kind, params in ctx.config.export.formats.items():
        cls = load(EXPORTERS, kind)
        out.append(cls(cls.Config.model_validate(params)))
    return out


def run(ctx: Context) -> dict[str, Any]:
    from deployment.exporters import ExportRequest
    from sdk.rundir import atomic_write_text
    from sdk.stages.package import task_metadata

    run_dir = ctx.run
    tmp = run_dir.tmp_dir("artifacts")
    final = run_dir.path("artifacts")
    # the task's facts go into files that carry metadata (GGUF: the quantizer copies them); evaluation adds the
    # threshold (package)
    meta = task_metadata(ctx.template, run_dir.task())
    listed: dict[str, list[dict[str, Any]]] = {}
    configured = exporters(ctx)
    for folder in students(ctx):
        src = run_dir.path(folder)
        listed[folder] = []
        qad = _qad_exporter(ctx, folder)
        for i, exporter in enumerate(configured if qad is None else [qad]):
            twin = folder != "student" and qad is None
            if twin and i > 0:
                continue  # the twin is compared in one type: the first format's most compressed
            print(f"[distill] exporting {folder} to {exporter.kind}")
            request = ExportRequest(src, tmp, folder, ctx.template.task, bool(ctx.template.chat), meta,
                                    ctx.config.evaluation.threads, only_last=twin)
            for art in exporter.export(request):
                path = Path(art.path)
                # files written to the temporary folder are recorded where they will be once it is moved
                rel = (Path("artifacts") / path.relative_to(tmp) if path.is_relative_to(tmp)
                       else path.relative_to(run_dir.root))
                listed[folder].append({"name": f"{folder}-{art.name}", "format": art.format, "quant": art.quant,
                                       "path": str(rel), "size_bytes": art.size_bytes, "spec": art.spec,
                                       "exporter": exporter.kind})
    atomic_write_text(tmp / "exports.json", json.dumps(listed, indent=2))
    replace_dir(tmp, final)
    return {"note": "; ".join(f"{folder}: " + ", ".join(f"{a['name'].removeprefix(folder + '-')} "
                                                        f"{a['size_bytes'] / 1e6:.1f} MB" for a in arts)
                              for folder, arts in listed.items())}
