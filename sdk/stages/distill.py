"""distill: the student, trained against the teacher's annotations with the configured loss.

- decision: `soft_target_kd` (or any registered loss) at the answer position, early stopping on the
  template's primary metric over a validation subset.
- generation: `response_kd` over response tokens only (prompt and padding masked): sequence-level KD
  (cross-entropy on verified teacher completions) mixed by alpha with token-level KD against the
  teacher's top-k log-probabilities, chunked over positions. Early stopping on response cross-entropy
  of held-out prompts' accepted completions. With `distill.compare_sequence_kd`, a second student starts
  from the same weights and trains the same steps on sequence-level KD alone (student-seqkd/).
  With a frozen bottom (`student.frozen_bottom` layers of a student cut from the teacher, embeddings
  frozen), the frozen layers run once per (prompt + response) sequence before training
  (`frozen_prefix.cache_sequences`); both students then train and validate `top_view`s on that one cache
  (the twin's frozen bottom is the same weights).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdk.distill.schedules import compact
from sdk.errors import DistillError
from sdk.rundir import RunDir, replace_dir
from sdk.stages import Context
from sdk.stages.common import decision_forwards, decision_metric, decision_val_subset, describe, load_teacher

SEQKD_DIR = "student-seqkd"  # generation: the twin trained on sequence-level KD alone
FINETUNED_DIR = "student-finetuned"  # decisions: the twin trained on the labels alone
TWINS = {SEQKD_DIR: "sequence_kd", FINETUNED_DIR: "fine_tuned"}  # folder -> report variant
OTHER_STAGES_KEYS = ("qad",)  # distill: keys read by later stages (sdk/stages/qad.py), not by this one
HOW_TO_RUN_KEYS = ("tensorboard", "fsdp")  # distill: keys that change how training runs or logs, not its result
CACHE_MAX_BYTES = 8 << 30  # a larger frozen-layer cache would crowd RAM: train uncached instead


def inputs(ctx: Context) -> Any:
    from sdk.config import DistillConfig
    from sdk.models import fingerprint

    c = ctx.config.model_dump(mode="json")
    distill = {k: v for k, v in c["distill"].items() if k not in OTHER_STAGES_KEYS + HOW_TO_RUN_KEYS
               and (k not in DistillConfig.omit_if_default or v != DistillConfig.model_fields[k].default)}
    if distill.get("stages"):  # the losses the stages train with (completed from distill.loss), as keyed before
        for st, resolved in zip(distill["stages"], ctx.config.distill.trained_losses()):
            if st["loss"] is not None:
                st["loss"] = resolved[1]
    return [c["student"], distill, fingerprint(c["student"]["model"])]


def train_settings(ctx: Context) -> dict[str, Any]:
    """The recipe's keyword arguments that come from `distill:` (precision resolved for this machine)."""
    from sdk.distill.recipe import pick_device, resolve_precision

    d = ctx.config.distill
    return {"lr": d.lr, "batch_size": d.batch_size, "eval_every": d.eval_every, "seed": ctx.config.seed,
            "grad_accum": d.grad_accum, "checkpoint_every": d.checkpoint_every, "lr_schedule": d.lr_schedule,
            "warmup_ratio": d.warmup_ratio,
            "tensorboard_dir": ctx.run.path("tensorboard") if d.tensorboard else None, "shard": d.fsdp,
            "precision": resolve_precision(d.precision, pick_device(d.device))}


def outputs(run: RunDir) -> list[Path]:
    """The student's folder with its weights, and each comparison twin's that the stage's record says it
    trained: a folder whose weights were deleted trains again (the export stage failed on it)."""
    record = run.manifest["stages"].get("distill", {})
    folders = ["student"] + [folder for folder, variant in TWINS.items() if variant in record]
    return [p for folder in folders for p in model_files(run.path(folder))]


def model_files(folder: Path) -> list[Path]:
    """config.json and the weights of a saved model: model.safetensors, or the index and every shard it lists."""
    index = folder / "model.safetensors.index.json"
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return [folder / "config.json", index if index.exists() else folder / "model.safetensors"]
    return [folder / "config.json", index, *(folder / s for s in shards)]


def _source(ctx: Context):
    """(model, tokenizer, teacher.json) of what the student comes from: the (adapted) teacher, or the run's
    local model (`student.base` / `student.model`, required for a teacher without weights)."""
    from sdk.models import load_causal_lm
    from sdk.teachers import trust_remote_code

    info = ctx.run.read_json("teacher/teacher.json")
    if info.get("cut_from"):
        model, tok = load_causal_lm(info["cut_from"], trust_remote_code(ctx.config))
        return model.eval(), tok, info
    return load_teacher(ctx.run, trust_remote_code(ctx.config))


def _student(ctx: Context, teacher, tok):
    from sdk.models import load_causal_lm, resolve_model
    from sdk.students import bottom_and_spread_layers, student_from_teacher
    from sdk.teachers import trust_remote_code

    c = ctx.config
    if c.student.model:
        # its tokenizer is the run's; a teacher with another one was aligned to it at annotation
        # (label words for decisions, character offsets for responses: sdk/distill/cross_tokenizer.py)
        student, _ = load_causal_lm(resolve_model(c.student.model), trust_remote_code(c))
        return student, c.student.model
    try:
        keep = bottom_and_spread_layers(teacher.config.num_hidden_layers, c.student.layers, c.student.frozen_bottom)
    except ValueError as err:
        raise DistillError(str(err)) from None
    return student_from_teacher(teacher, keep), f"teacher layers {keep}"


def _save(ctx: Context, student, tok, folder: str, meta: dict[str, Any]) -> None:
    from sdk.distill.launch import rank_zero
    from sdk.models import META_FILE

    if not rank_zero():  # under torchrun every rank holds the same weights; rank 0 writes them
        return
    tmp = ctx.run.tmp_dir(folder)
    student.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    replace_dir(tmp, ctx.run.path(folder))


def loss_summary(loss: dict[str, Any]) -> str:
    """A loss in one short phrase for the log and the manifest's note: response_kd (alpha 0.5, T linear 5->1)."""
    from sdk.distill.schedules import describe as scheduled

    shown = {"beta": "beta"} if loss["kind"] == "dpo" else {"alpha": "alpha", "temperature": "T"}
    parts = [f"{name} {scheduled(loss[k])}" for k, name in shown.items() if k in loss]
    if loss.get("divergence", "forward_kl") != "forward_kl":
        parts.append(str(loss["divergence"]))
    return loss["kind"] + (f" ({', '.join(parts)})" if parts else "")


def beside_loss(distill_cfg: Any, features: bool, on_policy: bool) -> dict[str, Any]:
    """What trained beside the loss, as the manifest and the student's distill_meta.json record it:
    `features` and `on_policy` (their configs) where they ran."""
    out = {}
    if features and distill_cfg.features is not None:
        out["features"] = distill_cfg.features.model_dump(mode="json")
    if on_policy and distill_cfg.on_policy is not None:
        out["on_policy"] = distill_cfg.on_policy.model_dump(mode="json")
    return out


def beside_summary(beside: dict[str, Any]) -> str:
    """beside_loss in a phrase: feature KD (cosine, 6 layer pairs, weight 1), on-policy steps (50%, T 1)."""
    from sdk.distill.schedules import describe as scheduled

    parts = []
    if "features" in beside:
        f = beside["features"]
        pairs = f"{len(f['layers'])} layer pairs" if f.get("layers") else "each layer to the one it was cut from"
        attention = f", attention weight {scheduled(f['attention_weight'])}" if f.get("attention_weight") else ""
        parts.append(f"feature KD ({f['loss']}, {pairs}, weight {scheduled(f['weight'])}{attention})")
    if "on_policy" in beside:
        o = beside["on_policy"]
        parts.append(f"on-policy steps ({o['fraction']:.0%} of steps, T {o['temperature']:g}, "
                     f"up to {o['max_new_tokens']} tokens)")
    return ", ".join(parts)


def loss_problems(distill_cfg: Any, task: str, trained_student: bool = False) -> list[str]:
    """What makes the configured trainings impossible for a template of this task (decision or generation):
    a loss of the other shape, an alignment loss first (unless the student is a trained model of its own,
    `trained_student`), on-policy steps without sequences. Found before any stage runs (distill check) and again
    by this stage, instead of a crash at the first step."""
    from sdk.registry import LOSSES, load, names

    out = []
    for i, (where, loss) in enumerate(distill_cfg.trained_losses()):
        cls = load(LOSSES, loss["kind"])
        tasks = getattr(cls, "tasks", (task,))
        if task not in tasks:
            fits = [n for n in names(LOSSES) if task in getattr(load(LOSSES, n), "tasks", (task,))
                    and not getattr(load(LOSSES, n), "stage_only", False)]
            out.append(f"{where}: {loss['kind']} trains {' or '.join(tasks)} templates; this template is a {task} "
                       f"template" + (f" (use {' or '.join(fits)})" if fits else ""))
        elif getattr(cls, "stage_only", False) and not distill_cfg.stages:
            out.append(f"{where}: {loss['kind']} aligns a trained student; use it in a later entry of "
                       "distill.stages, after a stage that distils")
        elif getattr(cls, "stage_only", False) and i == 0 and not trained_student:
            out.append(f"{where}: {loss['kind']} in the first stage would align a student cut from the teacher "
                       f"and never trained (stage {distill_cfg.stages[0].name}); put a stage that distils before "
                       "it (or start from a trained student: student.model)")
    if distill_cfg.on_policy is not None and task != "generation":
        out.append("distill.on_policy: decision templates have no sequences to sample (generation only)")
    return out


def run(ctx: Context) -> dict[str, Any]:
    import torch

    from sdk.distill.frozen_prefix import same_prefix
    from sdk.distill.launch import launch
    from sdk.distill.recipe import pick_device, process_world
    from sdk.students import count_params

    if ctx.nproc * ctx.nnodes > 1 and process_world()[1] == 1:  # the parent: start the ranks, which run this again
        return launch(ctx, ctx.nproc, ctx.nnodes, ctx.rdzv_endpoint)
    c = ctx.config
    problems = loss_problems(c.distill, ctx.template.task, trained_student=bool(c.student.model))
    if problems:
        raise DistillError("; ".join(problems))
    teacher, tok, info = _source(ctx)  # with student.base/model: that model and its tokenizer (the run's)
    torch.manual_seed(c.seed)
    student, origin = _student(ctx, teacher, tok)
    _freeze(ctx, student)
    device = pick_device(c.distill.device)
    student.to(device)  # before the live teacher and feature projections, which follow the student's device
    live = _live_teacher(ctx, teacher, student, info)  # kept for features / on-policy steps, else None
    features = _features(ctx, live, student) if live is not None and c.distill.features else None
    del teacher
    meta = {"origin": origin, "gguf_pre_tokenizer": info.get("gguf_pre_tokenizer"), "task": ctx.run.task()}
    out: dict[str, Any] = {}
    compare = c.distill.compare_fine_tuning or (c.distill.compare_sequence_kd and ctx.template.task == "generation")
    initial = {k: v.clone() for k, v in student.state_dict().items()} if compare else None
    if ctx.template.task == "decision":
        res, done = _in_stages(ctx, lambda cx, name: _distill_decision(cx, student, tok, cx.config.distill.loss, name,
                                                                        features=features))
        if initial is not None:
            twin = _twin(ctx, tok, initial, device)
            plain = {**c.distill.loss, "alpha": 1.0}
            twin_res = _distill_decision(ctx, twin, tok, plain, "finetune", steps=_steps(done))
            _save(ctx, twin, tok, FINETUNED_DIR, {**meta, "loss": plain})
            out["fine_tuned"] = {"train": twin_res.__dict__, "loss": plain}
    else:
        data = _generation_data(ctx)
        # features read every layer and on-policy steps generate with the whole student: no frozen-layer cache
        dpo = any(loss["kind"] == "dpo" for _, loss in c.distill.trained_losses())  # samples from the whole student
        cache = _frozen_cache(ctx, student, tok, data) if live is None and not dpo else None

        def train_one(cx: Context, name: str):
            if cx.config.distill.loss["kind"] == "dpo":
                return _align_dpo(cx, student, tok, data, name)
            return _distill_generation(cx, student, tok, cx.config.distill.loss, name, data, cache=cache,
                                       features=features, live_teacher=live)

        res, done = _in_stages(ctx, train_one)
        if initial is not None:
            twin = _twin(ctx, tok, initial, device)
            seq_loss = {**c.distill.loss, "alpha": 1.0}
            if cache is not None and not (_frozen_start(ctx, twin) == cache.start
                                          and same_prefix(student, twin, cache.start)):
                cache = None  # not expected (same teacher, same kept layers, frozen): never feed a stale cache
            twin_res = _distill_generation(ctx, twin, tok, seq_loss, "seqkd", data, steps=_steps(done), cache=cache)
            _save(ctx, twin, tok, SEQKD_DIR, {**meta, "loss": seq_loss})
            out["sequence_kd"] = {"train": twin_res.__dict__, "loss": seq_loss}
    if c.distill.stages:
        out["stages"] = done
    else:
        out["loss"] = compact(c.distill.loss)
    beside = beside_loss(c.distill, features is not None, live is not None)
    out.update(beside)
    _save(ctx, student, tok, "student", {**meta, "loss": compact(c.distill.loss),
                                          **({"stages": done} if c.distill.stages else {}), **beside})
    note = f"{origin}, {count_params(student):,} params; loss {loss_summary(c.distill.loss)}: {describe(res)}"
    if c.distill.stages:
        note = f"{origin}, {count_params(student):,} params; " + "; ".join(
            f"stage {d['name']} ({loss_summary(d['loss'])}): {describe(_Res(**d['train']))}" for d in done)
    if beside:
        note += f"; beside the loss{' (distilling stages)' if c.distill.stages else ''}: {beside_summary(beside)}"
    if "sequence_kd" in out:
        note += f"; sequence-KD-only twin: {describe(_Res(**out['sequence_kd']['train']))}"
    if "fine_tuned" in out:
        note += f"; twin on the labels alone: {describe(_Res(**out['fine_tuned']['train']))}"
    precision = train_settings(ctx)["precision"]
    if precision != "fp32":
        note += f"; {precision} autocast"
    return {"note": note, "train": res.__dict__, "precision": precision, **out}


def _say(message: str) -> None:
    """A line of the stage's log, printed by rank 0 only (under torchrun: one line, not one per rank)."""
    from sdk.distill.launch import rank_zero

    if rank_zero():
        print(f"[distill] {message}", flush=True)


def _in_stages(ctx: Context, train_one) -> tuple[Any, list[dict[str, Any]]]:
    """Run train_one(context, checkpoint name) once per stage of `distill.stages` (each with its keys laid over
    `distill:`, from where the previous stage ended), or once as `distill`; (the last result, every stage's)."""
    import dataclasses

    d = ctx.config.distill
    plan = [("distill", d)] if not d.stages else [
        (f"stage-{s.name}", d.model_copy(update={**s.overrides(), "loss": d.stage_loss(s)})) for s in d.stages]
    done, res = [], None
    for name, stage_cfg in plan:
        if d.stages:
            _say(f"training stage {name[6:]} (loss {loss_summary(stage_cfg.loss)}, lr {stage_cfg.lr})")
        cx = dataclasses.replace(ctx, config=ctx.config.model_copy(update={"distill": stage_cfg}))
        res = train_one(cx, name)
        done.append({"name": name[6:] if d.stages else name, "loss": compact(stage_cfg.loss), "lr": stage_cfg.lr,
                     "train": res.__dict__})
    return res, done


def _align_dpo(ctx: Context, student, tok, data: dict[str, Any], name: str):
    """A DPO stage: the student samples completions of the training prompts, the template's verifier judges
    them, and each prompt with an accepted teacher completion and a failed student one becomes a pair
    (chosen = the teacher's, rejected = the student's); the reference is the student as it enters."""
    from deployment.runtimes.generation import truncate_at_stop
    from sdk.distill.batching import batches
    from sdk.distill.on_policy import sample_responses
    from sdk.distill.preference import DPOLoss, make_dpo_loss, reference_logprobs
    from sdk.distill.recipe import autocast, train
    from sdk.distill.sequence import response_ce
    from sdk.stages.annotate import response_ids

    c, d = ctx.config, ctx.config.distill
    if ctx.template.task != "generation" or not hasattr(ctx.template, "verify"):
        raise DistillError("distill.stages: a dpo stage needs a generation template with a verifier")
    loss = DPOLoss(**{k: v for k, v in d.loss.items() if k != "kind"})
    resp = ctx.run.read_json("annotations/responses.json")
    first: dict[int, int] = {}  # training prompt -> its first accepted teacher response
    for i in data["train_idx"]:
        first.setdefault(resp["prompt_index"][i], i)
    order = sorted(first)
    rows_all = ctx.run.splits()["train"].to_dict("records")
    rows, prompts = [rows_all[p] for p in order], [data["prompts"][first[p]] for p in order]
    eos_ids = _eos_ids(student, tok)
    texts: list[list[str]] = [[] for _ in prompts]
    for b in batches(len(prompts), d.batch_size):
        for _ in range(loss.samples):
            for i, ids in zip(b, sample_responses(student, [prompts[i] for i in b], loss.max_new_tokens,
                                                  loss.temperature, tok.pad_token_id, eos_ids)):
                texts[i].append(truncate_at_stop(tok.decode(ids, skip_special_tokens=True), c.annotate.stop)[0])
    verdicts = ctx.template.verify(rows, texts, ctx.options, progress=f"{name}: verify student completions")
    pair_prompts, chosen, rejected_text = [], [], []
    for i, (outs, vs) in enumerate(zip(texts, verdicts)):
        failed = next((t for t, v in zip(outs, vs) if not v["passed"]), None)
        if failed is not None:
            pair_prompts.append(prompts[i])
            chosen.append(data["responses"][first[order[i]]])
            rejected_text.append(failed)
    _say(f"{name}: {len(chosen)} preference pairs from {len(prompts)} prompts "
         f"({sum(v['passed'] for vs in verdicts for v in vs)}/{sum(map(len, verdicts))} student samples passed)")
    if not chosen:
        raise DistillError(f"distill.stages {name}: the student passed every sampled completion; no pair to align on")
    rejected = response_ids(ctx, rejected_text)
    settings = train_settings(ctx)
    # in the arithmetic the steps use: a bf16 sum of response log-probabilities differs from the fp32 one by
    # nats, and the first step would not start at the reference (DPO loss ln 2)
    with autocast(next(student.parameters()).device, settings["precision"]):
        ref_c = reference_logprobs(student, pair_prompts, chosen, tok.pad_token_id, d.batch_size)
        ref_r = reference_logprobs(student, pair_prompts, rejected, tok.pad_token_id, d.batch_size)
    v_prompts = [data["prompts"][i] for i in data["val_idx"]]
    v_resp = [data["responses"][i] for i in data["val_idx"]]

    def evaluate(model) -> float:  # the same held-out response CE as the other stages: no drift from the targets
        return -response_ce(model, v_prompts, v_resp, tok.pad_token_id, batch_size=d.batch_size)

    student.train()
    res = train(student, make_dpo_loss(pair_prompts, chosen, rejected, ref_c, ref_r, loss, tok.pad_token_id),
                len(chosen), evaluate if v_resp else None, max_epochs=d.max_epochs, patience=d.patience,
                loss_fn=loss, **settings, checkpoint_dir=ctx.run.checkpoint_dir(name, ctx.key), desc=name)
    student.eval()
    return res


def _eos_ids(student, tok) -> list[int]:
    """Every id that ends the student's sampled completions (tokenizer and generation config)."""
    eos = student.generation_config.eos_token_id
    return sorted({i for i in [tok.eos_token_id, *(eos if isinstance(eos, list) else [eos])] if i is not None})


def _steps(done: list[dict[str, Any]]) -> int:
    """Steps over every stage (a comparison twin trains as many)."""
    return sum(d["train"]["steps"] for d in done)


def _twin(ctx: Context, tok, initial: dict[str, Any], device):
    """A second student from the main one's starting weights, frozen alike, on the same device."""
    twin, _ = _student(ctx, _source(ctx)[0], tok)
    twin.load_state_dict(initial)
    _freeze(ctx, twin)
    return twin.to(device)


def _freeze(ctx: Context, student) -> None:
    from sdk.students import freeze_layers

    if ctx.config.distill.freeze_embeddings:
        student.get_input_embeddings().weight.requires_grad_(False)
    if ctx.config.student.frozen_bottom and not ctx.config.student.model:
        freeze_layers(student, ctx.config.student.frozen_bottom)


class _Res:
    def __init__(self, **kw: Any):
        self.__dict__.update(kw)


def _live_teacher(ctx: Context, teacher, student, info: dict[str, Any]):
    """The teacher on the student's device, in eval mode, when training runs it alongside (feature
    distillation, on-policy steps); else None."""
    d = ctx.config.distill
    wanted = [k for k in ("features", "on_policy") if getattr(d, k) is not None]
    if not wanted:
        return None
    if info.get("cut_from"):
        from sdk.preflight import alongside_problem

        raise DistillError(alongside_problem(wanted[0], info.get("kind", "remote")))
    return teacher.to(next(student.parameters()).device).eval()


def _features(ctx: Context, teacher, student):
    """(FeatureKD, the teacher) for `distill.features`."""
    from sdk.distill.features import FeatureKD, layer_map_problem, use_eager_attention
    from sdk.students import bottom_and_spread_layers

    f = ctx.config.distill.features
    layer_map = f.layers
    if layer_map is None:
        if ctx.config.student.model:
            raise DistillError("distill.features.layers: give the layer map (student layer: teacher layer) for a "
                               "student that is not cut from the teacher")
        keep = bottom_and_spread_layers(teacher.config.num_hidden_layers, ctx.config.student.layers,
                                        ctx.config.student.frozen_bottom)
        layer_map = dict(enumerate(keep))
    problem = layer_map_problem(layer_map, student.config.num_hidden_layers, teacher.config.num_hidden_layers)
    if problem:
        raise DistillError(problem)
    fkd = FeatureKD(layer_map, student.config.hidden_size, teacher.config.hidden_size, f.loss, f.weight,
                    f.attention_weight).to(next(student.parameters()).device)
    if fkd.attention:
        use_eager_attention(student, teacher)
    return fkd, teacher


def _distill_decision(ctx: Context, student, tok, loss_cfg: dict[str, Any], name: str, steps: int | None = None,
                      features=None):
    """Train `student` at the answer position; `steps` fixes the number of steps (a twin matching the main
    student's), with no early stopping. features: (FeatureKD, teacher) to add feature distillation."""
    import torch

    from sdk.distill.recipe import decision_batch_loss, train
    from sdk.registry import LOSSES, load

    c, run_dir = ctx.config, ctx.run
    d = c.distill
    loss_fn = load(LOSSES, loss_cfg["kind"])(**{k: v for k, v in loss_cfg.items() if k != "kind"})
    parts, prompts, label_ids = run_dir.splits(), run_dir.prompts(), run_dir.task()["label_ids"]
    ann = run_dir.read_torch("annotations/train_topk.pt")
    targets = {"target": torch.tensor([label_ids[int(y)] for y in parts["train"]["label"]]), **ann}
    val = decision_val_subset(parts["val"], c.seed)
    seqs, val_seqs = prompts["train"], [prompts["val"][i] for i in val.index]
    start = _frozen_start(ctx, student)  # frozen bottom layers: run once, the layers above train on their output
    if features is not None:
        start = 0  # feature distillation reads every mapped layer's output: no cached bottom
    if start and not _cache_fits(start, (len(seqs) + len(val_seqs)) * max(map(len, seqs + val_seqs)), student):
        start = 0
    train_fwd, val_fwd, trained = decision_forwards(student, seqs, val_seqs, start, tok.pad_token_id,
                                                    c.evaluation.batch_size)
    evaluate = decision_metric(ctx.template, ctx.options, val_fwd, val["label"].to_numpy(), label_ids,
                               c.evaluation.batch_size)
    student.train()
    max_epochs = d.max_epochs if steps is None else (steps + 1e-6) / max(1, -(-len(seqs) // d.batch_size))
    ckpt = run_dir.checkpoint_dir("distill" if name == "distill" else name, ctx.key)
    batch_loss, losses, extra = decision_batch_loss(train_fwd, targets, loss_fn), [loss_fn], []
    if features is not None:
        from sdk.distill.batching import left_pad, token_forward
        from sdk.distill.features import with_features

        fkd, teacher = features
        batch_loss = with_features(batch_loss, fkd, teacher, token_forward(seqs, tok.pad_token_id),
                                   lambda idx: left_pad([seqs[i] for i in idx], tok.pad_token_id)["attention_mask"])
        losses, extra = [loss_fn, fkd], [fkd]
    return train(trained, batch_loss, len(prompts["train"]), evaluate,
                 max_epochs=max_epochs, patience=d.patience if steps is None else 10**9, loss_fn=losses,
                 extra_modules=extra, **train_settings(ctx), checkpoint_dir=ckpt,
                 desc="distill student" if name == "distill" else name, lengths=[len(x) for x in seqs])


def _generation_data(ctx: Context) -> dict[str, Any]:
    """Every accepted response with its prompt, and which are trained on and which held out."""
    resp = ctx.run.read_json("annotations/responses.json")
    prompts = ctx.run.prompts()["train"]
    # held-out prompts (every 10th prompt that has an accepted completion, up to 48 responses) for early stopping
    distinct = sorted(set(resp["prompt_index"]))
    held = set(distinct[::10][:48]) if len(distinct) >= 10 else set()
    return {"prompts": [prompts[p] for p in resp["prompt_index"]], "responses": resp["response_ids"],
            "train_idx": [i for i, p in enumerate(resp["prompt_index"]) if p not in held],
            "val_idx": [i for i, p in enumerate(resp["prompt_index"]) if p in held]}


def _frozen_start(ctx: Context, student) -> int:
    """The number of frozen bottom layers to cache: student.frozen_bottom when _freeze froze them (a student
    cut from the teacher) and the input embeddings, else 0 (no cache: every step runs every layer)."""
    from sdk.distill.frozen_prefix import prefix_is_frozen

    c = ctx.config
    start = c.student.frozen_bottom
    if not start or c.student.model or not prefix_is_frozen(student, start):
        return 0
    return start


def _cache_fits(start: int, positions: int, student) -> bool:
    """Whether a cache of `positions` fp32 hidden states fits CACHE_MAX_BYTES (said when it does not)."""
    size = positions * student.config.hidden_size * 4
    if size > CACHE_MAX_BYTES:
        _say(f"a cache of the {start} frozen layers would take {size / 2**30:.1f} GiB; training without it")
    return size <= CACHE_MAX_BYTES


def _frozen_cache(ctx: Context, student, tok, data: dict[str, Any]):
    """The inputs of the first trainable layer for every (prompt + response) sequence, or None."""
    from sdk.distill.frozen_prefix import cache_sequences

    start = _frozen_start(ctx, student)
    if not start:
        return None
    seqs = [[*p, *r] for p, r in zip(data["prompts"], data["responses"])]
    if not seqs:
        return None
    if not _cache_fits(start, sum(map(len, seqs)), student):
        return None
    _say(f"caching the {start} frozen layers' output for {len(seqs)} sequences "
         f"({sum(map(len, seqs)) * student.config.hidden_size * 4 / 2**20:.0f} MiB)")
    return cache_sequences(student, seqs, start, tok.pad_token_id, batch_size=ctx.config.evaluation.batch_size,
                           desc=f"cache frozen layers 0-{start - 1}")


def _distill_generation(ctx: Context, student, tok, loss_cfg: dict[str, Any], name: str, data: dict[str, Any],
                        steps: int | None = None, cache=None, features=None, live_teacher=None):
    """Train `student` on the responses; given a frozen-layer cache (of every response in data), the
    trainable top layers train on it through top_view."""
    from sdk.distill.frozen_prefix import top_view
    from sdk.distill.recipe import train
    from sdk.distill.schedules import uses_teacher_distributions
    from sdk.distill.sequence import make_response_loss, response_ce
    from sdk.distill.topk_store import TopKStore
    from sdk.registry import LOSSES, load

    c, run_dir = ctx.config, ctx.run
    d = c.distill
    train_idx, val_idx = data["train_idx"], data["val_idx"]
    topk = None
    if uses_teacher_distributions(loss_cfg):
        store_path = run_dir.path("annotations", "topk.safetensors")
        if not store_path.is_file():
            where = ("distill.loss" if not d.stages else
                     f"the {name[6:]} stage's loss" if name.startswith("stage-") else name)
            raise DistillError(f"{where}: alpha < 1 needs the teacher's top-k log-probabilities, which the annotate "
                               "stage did not store; re-run annotate (distill run does when the config asks for them)")
        topk = TopKStore.read(store_path).subset(train_idx)
    loss_fn = load(LOSSES, loss_cfg["kind"])(**{k: v for k, v in loss_cfg.items() if k != "kind"})
    t_prompts = [data["prompts"][i] for i in train_idx]
    t_resp = [data["responses"][i] for i in train_idx]
    v_prompts = [data["prompts"][i] for i in val_idx]
    v_resp = [data["responses"][i] for i in val_idx]
    t_cache = v_cache = None
    trained = student
    if cache is not None:
        t_cache, v_cache = cache.subset(train_idx), cache.subset(val_idx)
        trained = top_view(student, cache.start)  # shares the student's modules: training it trains the student

    def evaluate(model) -> float:  # (not called without held-out prompts: training keeps its last weights)
        return -response_ce(model, v_prompts, v_resp, tok.pad_token_id, batch_size=d.batch_size, cache=v_cache)

    batch_loss = make_response_loss(t_prompts, t_resp, loss_fn, tok.pad_token_id, topk=topk, cache=t_cache)
    losses, extra = [loss_fn], []
    if features is not None:
        from sdk.distill.features import with_features
        from sdk.distill.sequence import response_hidden, right_pad

        fkd, teacher = features
        pad = lambda idx: right_pad([t_prompts[i] for i in idx], [t_resp[i] for i in idx], tok.pad_token_id)  # noqa: E731
        batch_loss = with_features(batch_loss, fkd, teacher, lambda t, idx: response_hidden(t, pad(idx)),
                                   lambda idx: pad(idx)["attention_mask"])
        losses, extra = [loss_fn, fkd], [fkd]
    if d.on_policy is not None and live_teacher is not None:
        from sdk.distill.on_policy import with_on_policy

        kd_only = load(LOSSES, loss_cfg["kind"])(**{k: v for k, v in loss_cfg.items() if k != "kind"} | {"alpha": 0.0})
        eos_ids = _eos_ids(student, tok)
        batch_loss = with_on_policy(batch_loss, t_prompts, kd_only, live_teacher, d.on_policy, c.seed,
                                    tok.pad_token_id, eos_ids)
        losses.append(kd_only)
    max_epochs = d.max_epochs if steps is None else (steps + 1e-6) / max(1, -(-len(t_resp) // d.batch_size))
    # the top view names its layers from 0: its checkpoints live apart from a full model's (no cross-resume)
    ckpt = run_dir.checkpoint_dir(f"{name}-top{cache.start}" if cache is not None else name, ctx.key)
    trained.train()
    res = train(trained, batch_loss, len(t_resp), evaluate if v_resp else None, max_epochs=max_epochs,
                patience=d.patience if steps is None else 10**9, loss_fn=losses, extra_modules=extra,
                **train_settings(ctx), checkpoint_dir=ckpt, desc=name)
    student.eval()
    return res
