"""evaluate: every artifact (teacher torch, each student in torch and each GGUF type) on the held-out
split, each in its own process; writes evaluation/artifacts.json and evaluation/<artifact>.details.*"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdk.rundir import RunDir
from sdk.stages import Context
from sdk.stages.export import students


def inputs(ctx: Context) -> Any:
    # the validated options, defaults included: a new default operating point re-chooses the thresholds
    return [ctx.config.model_dump(mode="json")["evaluation"], ctx.options.model_dump(mode="json")]


def outputs(run: RunDir) -> list[Path]:
    return [run.path("evaluation", "artifacts.json")]


def artifacts(ctx: Context):
    from evaluation.harness import Artifact
    from sdk.students import count_params_on_disk

    from sdk.teachers import open_teacher

    c, run_dir = ctx.config, ctx.run
    threads, bs = c.evaluation.threads, c.evaluation.batch_size

    def folder_bytes(p: Path) -> int:
        return sum(f.stat().st_size for f in Path(p).rglob("*.safetensors"))

    arts = [open_teacher(ctx).artifact()]
    exports = run_dir.read_json("artifacts/exports.json")
    n_ctx = _context_length(ctx)
    for folder in students(run_dir):
        src = run_dir.path(folder)
        params = count_params_on_disk(src)
        variant = None if folder == "student" else "sequence_kd"
        # torch runs of the twin would only repeat its GGUF figures more slowly
        if folder == "student" and c.evaluation.student_torch:
            arts.append(Artifact(f"{folder}-torch", "student", "torch", None, str(src), params, folder_bytes(src),
                                 {"model": str(src), "threads": threads, "batch_size": bs}, 32.0, variant))
        for q, fname in exports.get(folder, {}).items():
            if q == "F16" and "F16" not in c.export.quants:
                continue
            if variant and q != c.export.quants[-1]:
                continue  # the sequence-KD twin is compared in the most compressed type only
            path = run_dir.path("artifacts", fname)
            size = path.stat().st_size
            arts.append(Artifact(f"{folder}-gguf-{q}", "student", "gguf", q, str(path), params, size,
                                 {"model": str(path), "threads": threads, "n_ctx": n_ctx}, 8 * size / params, variant))
    return arts


def _context_length(ctx: Context) -> int:
    prompts = ctx.run.prompts()
    longest = max(len(p) for split in prompts.values() for p in split)
    extra = ctx.config.evaluation.max_new_tokens if ctx.template.task == "generation" else 0
    return max(512, longest + extra + 8)


def run(ctx: Context) -> dict[str, Any]:
    import numpy as np

    from evaluation.harness import evaluate_decision, evaluate_generation

    c, t, run_dir = ctx.config, ctx.template, ctx.run
    from deployment.runtimes import TEXT_FORMATS

    parts, ids, texts = run_dir.splits(), run_dir.prompts(), run_dir.prompt_texts()
    work = run_dir.path("evaluation")
    e = c.evaluation
    entries = []
    for art in artifacts(ctx):
        print(f"[distill] evaluating {art.name}")
        prompts = texts if art.format in TEXT_FORMATS else ids
        if t.task == "decision":
            entry, details = evaluate_decision(
                art, t, ctx.options, parts["val"]["label"].to_numpy(), parts["test"]["label"].to_numpy(),
                prompts["val"], prompts["test"], run_dir.task()["label_ids"],
                latency_samples=e.latency_samples, work_dir=work)
            np.savez(work / f"{art.name}.details.npz", **details)
            if hasattr(t, "operating_point"):  # scoring and the packaged GGUF carry the point with the threshold
                entry["operating_point"] = t.operating_point(ctx.options)
        else:
            greedy = {"max_new_tokens": e.max_new_tokens, "temperature": 0.0, "stop": list(c.annotate.stop)}
            sampled = ({"max_new_tokens": e.max_new_tokens, "temperature": e.temperature, "top_p": e.top_p,
                        "stop": list(c.annotate.stop), "n": e.samples, "seed": c.seed} if e.samples else None)
            entry, details = evaluate_generation(
                art, t, ctx.options, parts["test"].to_dict("records"), prompts["test"], greedy=greedy,
                sampled=sampled, latency_samples=min(e.latency_samples, len(prompts["test"])), work_dir=work)
            (work / f"{art.name}.details.json").write_text(json.dumps(details))
        entries.append(entry)
    if t.task == "decision" and hasattr(t, "baselines"):
        from evaluation.harness import evaluate_baseline
        from sdk.stages.data import table_spec

        # the baselines see exactly the prompt's input columns (never the label, an id or a hidden column)
        spec = table_spec(run_dir)
        models = (t.baselines(parts["train"], c.seed, ctx.options, spec.features) if spec is not None
                  else t.baselines(parts["train"], c.seed, ctx.options))
        columns = spec.names if spec is not None else list(t.columns)
        for name, model in models.items():
            print(f"[distill] evaluating {name}")
            entry, details = evaluate_baseline(name, model, t, ctx.options, parts["val"], parts["test"],
                                               parts["val"]["label"].to_numpy(), parts["test"]["label"].to_numpy(),
                                               latency_samples=e.latency_samples, columns=columns)
            np.savez(work / f"{name}.details.npz", **details)
            entries.append(entry)
    run_dir.write_json("evaluation/artifacts.json", entries)
    return {"note": f"{len(entries)} artifacts on {len(ids['test'])} test prompts"}


def load_details(run: RunDir, names: list[str]) -> dict[str, Any]:
    import numpy as np

    out = {}
    for name in names:
        npz, js = run.path("evaluation", f"{name}.details.npz"), run.path("evaluation", f"{name}.details.json")
        if npz.is_file():
            with np.load(npz) as z:
                out[name] = {k: z[k] for k in z.files}
        elif js.is_file():
            out[name] = json.loads(js.read_text())
    return out
