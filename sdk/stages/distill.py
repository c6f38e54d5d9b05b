"""distill: the student, trained against the teacher's annotations with the configured loss.

- decision: `soft_target_kd` (or any registered loss) at the answer position, early stopping on the
  template's primary metric over a validation subset.
- generation: `response_kd` over response tokens only (prompt and padding masked): sequence-level KD
  (cross-entropy on verified teacher completions) mixed by alpha with token-level KD against the
  teacher's top-k log-probabilities, chunked over positions. Early stopping on response cross-entropy
  of held-out prompts' accepted completions. With `distill.compare_sequence_kd`, a second student starts
  from the same weights and trains the same steps on sequence-level KD alone (student-seqkd/).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdk.errors import DistillError
from sdk.rundir import RunDir, replace_dir
from sdk.stages import Context
from sdk.stages.common import decision_metric, decision_val_subset, describe, load_teacher

SEQKD_DIR = "student-seqkd"


def inputs(ctx: Context) -> Any:
    from sdk.models import fingerprint

    c = ctx.config.model_dump(mode="json")
    return [c["student"], c["distill"], fingerprint(c["student"]["model"])]


def outputs(run: RunDir) -> list[Path]:
    return [run.path("student", "config.json")]


def _student(ctx: Context, teacher, tok):
    from sdk.models import load_causal_lm, resolve_model
    from sdk.students import bottom_and_spread_layers, student_from_teacher

    c = ctx.config
    if c.student.model:
        student, student_tok = load_causal_lm(resolve_model(c.student.model), c.teacher.trust_remote_code)
        if student_tok.get_vocab() != tok.get_vocab():
            raise DistillError(f"student.model {c.student.model!r} uses another tokenizer than the teacher; "
                               "token-level distillation needs the same vocabulary")
        return student, c.student.model
    try:
        keep = bottom_and_spread_layers(teacher.config.num_hidden_layers, c.student.layers, c.student.frozen_bottom)
    except ValueError as err:
        raise DistillError(str(err)) from None
    return student_from_teacher(teacher, keep), f"teacher layers {keep}"


def _save(ctx: Context, student, tok, folder: str, meta: dict[str, Any]) -> None:
    from sdk.models import META_FILE

    tmp = ctx.run.tmp_dir(folder)
    student.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    replace_dir(tmp, ctx.run.path(folder))


def run(ctx: Context) -> dict[str, Any]:
    import torch

    from sdk.students import count_params

    c = ctx.config
    teacher, tok, info = load_teacher(ctx.run, c.teacher.trust_remote_code)
    torch.manual_seed(c.seed)
    student, origin = _student(ctx, teacher, tok)
    del teacher
    _freeze(ctx, student)
    meta = {"origin": origin, "gguf_pre_tokenizer": info.get("gguf_pre_tokenizer"), "task": ctx.run.task()}
    out: dict[str, Any] = {}
    if ctx.template.task == "decision":
        res = _distill_decision(ctx, student, tok)
    else:
        initial = {k: v.clone() for k, v in student.state_dict().items()} if c.distill.compare_sequence_kd else None
        res = _distill_generation(ctx, student, tok, c.distill.loss, "distill")
        if initial is not None:
            twin, _ = _student(ctx, load_teacher(ctx.run, c.teacher.trust_remote_code)[0], tok)
            twin.load_state_dict(initial)
            _freeze(ctx, twin)
            seq_loss = {**c.distill.loss, "alpha": 1.0}
            twin_res = _distill_generation(ctx, twin, tok, seq_loss, "seqkd", steps=res.steps)
            _save(ctx, twin, tok, SEQKD_DIR, {**meta, "loss": seq_loss})
            out["sequence_kd"] = {"train": twin_res.__dict__, "loss": seq_loss}
    _save(ctx, student, tok, "student", {**meta, "loss": c.distill.loss})
    note = f"{origin}, {count_params(student):,} params; loss {c.distill.loss['kind']}: {describe(res)}"
    if "sequence_kd" in out:
        note += f"; sequence-KD-only twin: {describe(_Res(**out['sequence_kd']['train']))}"
    return {"note": note, "train": res.__dict__, **out}


def _freeze(ctx: Context, student) -> None:
    from sdk.students import freeze_layers

    if ctx.config.distill.freeze_embeddings:
        student.get_input_embeddings().weight.requires_grad_(False)
    if ctx.config.student.frozen_bottom and not ctx.config.student.model:
        freeze_layers(student, ctx.config.student.frozen_bottom)


class _Res:
    def __init__(self, **kw: Any):
        self.__dict__.update(kw)


def _distill_decision(ctx: Context, student, tok):
    import torch

    from sdk.distill.batching import token_forward
    from sdk.distill.recipe import decision_batch_loss, train
    from sdk.registry import LOSSES, load

    c, run_dir = ctx.config, ctx.run
    d = c.distill
    params = {k: v for k, v in d.loss.items() if k != "kind"}
    loss_fn = load(LOSSES, d.loss["kind"])(**params)
    parts, prompts, label_ids = run_dir.splits(), run_dir.prompts(), run_dir.task()["label_ids"]
    ann = run_dir.read_torch("annotations/train_topk.pt")
    targets = {"target": torch.tensor([label_ids[int(y)] for y in parts["train"]["label"]]), **ann}
    val = decision_val_subset(parts["val"], c.seed)
    evaluate = decision_metric(ctx.template, ctx.options,
                               token_forward([prompts["val"][i] for i in val.index], tok.pad_token_id),
                               val["label"].to_numpy(), label_ids, c.evaluation.batch_size)
    student.train()
    return train(student, decision_batch_loss(token_forward(prompts["train"], tok.pad_token_id), targets, loss_fn),
                 len(prompts["train"]), evaluate, lr=d.lr, batch_size=d.batch_size, max_epochs=d.max_epochs,
                 eval_every=d.eval_every, patience=d.patience, seed=c.seed,
                 checkpoint_dir=run_dir.checkpoint_dir("distill", ctx.key), desc="distill student")


def _distill_generation(ctx: Context, student, tok, loss_cfg: dict[str, Any], name: str, steps: int | None = None):
    from sdk.distill.recipe import train
    from sdk.distill.sequence import make_response_loss, response_ce
    from sdk.distill.topk_store import TopKStore
    from sdk.registry import LOSSES, load

    c, run_dir = ctx.config, ctx.run
    d = c.distill
    resp = run_dir.read_json("annotations/responses.json")
    prompts = run_dir.prompts()["train"]
    # held-out prompts (every 10th prompt that has an accepted completion, up to 48 responses) for early stopping
    distinct = sorted(set(resp["prompt_index"]))
    held = set(distinct[::10][:48]) if len(distinct) >= 10 else set()
    train_idx = [i for i, p in enumerate(resp["prompt_index"]) if p not in held]
    val_idx = [i for i, p in enumerate(resp["prompt_index"]) if p in held]
    alpha = float(loss_cfg.get("alpha", 1.0))
    topk = None
    if alpha < 1.0:
        store_path = run_dir.path("annotations", "topk.safetensors")
        if not store_path.is_file():
            raise DistillError("distill.loss.alpha < 1 needs the teacher's top-k log-probabilities; re-run annotate")
        topk = TopKStore.read(store_path).subset(train_idx)
    loss_fn = load(LOSSES, loss_cfg["kind"])(**{k: v for k, v in loss_cfg.items() if k != "kind"})
    t_prompts = [prompts[resp["prompt_index"][i]] for i in train_idx]
    t_resp = [resp["response_ids"][i] for i in train_idx]
    v_prompts = [prompts[resp["prompt_index"][i]] for i in val_idx]
    v_resp = [resp["response_ids"][i] for i in val_idx]

    def evaluate(model) -> float:
        if not v_resp:
            return 0.0  # no held-out prompts: the last weights are kept (every check ties)
        return -response_ce(model, v_prompts, v_resp, tok.pad_token_id, batch_size=d.batch_size)

    batch_loss = make_response_loss(t_prompts, t_resp, loss_fn, tok.pad_token_id, topk=topk)
    max_epochs = d.max_epochs if steps is None else (steps + 1e-6) / max(1, -(-len(t_resp) // d.batch_size))
    student.train()
    return train(student, batch_loss, len(t_resp), evaluate, lr=d.lr, batch_size=d.batch_size,
                 max_epochs=max_epochs, eval_every=d.eval_every, patience=d.patience if steps is None else 10**9,
                 seed=c.seed, checkpoint_dir=run_dir.checkpoint_dir(name, ctx.key), desc=name)
