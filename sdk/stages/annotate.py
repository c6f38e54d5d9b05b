"""annotate: what the teacher gives the student.

- decision: the teacher's top-k logits at the answer position of every training prompt
  (annotations/train_topk.pt).
- generation: the teacher samples `annotate.samples` completions per training prompt (torch batched or
  llama.cpp on an F16 GGUF of the teacher, whichever is faster, timed on a few prompts), the template's
  verifier accepts or rejects each (rejection sampling), up to `annotate.keep` distinct accepted ones per
  prompt become training targets (annotations/responses.json), and the teacher's top-k log-probabilities
  at every response token are stored sparsely (annotations/topk.safetensors). Completions are cached
  on disk by teacher identity, generation parameters and prompt, so a re-run generates nothing again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdk.models import cache_dir
from sdk.rundir import RunDir
from sdk.stages import Context

PROBE_PROMPTS = 6  # prompts timed on each runtime when annotate.runtime is auto
CHUNK = 48  # prompts per worker call: the cache is appended after each, so an interruption loses little


def inputs(ctx: Context) -> Any:
    c = ctx.config.model_dump(mode="json")
    return [c["annotate"], c["template_options"], c["distill"]["loss"], c["evaluation"]["threads"]]


def outputs(run: RunDir) -> list[Path]:
    return [run.path("annotations", "annotations.json")]


def run(ctx: Context) -> dict[str, Any]:
    return _annotate_decision(ctx) if ctx.template.task == "decision" else _annotate_generation(ctx)


def _annotate_decision(ctx: Context) -> dict[str, Any]:
    import torch
    from tqdm.auto import tqdm

    from sdk.distill.batching import batches, last_token_logits
    from sdk.stages.common import load_teacher

    run_dir, k = ctx.run, ctx.config.annotate.top_k
    model, tok, _ = load_teacher(run_dir, ctx.config.teacher.trust_remote_code)
    seqs = run_dir.prompts()["train"]
    label_ids = run_dir.task()["label_ids"]
    values = torch.empty((len(seqs), k))
    ids = torch.empty((len(seqs), k), dtype=torch.long)
    with torch.inference_mode():
        for b in tqdm(list(batches(len(seqs), ctx.config.evaluation.batch_size)), desc="teacher top-k logits"):
            top = last_token_logits(model, [seqs[i] for i in b], tok.pad_token_id).topk(k, dim=-1)
            values[b], ids[b] = top.values, top.indices
    run_dir.write_torch("annotations/train_topk.pt", {"teacher_topk_logits": values, "teacher_topk_ids": ids})
    label_share = torch.isin(ids[:, 0], torch.tensor(label_ids)).float().mean().item()
    info = {"kind": "decision_topk", "top_k": k, "prompts": len(seqs),
            "top1_is_label_word": label_share, "top1_prob_mean": float(torch.softmax(values, -1)[:, 0].mean())}
    run_dir.write_json("annotations/annotations.json", info)
    return {"note": f"top-{k} teacher logits for {len(seqs)} training prompts; top-1 is a label word in "
                    f"{label_share:.1%}", **info}


def _teacher_files(ctx: Context) -> tuple[Path, Path | None]:
    """The teacher as an HF folder (adapter merged and saved once when there is one)."""
    from sdk.rundir import replace_dir
    from sdk.stages.common import load_teacher

    info = ctx.run.read_json("teacher/teacher.json")
    if not info.get("adapter"):
        return Path(info["base"]), None
    merged = ctx.run.path("teacher", "merged")
    if not (merged / "config.json").is_file():
        model, tok, _ = load_teacher(ctx.run, ctx.config.teacher.trust_remote_code)
        tmp = ctx.run.tmp_dir("teacher-merged")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        replace_dir(tmp, merged)
    return merged, ctx.run.path("teacher", "adapter")


def _teacher_gguf(ctx: Context, model_dir: Path) -> Path:
    from deployment.gguf import write_gguf
    from sdk.models import read_meta

    out = ctx.run.path("teacher", "teacher-F16.gguf")
    if not out.is_file():
        meta = read_meta(Path(ctx.run.read_json("teacher/teacher.json")["base"]))
        write_gguf(model_dir, out, "F16", meta.get("gguf_pre_tokenizer"))
    return out


def _runtime_job(fmt: str, model_dir: Path, gguf: Path | None, ctx: Context, n_ctx: int) -> dict[str, Any]:
    threads = ctx.config.evaluation.threads
    if fmt == "torch":
        return {"format": "torch", "spec": {"model": str(model_dir), "threads": threads,
                                            "batch_size": ctx.config.annotate.batch_size,
                                            "trust_remote_code": ctx.config.teacher.trust_remote_code}}
    return {"format": "gguf", "spec": {"model": str(gguf), "threads": threads, "n_ctx": n_ctx}}


def _generate(job: dict, prompts: list[list[int]], params: dict, work: Path, name: str) -> dict:
    from evaluation.harness import run_worker

    res = run_worker({**job, "label": name, "generate": {"teacher": {"prompts": prompts, "params": params}}},
                     work, name)
    return res["generations"]["teacher"]


def _annotate_generation(ctx: Context) -> dict[str, Any]:
    import time

    from sdk.teachers.cache import CompletionCache, teacher_identity

    c, t, run_dir = ctx.config, ctx.template, ctx.run
    a = c.annotate
    prompts = run_dir.prompts()["train"]
    rows = run_dir.splits()["train"].to_dict("records")
    model_dir, adapter = _teacher_files(ctx)
    params = {"max_new_tokens": a.max_new_tokens, "temperature": a.temperature, "top_p": a.top_p,
              "stop": list(a.stop), "n": a.samples, "seed": c.seed}
    n_ctx = max(len(p) for p in prompts) + a.max_new_tokens + 8
    work = run_dir.path("annotations", "work")
    timings: dict[str, Any] = {}

    # which runtime samples faster: timed on the same few prompts, one completion each
    fmt = {"llama_cpp": "gguf"}.get(a.runtime, a.runtime)
    gguf = None
    if a.runtime in ("auto", "llama_cpp"):
        gguf = _teacher_gguf(ctx, model_dir)
    if a.runtime == "auto":
        probe = prompts[:PROBE_PROMPTS]
        for candidate in ("torch", "gguf"):
            out = _generate(_runtime_job(candidate, model_dir, gguf, ctx, n_ctx), probe, {**params, "n": 1}, work,
                            f"probe-{candidate}")
            timings[candidate] = round(out["tokens_per_s"], 1)
        fmt = max(timings, key=timings.get)

    # cached, resumable sampling: only prompts without a cached answer are generated
    teacher_id = teacher_identity(model_dir, adapter)
    cache = CompletionCache(cache_dir() / "completions", teacher_id, params)
    todo = [i for i, p in enumerate(prompts) if cache.get(p) is None]
    job = _runtime_job(fmt, model_dir, gguf, ctx, n_ctx)
    t0, generated_tokens = time.perf_counter(), 0
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start: start + CHUNK]
        print(f"[distill] teacher sampling ({fmt}): prompts {start + 1}-{start + len(chunk)} of {len(todo)}")
        out = _generate(job, [prompts[i] for i in chunk], params, work, "teacher-sampling")
        generated_tokens += out["tokens"]
        cache.put_many([(prompts[i], [o["text"] for o in per]) for i, per in zip(chunk, out["outputs"])])
    gen_seconds = time.perf_counter() - t0
    completions = [cache.get(p) for p in prompts]

    # rejection sampling: the template's verifier decides which completions become targets
    verdicts = t.verify(rows, completions, ctx.options, progress="verify teacher completions")
    kept_prompt, kept_text, per_prompt = [], [], []
    for i, (texts, vs) in enumerate(zip(completions, verdicts)):
        accepted = list(dict.fromkeys(txt for txt, v in zip(texts, vs) if v["passed"] and txt.strip()))
        per_prompt.append(sum(bool(v["passed"]) for v in vs))
        for txt in accepted[: a.keep]:
            kept_prompt.append(i)
            kept_text.append(txt)
    if not kept_text:
        from sdk.errors import DistillError

        raise DistillError(f"annotate: the teacher passed none of its {sum(map(len, completions))} completions on "
                           f"{len(prompts)} training prompts; nothing to distil (a stronger teacher, more samples or "
                           "a higher annotate.max_new_tokens may help)")
    responses = _response_ids(ctx, model_dir, kept_text)
    n_samples = sum(map(len, completions))
    accepted = sum(per_prompt)
    info: dict[str, Any] = {
        "kind": "generation", "teacher_runtime": "llama_cpp" if fmt == "gguf" else "torch",
        "runtime_probe_tokens_per_s": timings, "teacher_id": teacher_id, "prompts": len(prompts),
        "samples": n_samples, "accepted_samples": accepted, "yield": accepted / max(n_samples, 1),
        "prompts_with_accepted": sum(1 for x in per_prompt if x > 0),
        "prompt_yield": sum(1 for x in per_prompt if x > 0) / max(len(prompts), 1),
        "per_prompt_accepted": per_prompt, "training_examples": len(kept_text),
        "generated_now": len(todo), "generation_seconds": round(gen_seconds, 1),
        "generation_tokens_per_s": round(generated_tokens / gen_seconds, 1) if todo else None,
    }
    if _needs_topk(c.distill.loss):
        info.update(_store_topk(ctx, model_dir, [prompts[i] for i in kept_prompt], responses))
    run_dir.write_json("annotations/responses.json", {"prompt_index": kept_prompt, "text": kept_text,
                                                      "response_ids": responses})
    run_dir.write_json("annotations/annotations.json", info)
    probe = f" (probe tokens/s: {', '.join(f'{k} {v}' for k, v in timings.items())})" if timings else ""
    return {"note": f"teacher on {info['teacher_runtime']}{probe}: {accepted}/{n_samples} completions verified "
                    f"({info['yield']:.1%}), {info['prompts_with_accepted']}/{len(prompts)} prompts with one "
                    f"({info['prompt_yield']:.1%}); {len(kept_text)} training responses"
                    + (f"; top-{c.annotate.top_k} at {info['topk_bytes_per_token']:.0f} B/token"
                       if "topk_bytes_per_token" in info else ""),
            **{k: v for k, v in info.items() if k != "per_prompt_accepted"}}


def _needs_topk(loss: dict[str, Any]) -> bool:
    return float(loss.get("alpha", 1.0)) < 1.0


def _response_ids(ctx: Context, model_dir: Path, texts: list[str]) -> list[list[int]]:
    """Response token ids as the student will be trained on them: the text, then end-of-turn."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=ctx.config.teacher.trust_remote_code)
    eos = ctx.run.task()["eos_ids"][:1]
    return [list(ids) + eos for ids in tok(texts, add_special_tokens=False)["input_ids"]]


def _store_topk(ctx: Context, model_dir: Path, prompts: list[list[int]], responses: list[list[int]]) -> dict:
    import torch

    from sdk.distill.sequence import teacher_topk
    from sdk.distill.topk_store import TopKStore
    from sdk.models import load_causal_lm

    if ctx.config.evaluation.threads:
        torch.set_num_threads(ctx.config.evaluation.threads)
    model, tok = load_causal_lm(model_dir, ctx.config.teacher.trust_remote_code)
    rows = teacher_topk(model, prompts, responses, ctx.config.annotate.top_k, tok.pad_token_id,
                        batch_size=ctx.config.annotate.batch_size)
    store = TopKStore.write(ctx.run.path("annotations", "topk.safetensors"), rows,
                           vocab_size=model.get_output_embeddings().weight.shape[0])
    return {"topk_bytes_per_token": store.bytes_per_token, "topk_tokens": sum(len(r) for r in responses)}
