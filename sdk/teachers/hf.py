"""The `hf` teacher: a local Hugging Face causal LM (adapted by the adapt stage when configured).

Decisions: its top-k logits at the answer position over the full vocabulary. Generation: completions
sampled by torch (batched) or by llama.cpp on a GGUF of it (F16, or Q8_0 with annotate.sampling_gguf),
whichever is faster (timed on a few prompts), cached on disk by teacher identity, parameters and prompt.
Response distributions: its top-k log-probabilities at every response token (for token-level KD).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdk.models import cache_dir

PROBE_PROMPTS = 6  # prompts timed on each runtime when annotate.runtime is auto
CHUNK = 48  # prompts per worker call: the cache is written after each, so an interruption loses little


class HFTeacher:
    kind = "hf"

    def __init__(self, ctx):
        self.ctx = ctx
        self.trust = ctx.config.teacher.trust_remote_code
        self._files: tuple[Path, Path | None] | None = None

    # ---- the model as files
    def files(self) -> tuple[Path, Path | None]:
        """The teacher as an HF folder (adapter merged and saved once when there is one), and its adapter."""
        if self._files is None:
            from sdk.rundir import replace_dir
            from sdk.stages.common import load_teacher

            run = self.ctx.run
            info = run.read_json("teacher/teacher.json")
            if not info.get("adapter"):
                self._files = (Path(info["base"]), None)
            else:
                merged = run.path("teacher", "merged")
                if not (merged / "config.json").is_file():
                    model, tok, _ = load_teacher(run, self.trust)
                    tmp = run.tmp_dir("teacher-merged")
                    model.save_pretrained(tmp)
                    tok.save_pretrained(tmp)
                    replace_dir(tmp, merged)
                self._files = (merged, run.path("teacher", "adapter"))
        return self._files

    def identity(self) -> str:
        from sdk.teachers.cache import teacher_identity

        return teacher_identity(*self.files())

    def usage(self) -> None:
        return None

    # ---- tokens
    def tokenizer(self):
        from transformers import AutoTokenizer

        if not hasattr(self, "_tok"):
            self._tok = AutoTokenizer.from_pretrained(self.files()[0], trust_remote_code=self.trust)
        return self._tok

    def own_tokens(self):
        """sdk.stages.common.teacher_tokens for this teacher: None, or its own tokens of the run's prompts."""
        from sdk.stages.common import teacher_tokens

        return teacher_tokens(self.ctx, self.tokenizer())

    # ---- decisions
    def decision_targets(self, prompts, texts, label_ids, label_words, top_k):
        import torch
        from tqdm.auto import tqdm

        from sdk.distill.batching import batches, last_token_logits
        from sdk.stages.common import load_teacher

        model, tok, _ = load_teacher(self.ctx.run, self.trust)
        own = self.own_tokens()
        if own is not None:  # another tokenizer: the label words' probabilities, which do not depend on it
            seqs, t_ids = own[0](prompts), own[1]
            values = torch.empty((len(prompts), len(label_ids)))
            with torch.inference_mode():
                for b in tqdm(list(batches(len(seqs), self.ctx.config.evaluation.batch_size)),
                              desc="teacher label-word log-probabilities"):
                    logp = torch.log_softmax(last_token_logits(model, [seqs[i] for i in b], tok.pad_token_id).float(), -1)
                    values[b] = logp[:, t_ids]
            ids = torch.tensor(label_ids).expand(len(prompts), -1).clone()
            return values, ids, {"source": "label_words", "alignment": {
                "method": "label-word probabilities (they do not depend on the tokenizer)", "teacher_vocab": len(tok)}}
        values = torch.empty((len(prompts), top_k))
        ids = torch.empty((len(prompts), top_k), dtype=torch.long)
        with torch.inference_mode():
            for b in tqdm(list(batches(len(prompts), self.ctx.config.evaluation.batch_size)),
                          desc="teacher top-k logits"):
                top = last_token_logits(model, [prompts[i] for i in b], tok.pad_token_id).topk(top_k, dim=-1)
                values[b], ids[b] = top.values, top.indices
        return values, ids, {"source": "logits"}

    # ---- generation
    def _gguf(self, model_dir: Path) -> Path:
        """The teacher as a GGUF of `annotate.sampling_gguf` for llama.cpp to sample from (F16 written from the
        weights, Q8_0 quantized from it by llama.cpp's quantizer)."""
        from deployment.gguf import quantize, write_gguf
        from sdk.models import read_meta

        f16 = self.ctx.run.path("teacher", "teacher-F16.gguf")
        if not f16.is_file():
            meta = read_meta(Path(self.ctx.run.read_json("teacher/teacher.json")["base"]))
            write_gguf(model_dir, f16, "F16", meta.get("gguf_pre_tokenizer"))
        qtype = self.ctx.config.annotate.sampling_gguf
        if qtype == "F16":
            return f16
        out = self.ctx.run.path("teacher", f"teacher-{qtype}.gguf")
        if not out.is_file():  # quantize() writes atomically
            quantize(f16, out, qtype, self.ctx.config.evaluation.threads)
        return out

    def _job(self, fmt: str, model_dir: Path, gguf: Path | None, n_ctx: int) -> dict[str, Any]:
        c = self.ctx.config
        if fmt == "torch":
            return {"format": "torch", "spec": {"model": str(model_dir), "threads": c.evaluation.threads,
                                                "batch_size": c.annotate.batch_size, "trust_remote_code": self.trust}}
        return {"format": "gguf", "spec": {"model": str(gguf), "threads": c.evaluation.threads, "n_ctx": n_ctx}}

    def _generate(self, job: dict, prompts: list[list[int]], params: dict, name: str) -> dict:
        return generate_in_worker(self.ctx, job, prompts, params, name)

    def completions(self, prompts, texts, params):
        a = self.ctx.config.annotate
        model_dir, _ = self.files()
        n_ctx = max(len(p) for p in prompts) + a.max_new_tokens + 8
        timings: dict[str, float] = {}
        # which runtime samples faster: timed on the same few prompts, one completion each
        fmt = {"llama_cpp": "gguf"}.get(a.runtime, a.runtime)
        cached = self._cached_runtime(prompts, params) if a.runtime == "auto" else None
        if cached is not None:  # every answer is on disk already: no probe, the teacher runs not at all
            fmt = cached
        gguf = self._gguf(model_dir) if fmt in ("auto", "gguf") else None
        if fmt == "auto":
            probe = prompts[:PROBE_PROMPTS]
            for candidate in ("torch", "gguf"):
                out = self._generate(self._job(candidate, model_dir, gguf, n_ctx), probe, {**params, "n": 1},
                                     f"probe-{candidate}")
                timings[candidate] = round(out["tokens_per_s"], 1)
            fmt = max(timings, key=timings.get)

        job = self._job(fmt, model_dir, gguf, n_ctx)
        qtype = a.sampling_gguf if fmt == "gguf" else "F16"
        # a quantized copy is another model: its completions are cached apart from the teacher's own
        identity = self.identity() + ("" if qtype == "F16" else f"+{qtype}")
        completions, info = cached_completions(self.ctx, identity, job, prompts, params)
        return completions, {"teacher_runtime": "llama_cpp" if fmt == "gguf" else "torch",
                             "sampling_gguf": qtype if fmt == "gguf" else None,
                             "runtime_probe_tokens_per_s": timings, **info}

    def _cached_runtime(self, prompts: list[list[int]], params: dict) -> str | None:
        """The runtime ("torch" or "gguf") under whose identity every prompt's completions are cached, if any."""
        from sdk.teachers.cache import CompletionCache

        for fmt, qtype in (("torch", "F16"), ("gguf", self.ctx.config.annotate.sampling_gguf)):
            cache = CompletionCache(cache_dir(), self.identity() + ("" if qtype == "F16" else f"+{qtype}"), params)
            if all(cache.get(p) is not None for p in prompts):
                return fmt
        return None

    def response_topk(self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], k: int):
        import torch

        from sdk.distill.sequence import teacher_topk
        from sdk.models import load_causal_lm

        c = self.ctx.config
        if c.evaluation.threads:
            torch.set_num_threads(c.evaluation.threads)
        model, tok = load_causal_lm(self.files()[0], self.trust)
        rows = teacher_topk(model, prompts, responses, k, tok.pad_token_id, batch_size=c.annotate.batch_size)
        return rows, model.get_output_embeddings().weight.shape[0]

    # ---- evaluation
    def artifact(self):
        from evaluation.harness import Artifact
        from sdk.students import count_params_on_disk

        c, run = self.ctx.config, self.ctx.run
        info = run.read_json("teacher/teacher.json")
        adapter = str(run.path("teacher", "adapter")) if info.get("adapter") else None
        size = sum(f.stat().st_size for f in Path(info["base"]).rglob("*.safetensors"))
        return Artifact("teacher-torch", "teacher", "torch", None, info["base"], count_params_on_disk(info["base"]),
                        size, {"model": info["base"], "adapter": adapter, "threads": c.evaluation.threads,
                               "batch_size": c.evaluation.batch_size, "trust_remote_code": self.trust}, 32.0)


def generate_in_worker(ctx, job: dict, prompts: list[list[int]], params: dict, name: str) -> dict:
    """A local runtime's generations in its own process (evaluation.worker)."""
    from evaluation.harness import run_worker

    res = run_worker({**job, "label": name, "generate": {"teacher": {"prompts": prompts, "params": params}}},
                     ctx.run.path("annotations", "work"), name)
    return res["generations"]["teacher"]


def cached_completions(ctx, teacher_id: str, job: dict, prompts: list[list[int]], params: dict):
    """Completions of a local teacher, cached on disk and resumable: only prompts without a cached answer are
    generated, in chunks, each chunk stored as it finishes."""
    from sdk.teachers.cache import CompletionCache

    cache = CompletionCache(cache_dir(), teacher_id, params)
    todo = [i for i, p in enumerate(prompts) if cache.get(p) is None]
    t0, tokens = time.perf_counter(), 0
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start: start + CHUNK]
        print(f"[distill] teacher sampling ({job['format']}): prompts {start + 1}-{start + len(chunk)} of {len(todo)}")
        out = generate_in_worker(ctx, job, [prompts[i] for i in chunk], params, "teacher-sampling")
        tokens += out["tokens"]
        cache.put_many([(prompts[i], [o["text"] for o in per]) for i, per in zip(chunk, out["outputs"])])
    seconds = time.perf_counter() - t0
    completions = [[{"text": text, "reasoning": None} for text in cache.get(p)] for p in prompts]
    return completions, {"generated_now": len(todo), "generation_seconds": round(seconds, 1),
                         "generation_tokens_per_s": round(tokens / seconds, 1) if todo else None}
