"""evaluate: every artifact (the teacher, the student in torch and each export) on the held-out split, each in
its own process, and the release gates (each export against the unquantized student on the validation split);
writes evaluation/artifacts.json and evaluation/<artifact>.details.*"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdk.distill.qad import CONTROL_DIR, QAD_PREFIX
from sdk.rundir import RunDir
from sdk.stages import Context
from sdk.stages.distill import TWINS
from sdk.stages.export import students


def inputs(ctx: Context) -> Any:
    # the validated options, defaults included: a new default operating point re-chooses the thresholds
    c = ctx.config.model_dump(mode="json")
    # GGUF files are evaluated with the served F32 KV cache since 2026-12-03 (deployment.exporters): runs
    # evaluated before with llama.cpp's F16 default are evaluated again
    return [c["evaluation"], ctx.options.model_dump(mode="json"), c["export"]["gate"], {"gguf_kv_cache": "f32"}]


def outputs(run: RunDir) -> list[Path]:
    return [run.path("evaluation", "artifacts.json")]


def artifacts(ctx: Context):
    from evaluation.harness import Artifact
    from sdk.registry import EXPORTERS, load
    from sdk.students import count_params_on_disk
    from sdk.teachers import open_teacher

    c, run_dir = ctx.config, ctx.run
    threads, bs = c.evaluation.threads, c.evaluation.batch_size
    arts = [open_teacher(ctx).artifact()]
    exports = run_dir.read_json("artifacts/exports.json")
    n_ctx = _context_length(ctx)
    for folder in students(ctx):
        src = run_dir.path(folder)
        params = count_params_on_disk(src)
        variant = TWINS.get(folder) or ("qad_control" if folder == CONTROL_DIR
                                        else "qad" if folder.startswith(QAD_PREFIX) else None)
        # torch runs of the twin would only repeat its exports' figures more slowly; the QAD control's torch
        # figure is the "before quantization" of the QAD comparison
        if folder == "student" and c.evaluation.student_torch:
            arts.append(reference(ctx))
        if folder == CONTROL_DIR:
            arts.append(reference(ctx, CONTROL_DIR, variant))
        for e in _listed(exports.get(folder, []), folder):
            path = run_dir.root / e["path"]
            size = e["size_bytes"] if e["size_bytes"] is not None else path.stat().st_size
            spec = load(EXPORTERS, e["exporter"]).runtime_spec(path, e["spec"], threads=threads, batch_size=bs,
                                                               context_length=n_ctx)
            arts.append(Artifact(e["name"], "student", e["format"], e["quant"], str(path), params, size, spec,
                                 8 * size / params, variant))
    return arts


def _listed(exported: list | dict, folder: str) -> list[dict[str, Any]]:
    """exports.json entries; a run exported before exporters had a protocol listed {GGUF type: file}."""
    if isinstance(exported, list):
        return exported
    return [{"name": f"{folder}-gguf-{q}", "format": "gguf", "quant": q, "path": f"artifacts/{f}", "spec": {},
             "exporter": "gguf", "size_bytes": None} for q, f in exported.items() if q != "F16"]


def reference(ctx: Context, folder: str = "student", variant: str | None = None):
    """The unquantized student in torch: what the release gates compare every export with (or a twin's, the
    QAD control's: what its GGUFs lose to quantization)."""
    from deployment.exporters import folder_bytes
    from evaluation.harness import Artifact
    from sdk.students import count_params_on_disk

    src = ctx.run.path(folder)
    e = ctx.config.evaluation
    return Artifact(f"{folder}-torch", "student", "torch", None, str(src), count_params_on_disk(src),
                    folder_bytes(src, ("*.safetensors",)),
                    {"model": str(src), "threads": e.threads, "batch_size": e.batch_size}, 32.0, variant)


def _teacher_tokens(ctx: Context):
    """sdk.stages.common.teacher_tokens for a local teacher whose tokenizer is not the run's, else None."""
    from sdk.teachers import open_teacher

    teacher = open_teacher(ctx)
    return teacher.own_tokens() if hasattr(teacher, "own_tokens") else None


def _context_length(ctx: Context) -> int:
    prompts = ctx.run.prompts()
    longest = max(len(p) for split in prompts.values() for p in split)
    extra = ctx.config.evaluation.max_new_tokens if ctx.template.task == "generation" else 0
    return max(512, longest + extra + 8)


def run(ctx: Context) -> dict[str, Any]:
    import numpy as np

    from deployment.runtimes import TEXT_FORMATS
    from evaluation.harness import evaluate_decision, evaluate_generation
    from evaluation.report import gate_verdict

    c, t, run_dir = ctx.config, ctx.template, ctx.run
    parts, ids, texts = run_dir.splits(), run_dir.prompts(), run_dir.prompt_texts()
    work = run_dir.path("evaluation")
    e = c.evaluation
    greedy = {"max_new_tokens": e.max_new_tokens, "temperature": 0.0, "stop": list(c.annotate.stop)}
    entries, details = [], {}
    for art in artifacts(ctx):
        print(f"[distill] evaluating {art.name}")
        prompts = texts if art.format in TEXT_FORMATS else ids
        label_ids = run_dir.task().get("label_ids")  # decision templates
        own = _teacher_tokens(ctx) if art.role == "teacher" and art.format not in TEXT_FORMATS else None
        if own is not None:  # a teacher with another tokenizer reads the same texts in its own tokens
            prompts = {split: own[0](prompts[split]) for split in ("val", "test")}
            label_ids = own[1] or label_ids
        if t.task == "decision":
            entry, details[art.name] = evaluate_decision(
                art, t, ctx.options, parts["val"]["label"].to_numpy(), parts["test"]["label"].to_numpy(),
                prompts["val"], prompts["test"], label_ids,
                latency_samples=e.latency_samples, work_dir=work)
            np.savez(work / f"{art.name}.details.npz", **details[art.name])
            if hasattr(t, "operating_point"):  # scoring and the packaged GGUF carry the point with the threshold
                entry["operating_point"] = t.operating_point(ctx.options)
        else:
            sampled = ({"max_new_tokens": e.max_new_tokens, "temperature": e.temperature, "top_p": e.top_p,
                        "stop": list(c.annotate.stop), "n": e.samples, "seed": c.seed} if e.samples else None)
            gated = art.role == "student" and art.variant is None  # students get the gates' validation split
            entry, details[art.name] = evaluate_generation(
                art, t, ctx.options, parts["test"].to_dict("records"), prompts["test"], greedy=greedy,
                sampled=sampled, latency_samples=min(e.latency_samples, len(prompts["test"])), work_dir=work,
                val_rows=parts["val"].to_dict("records") if gated else None,
                val_seqs=prompts["val"] if gated else None)
            (work / f"{art.name}.details.json").write_text(json.dumps(details[art.name]))
        entries.append(entry)
    _gate(ctx, entries, details, greedy, parts["val"])
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
            entry, base_details = evaluate_baseline(name, model, t, ctx.options, parts["val"], parts["test"],
                                                    parts["val"]["label"].to_numpy(), parts["test"]["label"].to_numpy(),
                                                    latency_samples=e.latency_samples, columns=columns)
            np.savez(work / f"{name}.details.npz", **base_details)
            entries.append(entry)
    run_dir.write_json("evaluation/artifacts.json", entries)
    verdicts = {x["name"]: gate_verdict(x["gate"]) for x in entries if x.get("gate")}
    failed = [n for n, v in verdicts.items() if v == "fail"]
    unsure = [n for n, v in verdicts.items() if v == "inconclusive"]
    return {"note": f"{len(entries)} artifacts on {len(ids['test'])} test prompts"
                    + (f"; release gate FAILED: {', '.join(failed)}" if failed else "")
                    + (f"; release gate inconclusive: {', '.join(unsure)}" if unsure else "")}


def _gate(ctx: Context, entries: list[dict], details: dict[str, dict], greedy: dict[str, Any], val) -> None:
    """Each exported student artifact against the unquantized student on the validation split (evaluation.gates):
    entry["gate"] holds the verdict and the parity figures. The comparison twin (sequence KD) is not shipped
    and not gated."""
    from evaluation.gates import decision_parity, gate_intervals, generation_parity, release_gate
    from evaluation.harness import evaluate_validation

    t, run_dir = ctx.template, ctx.run
    exported = [x for x in entries if x["role"] == "student" and x["variant"] is None and x["name"] != "student-torch"]
    if not exported:
        return
    ref = next((x for x in entries if x["name"] == "student-torch"), None)
    if ref is not None:
        ref_metrics, ref_details = ref["val_metrics"], details["student-torch"]
    else:  # not evaluated in full (evaluation.student_torch: false): on the validation split only
        print("[distill] evaluating student-torch on the validation split (release gates' reference)")
        ref_metrics, ref_details = evaluate_validation(
            reference(ctx), t, ctx.options, work_dir=run_dir.path("evaluation"), val_seqs=run_dir.prompts()["val"],
            y_val=val["label"].to_numpy() if t.task == "decision" else None,
            label_ids=run_dir.task().get("label_ids"), val_rows=val.to_dict("records"), greedy=greedy)
    floor = ctx.config.export.gate.min_retention
    metric = t.primary_metric
    lower = metric in t.lower_is_better
    n_val, metrics_on = _validation_metrics_on(ctx, val, exported, ref_metrics, details, ref_details)
    intervals = gate_intervals(n_val, metrics_on, reference="student-torch", names=[x["name"] for x in exported],
                               metric=metric, lower_is_better=lower, seed=ctx.config.seed)
    for x in exported:
        gate = release_gate(x["val_metrics"], ref_metrics, metric, lower, floor, intervals[x["name"]])
        gate["reference"] = "student-torch"
        gate["n"] = n_val
        d = details[x["name"]]
        if t.task == "decision":
            gate["parity"] = decision_parity(d["probs_val"], ref_details["probs_val"], x["val_metrics"].get("threshold"),
                                             ref_metrics.get("threshold"))
        else:
            gate["parity"] = generation_parity([v["text"] for v in d["val"]], [v["text"] for v in ref_details["val"]])
        x["gate"] = gate


def _validation_metrics_on(ctx: Context, val, exported: list[dict], ref_metrics: dict, details: dict[str, dict],
                           ref_details: dict):
    """(n, metrics_on) for the gates' paired bootstrap: every gated artifact's metrics and the reference's,
    recomputed by the template on the same resample of the validation split (thresholds as chosen there)."""
    import numpy as np

    t, o = ctx.template, ctx.options
    names = [x["name"] for x in exported]
    if t.task == "decision":
        y = val["label"].to_numpy()
        probs = {"student-torch": np.asarray(ref_details["probs_val"]),
                 **{n: np.asarray(details[n]["probs_val"]) for n in names}}
        thr = {"student-torch": ref_metrics.get("threshold"),
               **{x["name"]: x["val_metrics"].get("threshold") for x in exported}}

        def metrics_on(idx):
            return {n: t.metrics(y[idx], p[idx], thr[n], o) for n, p in probs.items()}
    else:
        rows = val.to_dict("records")
        passed = {"student-torch": [bool(v["passed"]) for v in ref_details["val"]],
                  **{n: [bool(v["passed"]) for v in details[n]["val"]] for n in names}}

        def metrics_on(idx):
            sub = [rows[i] for i in idx]
            return {n: t.metrics(sub, [p[i] for i in idx], None, o) for n, p in passed.items()}
    return len(val), metrics_on


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
