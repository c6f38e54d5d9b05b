"""adapt: LoRA on a small local teacher (decision shape: the answer word; generation: reference
completions), or the teacher as is. Writes teacher/teacher.json and teacher/adapter/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdk.errors import DistillError
from sdk.rundir import RunDir, replace_dir
from sdk.stages import Context
from sdk.stages.common import decision_forwards, decision_metric, decision_val_subset, describe, teacher_tokens


def inputs(ctx: Context) -> Any:
    from sdk.models import fingerprint

    c = ctx.config.model_dump(mode="json")
    # the adaptation trains in distill.precision too: a key of this stage only where it trains (absent at auto)
    t, precision = c["teacher"], c["distill"]["precision"]
    trains = t["kind"] == "hf" and t.get("adapt", {}).get("enabled", False)
    if t["kind"] == "openai":  # how to reach it and what may be spent change no answer: no stage re-runs
        from sdk.teachers.openai_backend import answer_settings

        t = answer_settings(t)
    return [t, fingerprint(t["model"]) if t["kind"] != "openai" else None,
            c["student"]["base"], c["student"]["model"], *([precision] if trains and precision != "auto" else [])]


def legacy_inputs(ctx: Context) -> list[Any]:
    """The key's inputs before 2026-12-04, when an openai teacher's whole section was in it: a run made then,
    from this same config, stays up to date (the stages after it too) instead of paying its evaluation again."""
    c = ctx.config.model_dump(mode="json")
    if c["teacher"]["kind"] != "openai":
        return []
    return [[c["teacher"], None, c["student"]["base"], c["student"]["model"]]]


def outputs(run: RunDir) -> list[Path]:
    return [run.path("teacher", "teacher.json")]


def run(ctx: Context) -> dict[str, Any]:
    import json

    import torch

    from sdk.distill.recipe import resolve_precision
    from sdk.models import load_causal_lm, read_meta, resolve_model
    from sdk.rundir import atomic_write_text
    from sdk.students import decoder_linear_names
    from sdk.teachers import base_model_spec

    c, t, run_dir = ctx.config, ctx.template, ctx.run
    tmp = run_dir.tmp_dir("teacher")
    if c.teacher.kind != "hf":  # weights elsewhere: nothing to adapt; the student comes from the run's local model
        local = resolve_model(base_model_spec(c))
        info = {"kind": c.teacher.kind, "base": None, "cut_from": str(local), "adapter": False,
                "gguf_pre_tokenizer": read_meta(local).get("gguf_pre_tokenizer")}
        atomic_write_text(tmp / "teacher.json", json.dumps(info, indent=2))
        replace_dir(tmp, run_dir.path("teacher"))
        return {"note": f"{c.teacher.kind} teacher {c.teacher.model!r}: used as is; student from {local.name}"}
    base = resolve_model(c.teacher.model)
    info: dict[str, Any] = {"kind": "hf", "base": str(base), "adapter": False,
                            "gguf_pre_tokenizer": read_meta(base).get("gguf_pre_tokenizer")}
    if c.student.base or c.student.model:
        info["cut_from"] = str(resolve_model(c.student.base or c.student.model))
    note = "teacher used as is"
    if c.teacher.adapt.enabled:
        if t.task != "decision":
            raise DistillError("teacher.adapt.enabled: adapting the teacher is implemented for decision templates; "
                               f"template {t.name!r} is a generation template (set teacher.adapt.enabled: false)")
        from peft import LoraConfig, get_peft_model

        model, tok = load_causal_lm(base, c.teacher.trust_remote_code)
        a = c.teacher.adapt
        torch.manual_seed(c.seed)
        n_layers = model.config.num_hidden_layers
        start = 0 if a.top_layers is None else max(0, n_layers - a.top_layers)
        peft_model = get_peft_model(model, LoraConfig(
            r=a.lora_r, lora_alpha=a.lora_alpha, lora_dropout=0.0, target_modules=decoder_linear_names(model),
            layers_to_transform=list(range(start, n_layers))))
        res = _adapt_decision(ctx, peft_model, tok, start, teacher_tokens(ctx, tok))
        peft_model.save_pretrained(tmp / "adapter")
        precision = resolve_precision(c.distill.precision, torch.device("cpu"))
        info.update(adapter=True, train=res.__dict__, precision=precision)
        note = f"LoRA r={a.lora_r} on the top {n_layers - start} layers: {describe(res)}" + (
            f"; {precision} autocast" if precision != "fp32" else "")
    atomic_write_text(tmp / "teacher.json", json.dumps(info, indent=2))
    replace_dir(tmp, run_dir.path("teacher"))
    return {"note": note}


def _adapt_decision(ctx: Context, peft_model, tok, start: int, own=None):
    """Cross-entropy on the answer word; the frozen bottom layers run once (frozen-prefix cache). own: the
    teacher's own tokens (sdk.stages.common.teacher_tokens) when its tokenizer is not the run's."""
    import torch

    from sdk.distill.losses import TaskCrossEntropy
    from sdk.distill.recipe import decision_batch_loss, resolve_precision, train

    c, run_dir = ctx.config, ctx.run
    a = c.teacher.adapt
    parts, prompts, task = run_dir.splits(), run_dir.prompts(), run_dir.task()
    label_ids = task["label_ids"]
    seqs = prompts["train"]
    val = decision_val_subset(parts["val"], c.seed)
    val_seqs = [prompts["val"][i] for i in val.index]
    if own is not None:
        seqs, val_seqs, label_ids = own[0](seqs), own[0](val_seqs), own[1]
    # frozen bottom layers: run once, the adapted top trains on their cached output
    train_fwd, val_fwd, trained = decision_forwards(peft_model, seqs, val_seqs, start, tok.pad_token_id,
                                                    a.batch_size)
    target = torch.tensor([label_ids[int(y)] for y in parts["train"]["label"]])
    evaluate = decision_metric(ctx.template, ctx.options, val_fwd, val["label"].to_numpy(), label_ids,
                               c.evaluation.batch_size)
    return train(trained, decision_batch_loss(train_fwd, {"target": target}, TaskCrossEntropy()), len(seqs),
                 evaluate, lr=a.lr, batch_size=a.batch_size, max_epochs=a.max_epochs, eval_every=a.eval_every,
                 patience=a.patience, seed=c.seed, checkpoint_dir=run_dir.checkpoint_dir("adapt", ctx.key),
                 desc="adapt teacher (LoRA)", lengths=[len(x) for x in seqs],
                 tensorboard_dir=run_dir.path("tensorboard") if c.distill.tensorboard else None,
                 precision=resolve_precision(c.distill.precision, torch.device("cpu")))  # it adapts on CPU
