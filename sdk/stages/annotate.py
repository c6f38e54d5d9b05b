"""annotate: what the teacher gives the student, through the teacher protocol (sdk.teachers).

- decision: the teacher's targets at the answer position of every training prompt: top-k logits of a
  local teacher, or the label words' log-probabilities (or sampled answers' agreement) of an API teacher
  (annotations/train_topk.pt).
- generation: the teacher samples `annotate.samples` completions per training prompt, the template's
  verifier accepts or rejects each (rejection sampling), up to `annotate.keep` distinct accepted ones per
  prompt become training targets (annotations/responses.json; a kept reasoning trace goes before the
  answer as <think>...</think>), and, where the teacher can give them, its top-k log-probabilities at
  every response token are stored sparsely (annotations/topk.safetensors). Answers are cached on disk by
  teacher identity, parameters and prompt, so a re-run asks the teacher nothing again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sdk.distill.schedules import uses_teacher_distributions
from sdk.rundir import RunDir
from sdk.stages import Context


def _config(ctx: Context) -> dict[str, Any]:
    c = ctx.config.model_dump(mode="json")
    if c["annotate"]["sampling_gguf"] == "F16":  # the default: runs made before the setting keep their stage
        del c["annotate"]["sampling_gguf"]
    if c["annotate"]["signals"] is None:  # likewise; where the store lives does not change what it holds
        del c["annotate"]["signals"]
    return c


def inputs(ctx: Context) -> Any:
    c = _config(ctx)
    return [c["annotate"], c["template_options"], _distill_needs(ctx), c["evaluation"]["threads"]]


def legacy_inputs(ctx: Context) -> list[Any]:
    """The key's inputs before 2026-12-04, when the whole `distill.loss` was in it (changing a temperature
    re-ran the teacher): a run made then, from this same config, stays up to date, unless it decided otherwise
    on storing the teacher's top-k than the annotation now does (it read `distill.loss` alone, so a stage
    needing top-k went without): that run's annotations lack what its training needs."""
    c = _config(ctx)
    if ctx.template.task == "generation":
        loss = ctx.config.distill.loss
        then = uses_teacher_distributions(loss)
        if {"teacher_topk": then, "alignment": [loss.get("alignment", "vocabulary")] if then else []} \
                != _distill_needs(ctx):
            return []
    return [[c["annotate"], c["template_options"], c["distill"]["loss"], c["evaluation"]["threads"]]]


def _distill_needs(ctx: Context) -> dict[str, Any] | None:
    """What of the distillation config decides the annotations: whether some training weights the teacher's
    token distributions (then they are stored, in the alignment its loss asks for). Nothing else: a new
    temperature or alpha schedule asks the teacher nothing again."""
    if ctx.template.task != "generation":
        return None
    needing = [loss for _, loss in ctx.config.distill.trained_losses() if uses_teacher_distributions(loss)]
    return {"teacher_topk": bool(needing),
            "alignment": sorted({loss.get("alignment", "vocabulary") for loss in needing})}


def topk_needed_by(distill_cfg: Any) -> list[str]:
    """The config fields (`distill.loss`, `distill.stages[i].loss`) whose training needs the teacher's top-k."""
    return [where for where, loss in distill_cfg.trained_losses() if uses_teacher_distributions(loss)]


def outputs(run: RunDir) -> list[Path]:
    """annotations.json and the tensors it says were written beside it (a deleted topk.safetensors or
    train_topk.pt re-runs the stage instead of failing the distill stage)."""
    info_path = run.path("annotations", "annotations.json")
    try:
        info = dict(json.loads(info_path.read_text()))
    except (OSError, ValueError, TypeError):
        return [info_path]
    tensors = {"decision_topk": ["train_topk.pt"], "generation": ["responses.json"]}.get(info.get("kind"), []) \
        + (["topk.safetensors"] if "topk_bytes_per_token" in info else [])
    return [info_path] + [run.path("annotations", name) for name in tensors]


def run(ctx: Context) -> dict[str, Any]:
    return _annotate_decision(ctx) if ctx.template.task == "decision" else _annotate_generation(ctx)


def _annotate_decision(ctx: Context) -> dict[str, Any]:
    import torch

    from sdk.teachers import open_teacher

    run_dir, k, t = ctx.run, ctx.config.annotate.top_k, ctx.template
    seqs, texts = run_dir.prompts()["train"], run_dir.prompt_texts()["train"]
    label_ids = run_dir.task()["label_ids"]
    teacher = open_teacher(ctx)
    values, ids, got = teacher.decision_targets(seqs, texts, label_ids,
                                                [t.label_words[i] for i in range(len(label_ids))], k)
    run_dir.write_torch("annotations/train_topk.pt", {"teacher_topk_logits": values, "teacher_topk_ids": ids})
    top1 = ids.gather(1, values.argmax(-1, keepdim=True)).squeeze(-1)
    label_share = torch.isin(top1, torch.tensor(label_ids)).float().mean().item()
    info = {"kind": "decision_topk", "top_k": ids.shape[1], "prompts": len(seqs), "top1_is_label_word": label_share,
            "top1_prob_mean": float(torch.softmax(values, -1).max(-1).values.mean()), **got}
    run_dir.write_json("annotations/annotations.json", info)
    for w in info.get("warnings", []):  # an API teacher's (sdk.teachers.openai_backend); the report repeats them
        print(f"[distill] warning: {w}", flush=True)
    return {"note": f"top-{ids.shape[1]} teacher {got.get('source', 'logits')} for {len(seqs)} training prompts; "
                    f"top-1 is a label word in {label_share:.1%}" + _usage_note(got.get("teacher_usage")), **info}


def _usage_note(usage: dict[str, Any] | None) -> str:
    if not usage:
        return ""
    return (f"; teacher calls {usage['calls']}, from cache {usage['cache_hits']}, tokens {usage['prompt_tokens']:,} in "
            f"/ {usage['completion_tokens']:,} out, cost {usage['cost']:.4f}")


def _annotate_generation(ctx: Context) -> dict[str, Any]:
    from sdk.teachers import open_teacher

    c, t, run_dir = ctx.config, ctx.template, ctx.run
    a = c.annotate
    prompts, texts = run_dir.prompts()["train"], run_dir.prompt_texts()["train"]
    rows = run_dir.splits()["train"].to_dict("records")
    params = {"max_new_tokens": a.max_new_tokens, "temperature": a.temperature, "top_p": a.top_p,
              "stop": list(a.stop), "n": a.samples, "seed": c.seed}
    teacher = open_teacher(ctx)
    answers, got = teacher.completions(prompts, texts, params)
    # a trace inlined as <think>...</think> (a local reasoning model) is split off like an API's reasoning field;
    # it stays in the target only with the openai teacher's `reasoning: keep`
    keep_traces = getattr(c.teacher, "reasoning", "drop") == "keep"
    answers = [[_split(x, keep_traces) for x in per] for per in answers]
    completions = [[x["text"] for x in per] for per in answers]

    # rejection sampling: the template's verifier decides which completions become targets
    verdicts = t.verify(rows, completions, ctx.options, progress="verify teacher completions")
    kept_prompt, kept_text, per_prompt = [], [], []
    for i, (outs, vs) in enumerate(zip(completions, verdicts)):
        accepted = list(dict.fromkeys(txt for txt, v in zip(outs, vs) if v["passed"] and txt.strip()))
        per_prompt.append(sum(bool(v["passed"]) for v in vs))
        traces = {x["text"]: x.get("reasoning") for x in answers[i]}
        for txt in accepted[: a.keep]:
            kept_prompt.append(i)
            kept_text.append(with_reasoning(txt, traces.get(txt)))
    if not kept_text:
        from sdk.errors import DistillError

        raise DistillError(f"annotate: the teacher passed none of its {sum(map(len, completions))} completions on "
                           f"{len(prompts)} training prompts; nothing to distil (a stronger teacher, more samples or "
                           "a higher annotate.max_new_tokens may help)")
    responses = response_ids(ctx, kept_text)
    n_samples = sum(map(len, completions))
    accepted = sum(per_prompt)
    info: dict[str, Any] = {
        "kind": "generation", **got, "teacher_id": teacher.identity(), "prompts": len(prompts),
        "samples": n_samples, "accepted_samples": accepted, "yield": accepted / max(n_samples, 1),
        "prompts_with_accepted": sum(1 for x in per_prompt if x > 0),
        "prompt_yield": sum(1 for x in per_prompt if x > 0) / max(len(prompts), 1),
        "per_prompt_accepted": per_prompt, "training_examples": len(kept_text),
    }
    if topk_needed_by(c.distill):
        info.update(_store_topk(ctx, teacher, [prompts[i] for i in kept_prompt], responses, kept_text))
    else:  # an earlier run's top-k belongs to other responses: no training may read it
        run_dir.path("annotations", "topk.safetensors").unlink(missing_ok=True)
    run_dir.write_json("annotations/responses.json", {"prompt_index": kept_prompt, "text": kept_text,
                                                      "response_ids": responses})
    run_dir.write_json("annotations/annotations.json", info)
    timings = got.get("runtime_probe_tokens_per_s")
    probe = f" (probe tokens/s: {', '.join(f'{k} {v}' for k, v in timings.items())})" if timings else ""
    where = info["teacher_runtime"] + (f" ({info['sampling_gguf']} GGUF)" if info.get("sampling_gguf") else "")
    return {"note": f"teacher on {where}{probe}: {accepted}/{n_samples} completions verified "
                    f"({info['yield']:.1%}), {info['prompts_with_accepted']}/{len(prompts)} prompts with one "
                    f"({info['prompt_yield']:.1%}); {len(kept_text)} training responses"
                    + (f"; top-{c.annotate.top_k} at {info['topk_bytes_per_token']:.0f} B/token"
                       if "topk_bytes_per_token" in info else "") + _usage_note(got.get("teacher_usage")),
            **{k: v for k, v in info.items() if k != "per_prompt_accepted"}}


def _split(answer: dict[str, Any], keep_traces: bool) -> dict[str, Any]:
    from deployment.runtimes.generation import split_reasoning

    text, inline = split_reasoning(answer["text"])
    reasoning = answer.get("reasoning") or inline
    return {**answer, "text": text, "reasoning": reasoning if keep_traces else None}


def with_reasoning(text: str, reasoning: str | None) -> str:
    """The training target: a kept reasoning trace goes first, R1-style."""
    return f"<think>\n{reasoning.strip()}\n</think>\n\n{text}" if reasoning else text


def response_ids(ctx: Context, texts: list[str]) -> list[list[int]]:
    """Response token ids as the student will be trained on them: the text, then end-of-turn."""
    from sdk.stages.common import run_tokenizer

    eos = ctx.run.task()["eos_ids"][:1]
    return [list(ids) + eos for ids in run_tokenizer(ctx)(texts, add_special_tokens=False)["input_ids"]]


def signals_root(ctx: Context) -> Path:
    from sdk.models import cache_dir

    return Path(ctx.config.annotate.signals) if ctx.config.annotate.signals else cache_dir() / "signals"


def _store_topk(ctx: Context, teacher, prompts: list[list[int]], responses: list[list[int]],
                texts: list[str]) -> dict:
    """The teacher's top-k at every response token, through the teacher-signal store (sdk.distill.signals):
    rows another run already paid for are read from it, only the others are asked of the teacher and added
    as a new shard; the run's annotations/topk.safetensors is written from the store.

    A teacher with another tokenizer (sdk.distill.cross_tokenizer) scores the texts in its own tokens; its
    rows are moved to the student's positions that start at the same character (the others carry no target),
    for `distill.loss.alignment: uld`."""
    import torch

    from sdk.distill.cross_tokenizer import student_rows, token_char_spans
    from sdk.distill.signals import SignalStore, row_key, store_dir
    from sdk.distill.topk_store import TopKStore
    from sdk.errors import DistillError

    from sdk.stages.common import run_tokenizer

    k = ctx.config.annotate.top_k
    run_tok = run_tokenizer(ctx)
    own = teacher.own_tokens() if hasattr(teacher, "own_tokens") else None
    cross = own is not None
    unaligned = [where for where, loss in ctx.config.distill.trained_losses()
                 if uses_teacher_distributions(loss) and loss.get("alignment", "vocabulary") != "uld"]
    if cross and unaligned:
        raise DistillError(f"{unaligned[0]}.alignment: the teacher's tokenizer differs from the student's; "
                           "token-level KD then needs alignment: uld (or alpha: 1.0, sequence-level KD alone)")
    if cross:  # the teacher reads the same texts in its own tokens
        teacher_tok = teacher.tokenizer()
        eos = [teacher_tok.eos_token_id] if teacher_tok.eos_token_id is not None else []
        t_prompts = own[0](prompts)
        t_resps = [teacher_tok(text, add_special_tokens=False)["input_ids"] + eos for text in texts]
    else:
        teacher_tok, t_prompts, t_resps = run_tok, prompts, responses
    keys = [row_key(p, r) for p, r in zip(t_prompts, t_resps)]
    root = store_dir(signals_root(ctx), teacher.identity(), k)
    store = SignalStore.read(root) if (root / "store.json").is_file() else None
    seen: set[bytes] = set()
    missing = []  # rows the store lacks, each once
    for i, key in enumerate(keys):
        if (store is None or key not in store) and key not in seen:
            seen.add(key)
            missing.append(i)
    if missing:
        got = teacher.response_topk([t_prompts[i] for i in missing], [t_resps[i] for i in missing], k)
        if got is None:
            where = topk_needed_by(ctx.config.distill)[0]
            raise DistillError(f"{where}.alpha: token-level KD needs the teacher's distributions over the "
                               f"student's vocabulary, which a {teacher.kind} teacher does not give; set "
                               f"{where}.alpha: 1.0")
        rows, vocab = got
        if store is None:
            store = SignalStore.open(root, teacher=teacher.identity(), k=k, vocab_size=vocab)
        spans = [token_char_spans(teacher_tok, t_resps[i], texts[i]) or [(-1, -1)] * len(t_resps[i]) for i in missing]
        store.add([keys[i] for i in missing], rows, spans)
    stored = store.get(keys)
    info: dict[str, Any] = {}
    if cross:
        moved, aligned = [], 0
        for (lp, _, spans), resp, text in zip(stored, responses, texts):
            lp_s, ids_s, n = student_rows(lp, [tuple(x) for x in spans], token_char_spans(run_tok, resp, text))
            moved.append((torch.from_numpy(lp_s), torch.from_numpy(ids_s)))
            aligned += n
        total = sum(map(len, responses))
        info["alignment"] = {"method": "uld at character-aligned positions", "aligned_positions": aligned,
                             "student_positions": total, "aligned_share": aligned / max(total, 1),
                             "teacher_vocab": store.meta["vocab_size"], "student_vocab": len(run_tok)}
        topk = TopKStore.write(ctx.run.path("annotations", "topk.safetensors"), moved, vocab_size=len(run_tok))
    else:
        topk = TopKStore.write(ctx.run.path("annotations", "topk.safetensors"),
                               [(torch.from_numpy(lp), torch.from_numpy(ix)) for lp, ix, _ in stored],
                               vocab_size=store.meta["vocab_size"])
    s = store.summary()
    return {"topk_bytes_per_token": topk.bytes_per_token, "topk_tokens": sum(len(r) for r in responses), **info,
            "signals": {"path": str(root), "rows_from_store": len(keys) - len(missing),
                        "rows_scored_by_teacher": len(missing), "store_rows": s["rows"],
                        "store_bytes_per_token": s["bytes_per_token"], "coverage_mean": s["coverage_mean"]}}
