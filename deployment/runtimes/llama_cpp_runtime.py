"""llama.cpp runtime (llama-cpp-python). Prompts are scored from token ids with eval(); echo=True
prompt logprobs were wrong in 0.3.x. Without logits_all, Llama.eval() no longer copies the last
logits row into `scores`, so it is read with llama_get_logits_ith(ctx, -1).
Generation steps tokens with eval() and a llama.cpp sampler chain (see sampler_chain)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import numpy as np

from deployment.runtimes.generation import Generation, GenerationParams, finish_generation
from sdk.errors import DistillError


# Set to 1 to run a llama.cpp built with its AMX kernels anyway (on a machine where they were seen to work).
ALLOW_AMX_ENV = "DISTILL_ALLOW_LLAMA_AMX"


def amx_problem(system_info: str) -> str | None:
    """Why a llama.cpp whose system info reads `system_info` must not be used here; None if it may.

    A build made with -march=native on a Xeon since Sapphire Rapids has llama.cpp's AMX kernels, which segfault
    in ggml_backend_amx_mul_mat on quantized models (ggml-org/llama.cpp#20824; on this project's machines every
    Q8_0, Q4_K_M and Q4_1 file, llama-cpp-python 0.3.36), killing the process with no Python error. The Makefile
    builds the wheel without them; this names the fix for an installation made otherwise."""
    if "AMX_INT8 = 1" not in system_info or os.environ.get(ALLOW_AMX_ENV) == "1":
        return None
    return ("this llama-cpp-python was built with llama.cpp's AMX kernels, which crash on quantized models "
            "(ggml-org/llama.cpp#20824). Rebuild it without them: CMAKE_ARGS=\"-DCMAKE_C_FLAGS='-mno-amx-tile "
            "-mno-amx-int8 -mno-amx-bf16' -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'\" "
            "pip install --force-reinstall --no-deps --no-cache-dir llama-cpp-python (or `make install` on a new "
            f".venv), or set {ALLOW_AMX_ENV}=1 where they are known to work")


def check_build() -> None:
    """Refuse, with the fix, a llama.cpp that would segfault on quantized models (see amx_problem)."""
    import llama_cpp

    problem = amx_problem(llama_cpp.llama_print_system_info().decode(errors="replace"))
    if problem:
        raise DistillError(problem)


class LlamaCppRuntime:
    def __init__(self, model: str, threads: int | None = None, n_ctx: int = 512, logits_all: bool = False,
                 kv_f32: bool = False):
        """n_ctx: the longest prompt + new tokens this instance can process.
        kv_f32: keep the KV cache in F32 instead of llama.cpp's default F16 (exact parity checks)."""
        from llama_cpp import Llama

        check_build()
        if not os.path.isfile(model):
            raise FileNotFoundError(f"GGUF file {model} does not exist")
        self.threads = threads or os.cpu_count() or 1
        self.n_ctx = n_ctx
        self.llm = Llama(model_path=model, n_ctx=n_ctx, n_batch=n_ctx, n_threads=self.threads,
                         n_threads_batch=self.threads, logits_all=logits_all, verbose=False,
                         **({"type_k": 0, "type_v": 0} if kv_f32 else {}))  # 0 = GGML_TYPE_F32

    def logits(self, seq: Sequence[int]) -> np.ndarray:
        """[len(seq), vocab] logits at every position (needs logits_all=True)."""
        self.llm.reset()
        self.llm.eval(list(seq))
        return np.array(self.llm.scores[: self.llm.n_tokens], dtype=np.float32)

    def last_logits(self, seq: Sequence[int]) -> np.ndarray:
        """[vocab] logits of the next token after seq."""
        import llama_cpp

        self.llm.reset()
        self.llm.eval(list(seq))
        row = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(row, shape=(self.llm.n_vocab(),)).astype(np.float32)

    def topk_last(self, seqs: Sequence[Sequence[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(logits [N, k], ids [N, k]): the k most likely next tokens after each prompt, best first."""
        values, ids = np.empty((len(seqs), k), np.float32), np.empty((len(seqs), k), np.int64)
        for i, s in enumerate(seqs):
            row = self.last_logits(s)
            top = np.argpartition(-row, k - 1)[:k]
            top = top[np.argsort(-row[top], kind="stable")]
            values[i], ids[i] = row[top], top
        return values, ids

    def topk_responses(self, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], k: int
                       ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per example: (log-probabilities [len(response), k], ids): the top-k log_softmax at every response
        token's position (the distribution it was drawn from). Needs logits_all=True."""
        out = []
        for p, r in zip(prompts, responses):
            logits = self.logits(list(p) + list(r))[len(p) - 1: len(p) + len(r) - 1].astype(np.float64)
            logp = logits - logits.max(-1, keepdims=True)
            logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
            top = np.argsort(-logp, axis=-1, kind="stable")[:, :k]
            out.append((np.take_along_axis(logp, top, -1).astype(np.float32), top.astype(np.int64)))
        return out

    def score_one(self, seq: Sequence[int], label_ids: Sequence[int]) -> np.ndarray:
        import llama_cpp

        self.llm.reset()
        self.llm.eval(list(seq))
        row = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        z = np.array([row[i] for i in label_ids], dtype=np.float64)
        e = np.exp(z - z.max())
        return e / e.sum()

    def score(self, seqs: Sequence[Sequence[int]], label_ids: Sequence[int]) -> np.ndarray:
        from tqdm.auto import tqdm

        return np.stack([self.score_one(s, label_ids) for s in tqdm(seqs, desc="llama.cpp scoring", leave=False)])

    def generate(self, prompts: Sequence[Sequence[int]], params: GenerationParams,
                 progress: str | None = None) -> list[list[Generation]]:
        """One sequence at a time (llama-cpp-python decodes a single sequence); completion i of a prompt is
        sampled with seed params.seed + i, greedy ones are decoded once and copied."""
        from tqdm.auto import tqdm

        out = []
        for prompt in tqdm(prompts, desc=progress, disable=progress is None, leave=False):
            if params.greedy:
                out.append([self.generate_one(prompt, params)] * params.n)
            else:
                out.append([self._run(prompt, params, params.seed + i) for i in range(params.n)])
        return out

    def generate_one(self, prompt: Sequence[int], params: GenerationParams) -> Generation:
        return self._run(prompt, params, params.seed)

    def _run(self, prompt: Sequence[int], params: GenerationParams, seed: int) -> Generation:
        import llama_cpp

        if len(prompt) == 0:
            raise ValueError("prompt is empty: generation needs at least one prompt token")
        if len(prompt) + params.max_new_tokens > self.n_ctx:
            raise DistillError(f"prompt of {len(prompt)} tokens + max_new_tokens {params.max_new_tokens} exceeds "
                               f"the llama.cpp context n_ctx={self.n_ctx}; raise the runtime's n_ctx")
        vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        stop = [s.encode() for s in params.stop]
        longest_stop = max((len(s) for s in stop), default=0)
        ids: list[int] = []
        text = b""
        ended = False
        sampler = sampler_chain(params, seed)
        try:
            t0 = time.perf_counter()
            self.llm.reset()  # no KV-cache reuse from the previous prompt: every call (and its timing) starts cold
            self.llm.eval(list(prompt))
            for step in range(params.max_new_tokens):
                token = llama_cpp.llama_sampler_sample(sampler, self.llm.ctx, -1)
                if step == 0:
                    ttft = time.perf_counter() - t0
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    ended = True
                    break
                ids.append(token)
                seen = len(text)
                text += self.llm.detokenize([token])
                # stop strings are matched on bytes, over the part the new bytes could have completed
                if any(s in text[max(0, seen - longest_stop + 1):] for s in stop):
                    break
                if len(ids) < params.max_new_tokens:
                    self.llm.eval([token])
            seconds = time.perf_counter() - t0
        finally:
            llama_cpp.llama_sampler_free(sampler)
        return finish_generation(ids, self._decode, params.stop, ended, ttft, seconds)

    def _decode(self, ids: Sequence[int]) -> str:
        return self.llm.detokenize(list(ids)).decode("utf-8", errors="replace")


def sampler_chain(params: GenerationParams, seed: int):
    """llama.cpp's own samplers, chained in transformers' order (temperature, then top-p, then draw) so
    temperature and top_p mean the same in every runtime. Built here rather than through Llama.generate(),
    whose chain adds top_k=40 and min_p=0.05 by default and applies top-p before temperature; stepping the
    tokens here also yields the sampled ids themselves, which create_completion's text stream does not
    (and re-tokenising its text does not give back the sampled ids). temperature 0 = llama.cpp's greedy
    sampler, an argmax with no penalties."""
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if params.greedy:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
    else:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
    return chain
