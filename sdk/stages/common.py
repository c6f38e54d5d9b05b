"""What several stages share: the (adapted) teacher, the decision-shape validation callback."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sdk.rundir import RunDir


def load_teacher(run: RunDir, trust_remote_code: bool = False):
    """The adapted teacher (adapter merged), its tokenizer, and teacher/teacher.json."""
    from sdk.models import load_causal_lm

    info = run.read_json("teacher/teacher.json")
    model, tok = load_causal_lm(info["base"], trust_remote_code)
    if info.get("adapter"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, run.path("teacher", "adapter")).merge_and_unload()
    return model.eval(), tok, info


def decision_val_subset(val: pd.DataFrame, seed: int, per_label: int = 120, total: int = 240) -> pd.DataFrame:
    """The early-stopping set: each rarer label keeps up to `per_label` rows (so it is always present), the
    most common label fills up to `total` rows (each check costs a forward pass per row; AUC-like metrics
    do not depend on the class ratio)."""
    counts = val["label"].value_counts()
    parts = [val[val["label"] == label].pipe(lambda d: d.sample(n=min(len(d), per_label), random_state=seed))
             for label in sorted(counts.index[1:], reverse=True)]
    common = val[val["label"] == counts.index[0]]
    n_common = min(len(common), max(total - sum(len(p) for p in parts), per_label))
    # the index is kept: it points at the rows' tokenised prompts
    return pd.concat([*parts, common.sample(n=n_common, random_state=seed)])


def decision_metric(template, options, forward, y: np.ndarray, label_ids: list[int], batch_size: int):
    """evaluate(model) -> the template's primary metric on rows scored by forward (higher is better)."""
    from sdk.distill.batching import label_probs_with

    sign = -1.0 if template.primary_metric in template.lower_is_better else 1.0

    def evaluate(model) -> float:
        probs = label_probs_with(forward, model, len(y), label_ids, batch_size).numpy()
        return sign * template.metrics(y, probs, 0.5, options)[template.primary_metric]

    return evaluate


def decision_forwards(model, seqs: list[list[int]], val_seqs: list[list[int]], start: int, pad_id: int,
                      batch_size: int):
    """(train_forward, val_forward, trained_module) for decision training. With `start` frozen bottom layers
    their output is computed once per prompt and the layers above train on that cache (`top_view`), so a
    step costs only the trained layers; start 0 runs the whole model every step."""
    from sdk.distill.batching import token_forward
    from sdk.distill.frozen_prefix import cache_hidden_states, cached_forward, top_view

    if not start:
        return token_forward(seqs, pad_id), token_forward(val_seqs, pad_id), model
    train_fwd = cached_forward(cache_hidden_states(model, seqs, start, pad_id, batch_size,
                                                   desc=f"cache frozen layers 0-{start - 1}"))
    val_fwd = cached_forward(cache_hidden_states(model, val_seqs, start, pad_id, batch_size, desc=None))
    return train_fwd, val_fwd, top_view(model, start)


def describe(res: Any) -> str:
    if res.best_metric is None:
        return f"no held-out prompts to validate on: {res.steps} steps, the last weights kept"
    return (f"best val {res.best_metric:.4f} at step {res.best_step}/{res.steps}"
            f"{' (early stop)' if res.stopped_early else ''}")


def run_tokenizer(ctx):
    """The run's tokenizer: the student's (student.model or student.base), else the teacher's."""
    from transformers import AutoTokenizer

    from sdk.models import resolve_model
    from sdk.teachers import base_model_spec, trust_remote_code

    return AutoTokenizer.from_pretrained(resolve_model(base_model_spec(ctx.config)),
                                         trust_remote_code=trust_remote_code(ctx.config))


def teacher_tokens(ctx, tok):
    """None when the teacher reads the run's token ids; else (run ids -> the teacher's ids of the same text,
    the teacher's ids of the label words, decision templates only): a teacher with another tokenizer than the
    student's (sdk/distill/cross_tokenizer.py)."""
    from sdk.data import label_token_ids

    run_tok = run_tokenizer(ctx)
    if tok.get_vocab() == run_tok.get_vocab():
        return None
    t = ctx.template
    labels = (label_token_ids(tok, t.label_words, f"{t.name} (teacher {ctx.config.teacher.model})")
              if t.task == "decision" else None)
    return (lambda seqs: [tok(run_tok.decode(list(s)), add_special_tokens=True)["input_ids"] for s in seqs], labels)
