"""A batched llama.cpp engine for serving: requests that arrive together are decoded together, each in its
own sequence of one llama.cpp context, and prompt prefixes already in the KV cache are reused.

Why hand-rolled: llama-cpp-python's `Llama` decodes one sequence at a time and reuses only the previous
call's prefix, and its server serialises requests behind a lock. llama.cpp itself supports many sequences
per batch (`llama_batch` with a sequence id per token) and copying KV cells between sequences
(`llama_memory_seq_cp`): this module drives those C functions directly.

Exactness: a request's probabilities are those of the prompt evaluated alone (llama-cpp-python's `Llama`,
the evaluation's runtime), whatever else is cached or decoded with it. ggml-cpu's results depend on where a
token's KV cells sit and on the ubatch it is computed in: attention sums over the cells in SIMD lanes by
cell index (softmax's sum, KQ·V in llamafile's tinyBLAS, ggml's vec_dot for a single token); the repacked
matmuls (Q4_K) take a ubatch's rows by 4 (gemm) and the rest one by one (gemv); the generic Q6_K one
rounds differently for fewer than 8 rows. The 8-bit quantisation of the next matmul's activations can turn
such a last-bit difference into ~1e-2 in a label probability. Hence: a cache that is not unified (each
sequence its own stream, its token at position p in cell p); each sequence in a ubatch of its own
(`_chunks`); a reused prefix a multiple of _ALIGN tokens long and at least _MIN_ROWS prompt tokens decoded
(`_place`); only cells of prompts decoded that way reused, not those of generated tokens (`_release`).

One engine thread owns the context. Each step it takes the requests waiting in a bounded queue (a full
queue is refused at once: `Overloaded`), finds for each the cached sequence with the longest common token
prefix, copies those cells instead of evaluating them again, and decodes in one `llama_decode` call (split
at n_batch tokens) the new prompts' remaining tokens together with one token of every generation in
progress (continuous batching). Scoring requests resolve after their prompt; generations after their
end-of-generation token, a stop string or max_new_tokens. A finished sequence stays cached (its tokens
known) until its cells are needed: least recently used first.
"""

from __future__ import annotations

import codecs
import ctypes
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from deployment.runtimes.generation import Generation, GenerationParams, finish_generation


class Overloaded(Exception):
    """The request queue is full: the caller should answer 503 and let the client retry."""


class EngineStopped(Exception):
    """The engine is shutting down and takes no new requests."""


@dataclass
class Job:
    tokens: list[int]
    label_ids: list[int] | None = None  # scoring: probabilities of these next tokens, renormalised
    params: GenerationParams | None = None  # generation
    on_text: Callable[[str], None] | None = None  # streaming: called with each new piece of text
    future: Future = field(default_factory=Future)
    submitted: float = field(default_factory=time.perf_counter)
    # engine state
    seq: int = -1
    pending: list[int] = field(default_factory=list)  # tokens still to decode
    pos: int = 0  # position of pending[0]
    generated: list[int] = field(default_factory=list)
    text: bytes = b""
    # streaming: a character split over two tokens (CJK, accents, emoji) is held until whole, never sent as U+FFFD
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    sampler: object = None
    ttft: float = 0.0
    reused: int = 0  # prompt tokens whose KV came from the cache


# a prompt's tokens are decoded in pieces that start at a multiple of _ALIGN (ggml-cpu's repack.cpp
# forward_mul_mat: gemm over a ubatch's first rows by 4, gemv over the last n % 4) and hold _MIN_ROWS tokens
# at least (a single token takes another attention path; Q6_K's matmul rounds differently below 8 rows),
# as the prompt evaluated alone does (module docstring)
_ALIGN, _MIN_ROWS = 4, 8


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class LlamaCppEngine:
    def __init__(self, model_path: str, threads: int, n_seq: int = 32, n_ctx: int = 8192, n_batch: int = 512,
                 max_queue: int = 64, max_prompt_tokens: int = 1024, kv_f32: bool = False, flash_attn: int = 0,
                 prefix_cache: bool = True):
        """n_seq: sequences decoded together at most (and cached); n_ctx: KV cells of all sequences
        together, each sequence getting n_ctx / n_seq of them but at least max_prompt_tokens; max_queue:
        requests waiting beyond those being decoded before new ones are refused."""
        import logging

        import llama_cpp

        from deployment.runtimes.llama_cpp_runtime import check_build

        if n_batch < 2 * _MIN_ROWS:
            raise ValueError(f"n_batch must be {2 * _MIN_ROWS} at least")
        check_build()
        self._ll = llama_cpp
        # llama.cpp's log goes through llama-cpp-python's logger: errors only (as Llama(verbose=False))
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        self.model = llama_cpp.llama_model_load_from_file(model_path.encode(), mparams)
        if not self.model:
            raise ValueError(f"llama.cpp cannot load {model_path}")
        cparams = llama_cpp.llama_context_default_params()
        per_seq = max(n_ctx // n_seq, max_prompt_tokens)
        n_ctx = per_seq * n_seq
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = n_ctx, n_batch, n_batch
        cparams.n_seq_max = n_seq
        cparams.n_threads = cparams.n_threads_batch = threads
        # one stream of cells per sequence: results do not depend on what else is cached (module docstring)
        cparams.kv_unified = False
        cparams.no_perf = True
        # as llama-cpp-python's Llama (the evaluation's runtime): its default is off, llama.cpp's is "auto"
        cparams.flash_attn_type = flash_attn
        if kv_f32:
            cparams.type_k = cparams.type_v = 0  # GGML_TYPE_F32
        self.ctx = llama_cpp.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            llama_cpp.llama_model_free(self.model)
            raise ValueError(f"llama.cpp cannot create a context of {n_ctx} cells for {n_seq} sequences")
        self.mem = llama_cpp.llama_get_memory(self.ctx)
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_seq, self.n_ctx, self.n_batch, self.threads = n_seq, n_ctx, n_batch, threads
        self.max_prompt_tokens = max_prompt_tokens
        self.prefix_cache = prefix_cache
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.cached: OrderedDict[int, list[int]] = OrderedDict()  # idle sequence -> tokens in its cells (LRU)
        self.free = list(range(n_seq))
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.stats = {"requests": 0, "prompt_tokens": 0, "reused_tokens": 0, "decode_calls": 0, "batched_jobs": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="llama-engine", daemon=True)
        self._thread.start()

    # ---- public
    def submit(self, job: Job) -> Future:
        if self._stop.is_set():
            raise EngineStopped("the server is shutting down")
        if not job.tokens:
            raise ValueError("the prompt is empty")
        extra = job.params.max_new_tokens if job.params else 0
        if len(job.tokens) + extra > self.max_prompt_tokens:
            raise ValueError(f"prompt of {len(job.tokens)} tokens + {extra} new tokens exceeds the server's limit "
                             f"of {self.max_prompt_tokens}")
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(f"{self.queue.maxsize} requests already waiting") from None
        return job.future

    def score(self, tokens: list[int], label_ids: list[int]) -> np.ndarray:
        return self.submit(Job(tokens=list(tokens), label_ids=list(label_ids))).result()

    def generate(self, tokens: list[int], params: GenerationParams,
                 on_text: Callable[[str], None] | None = None) -> Generation:
        return self.submit(Job(tokens=list(tokens), params=params, on_text=on_text)).result()

    def detokenize(self, ids: Sequence[int]) -> bytes:
        out = b""
        buf = ctypes.create_string_buffer(64)
        for t in ids:
            n = self._ll.llama_token_to_piece(self.vocab, t, buf, 64, 0, False)
            out += buf.raw[:n]
        return out

    def pending(self) -> int:
        return self.queue.qsize()

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking requests, finish those queued or in progress, then free the context."""
        self._stop.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._ll.llama_batch_free(self.batch)
            self._ll.llama_free(self.ctx)
            self._ll.llama_model_free(self.model)

    # ---- engine thread
    def _loop(self) -> None:
        active: list[Job] = []  # generations in progress
        waiting: list[Job] = []  # taken from the queue, no sequence free yet
        while True:
            # take from the queue only what idle sequences can start: the rest waits there, and a full
            # queue refuses new requests (bounded backlog)
            idle = len(self.free) + len(self.cached)
            try:
                if not active and not waiting:
                    if self._stop.is_set() and self.queue.empty():
                        return
                    waiting.append(self.queue.get(timeout=0.05))
                while len(waiting) < idle:
                    waiting.append(self.queue.get_nowait())
            except queue.Empty:
                pass
            if not waiting and not active:
                continue
            started = []
            while waiting and (self.free or self.cached):
                job = waiting.pop(0)
                try:
                    self._place(job)
                except Exception as err:  # noqa: BLE001 - the request fails, the engine goes on
                    job.future.set_exception(err)
                    continue
                started.append(job)
            try:
                self._step(started, active)
            except Exception as err:  # noqa: BLE001 - a failed decode fails its requests, not the server
                for job in started + active:
                    self._release(job, keep=False)
                    if not job.future.done():
                        job.future.set_exception(err)
                active = []
                continue
            active = [j for j in active + started if j.params is not None and not j.future.done()]

    def _place(self, job: Job) -> None:
        """A sequence for the job, with a copy of the cells of the longest cached prefix of its prompt (the
        source stays cached, so requests of one step that share a prefix all reuse it)."""
        ll = self._ll
        best, best_len = None, 0
        for seq, toks in self.cached.items() if self.prefix_cache else ():
            n = _common_prefix(job.tokens, toks)
            if n > best_len:
                best, best_len = seq, n
        # a multiple of _ALIGN, and _MIN_ROWS tokens decoded at least (all of a shorter prompt): the last one's
        # logits are the answer, computed as when the prompt is evaluated alone (module docstring)
        reuse = max(0, min(best_len, len(job.tokens) - _MIN_ROWS)) // _ALIGN * _ALIGN
        if self.free:
            seq = self.free.pop()
        else:  # the least recently used idle sequence other than the prefix source
            seq = next((s for s in self.cached if s != best), None)
            if seq is not None:
                del self.cached[seq]
        if seq is None:  # only the prefix source is left: take it over, keeping its first `reuse` cells
            seq = best
            del self.cached[seq]
            ll.llama_memory_seq_rm(self.mem, seq, reuse, -1)
        else:
            ll.llama_memory_seq_rm(self.mem, seq, -1, -1)
            if best is not None and reuse > 0:
                # across streams llama.cpp copies whole streams only (at the next decode): copy, then cut
                ll.llama_memory_seq_cp(self.mem, best, seq, -1, -1)
                ll.llama_memory_seq_rm(self.mem, seq, reuse, -1)
                self.cached.move_to_end(best)
            else:
                reuse = 0
        job.seq, job.pos, job.pending, job.reused = seq, reuse, job.tokens[reuse:], reuse
        self.stats["requests"] += 1
        self.stats["prompt_tokens"] += len(job.tokens)
        self.stats["reused_tokens"] += reuse

    def _step(self, started: list[Job], active: list[Job]) -> None:
        """One decode over the new prompts and one token of each generation in progress."""
        entries: list[tuple[Job, int, int, bool]] = []  # (job, token, pos, wants logits)
        for job in active:
            entries.append((job, job.pending[0], job.pos, True))
        for job in started:
            last = len(job.pending) - 1
            entries += [(job, t, job.pos + i, i == last) for i, t in enumerate(job.pending)]
        if not entries:
            return
        self.stats["batched_jobs"] += len(started) + len(active)
        for chunk in self._chunks(entries):
            self._decode(chunk)
            for i, (job, _, pos, wants) in enumerate(chunk):
                if wants:
                    self._after_logits(job, i, pos)

    def _chunks(self, entries: list[tuple[Job, int, int, bool]]) -> list[list[tuple[Job, int, int, bool]]]:
        """The entries in llama_decode calls of at most n_batch tokens, sequences in decreasing id order: with
        a cache that is not unified llama.cpp puts only consecutive increasing sequence ids in one ubatch (with
        as many tokens each), so every sequence gets a ubatch of its own, all its tokens as when evaluated alone.
        A job is split only when longer than n_batch, into pieces of a multiple of _ALIGN tokens, of _MIN_ROWS
        at least."""
        by_job: dict[int, list[tuple[Job, int, int, bool]]] = {}
        for e in entries:
            by_job.setdefault(id(e[0]), []).append(e)
        pieces = []
        size = self.n_batch // _ALIGN * _ALIGN
        for group in sorted(by_job.values(), key=lambda g: -g[0][0].seq):
            cuts = list(range(0, len(group), size))
            if len(cuts) > 1 and len(group) - cuts[-1] < _MIN_ROWS:
                cuts[-1] -= _MIN_ROWS
            pieces += [group[a:b] for a, b in zip(cuts, cuts[1:] + [len(group)])]
        chunks: list[list[tuple[Job, int, int, bool]]] = []
        for piece in pieces:
            if chunks and len(chunks[-1]) + len(piece) <= self.n_batch:
                chunks[-1] += piece
            else:
                chunks.append(list(piece))
        return chunks

    def _decode(self, chunk: list[tuple[Job, int, int, bool]]) -> None:
        ll, b = self._ll, self.batch
        for i, (job, token, pos, wants) in enumerate(chunk):
            b.token[i] = token
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = job.seq
            b.logits[i] = 1 if wants else 0
        b.n_tokens = len(chunk)
        while True:
            rc = ll.llama_decode(self.ctx, b)
            self.stats["decode_calls"] += 1
            if rc == 0:
                return
            if rc == 1 and self._evict_one({j.seq for j, *_ in chunk}):
                continue  # no room in the KV cache: free an idle cached sequence and retry
            raise RuntimeError(f"llama_decode failed ({rc}) on a batch of {len(chunk)} tokens")

    def _evict_one(self, busy: set[int]) -> bool:
        for seq in list(self.cached):
            if seq not in busy:
                del self.cached[seq]
                self._ll.llama_memory_seq_rm(self.mem, seq, -1, -1)
                self.free.append(seq)
                return True
        return False

    def _after_logits(self, job: Job, index: int, pos: int) -> None:
        ll = self._ll
        if job.params is None:  # scoring: the label words' probabilities after the prompt
            row = ll.llama_get_logits_ith(self.ctx, index)
            z = np.array([row[i] for i in job.label_ids], dtype=np.float64)
            e = np.exp(z - z.max())
            self._release(job, keep=True)
            job.future.set_result(e / e.sum())
            return
        p = job.params
        if job.sampler is None:
            from deployment.runtimes.llama_cpp_runtime import sampler_chain

            job.sampler = sampler_chain(p, p.seed)
            job.ttft = time.perf_counter() - job.submitted
        token = ll.llama_sampler_sample(job.sampler, self.ctx, index)
        ended = bool(ll.llama_vocab_is_eog(self.vocab, token))
        done = ended
        if not ended:
            job.generated.append(token)
            piece = self.detokenize([token])
            seen = len(job.text)
            job.text += piece
            if job.on_text is not None:
                text = job.decoder.decode(piece)
                if text:
                    job.on_text(text)
            stops = [s.encode() for s in p.stop]
            longest = max((len(s) for s in stops), default=0)
            if any(s in job.text[max(0, seen - longest + 1):] for s in stops):
                done = True
            elif len(job.generated) >= p.max_new_tokens:
                done = True
        job.pos = pos + 1
        job.pending = [token]
        if done:
            ll.llama_sampler_free(job.sampler)
            job.sampler = None
            gen = finish_generation(job.generated, lambda ids: self.detokenize(ids).decode("utf-8", "replace"),
                                    p.stop, ended, job.ttft, time.perf_counter() - job.submitted)
            self._release(job, keep=True)
            job.future.set_result(gen)

    def _release(self, job: Job, keep: bool) -> None:
        """The job's sequence becomes an idle cache entry (its tokens known) or is freed. Only the cells of
        a prompt of _MIN_ROWS tokens at least are offered for reuse: those of a shorter one, and those of
        generated tokens (decoded one at a time), were computed otherwise than in a longer prompt."""
        if job.seq < 0 or job.seq in self.cached or job.seq in self.free:
            return
        if keep:
            self.cached[job.seq] = list(job.tokens) if len(job.tokens) >= _MIN_ROWS else []
        else:
            self._ll.llama_memory_seq_rm(self.mem, job.seq, -1, -1)
            self.free.append(job.seq)
