"""A teacher behind an OpenAI-compatible endpoint (DeepSeek's API, vLLM, llama.cpp's server, ...).

What such a teacher yields: text, a reasoning model's `reasoning_content`, and at most top-k
log-probabilities per generated token. Every answer goes through the content-addressed cache first: a
re-run makes no call, a killed run resumes where it stopped. Requests run `concurrency` at a time under an
optional client-side rate limit; transport failures (429 honouring Retry-After, 5xx, timeouts, cut
connections) are retried with exponential backoff and jitter by the `openai` client, malformed replies by
this module, and a reply still unusable after `max_retries` stops the run naming the record. Tokens and cost
are counted; a budget stops the run before it would be exceeded: what a run folder spent is kept in its
ledger (`teacher_spend.json`), so annotation and the teacher's evaluation share one budget, across re-runs
and processes. The API key is read from the
environment variable named in the config and kept in memory only: it is in no request key, cache entry,
log line or error message.
"""

from __future__ import annotations

import contextvars
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, as_completed, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deployment.runtimes.generation import split_reasoning
from sdk.errors import DistillError
from sdk.rundir import stable_hash
from sdk.teachers.cache import ResponseCache, request_key


class MalformedReply(ValueError):
    """A reply that parsed as HTTP but not as the answer asked for."""


class BudgetReached(DistillError):
    pass


LEDGER_FILE = "teacher_spend.json"


class SpendLedger:
    """What a run folder has spent on teacher calls (`cost`, `calls`), and the worst cost of this process's
    calls in flight: the budget is held against both. With a path, the file is the count: read before each
    reservation and updated after each billed reply (read, add, write atomically, under a lock on a sidecar
    file), so the annotate stage, the evaluation worker (another process) and a re-run after a stop spend
    from one budget, and a process never writes back a stale total. Without a path (tests, a client outside a
    run), it lives in memory. One object per file per process: the clients of one process share its
    reservations. (Processes of one run do not call the teacher at the same time; their reservations are
    their own.)"""

    _open: dict[str, "SpendLedger"] = {}
    _open_lock = threading.Lock()

    def __init__(self, path: Path | None = None):
        self.path, self.cost, self.calls = path, 0.0, 0
        self.reserved, self.in_flight = 0.0, 0
        self.lock = threading.Lock()
        self._read()

    @classmethod
    def at(cls, path: Path | str | None) -> "SpendLedger":
        if path is None:
            return cls()
        path = Path(path).resolve()
        with cls._open_lock:
            if str(path) not in cls._open:
                cls._open[str(path)] = cls(path)
            return cls._open[str(path)]

    def _read(self) -> None:
        if self.path is None or not self.path.is_file():
            return
        import json

        try:
            data = json.loads(self.path.read_text())
            cost, calls = float(data["cost"]), int(data["calls"])
            if not (math.isfinite(cost) and cost >= 0 and calls >= 0):
                raise ValueError("negative or not finite")
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DistillError(f"{self.path}: the run's record of teacher spending is damaged ({err}); it counts "
                               "money already spent against teacher.budget, so it is not guessed: check "
                               "the endpoint's usage page, then delete the file to count from 0") from None
        self.cost, self.calls = cost, calls

    def _file_lock(self):
        import contextlib
        import fcntl

        if self.path is None:
            return contextlib.nullcontext()

        @contextlib.contextmanager
        def locked():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path.with_name(self.path.name + ".lock"), "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
        return locked()

    def reserve(self, worst: float, budget: float | None) -> None:
        with self.lock, self._file_lock():
            self._read()  # another process (the evaluation worker, a notebook's earlier run) may have spent
            if budget is not None and self.cost + self.reserved + worst > budget:
                flight = (f", {self.reserved:.4f} held for {self.in_flight} calls still in flight"
                          if self.in_flight else "")
                where = f" (recorded in {self.path})" if self.path is not None else ""
                raise BudgetReached(
                    f"teacher budget {budget:g} reached: {self.cost:.4f} spent on {self.calls} calls in this run"
                    f"{where}{flight}, and the next call could cost up to {worst:.4f}; answers so far are "
                    "cached: raise teacher.budget and re-run to resume")
            self.reserved += worst
            self.in_flight += 1

    def settle(self, worst: float, cost: float | None) -> None:
        """A reserved call ended: `cost` when a reply came (billed), None when none did."""
        with self.lock, self._file_lock():
            self.reserved -= worst
            self.in_flight -= 1
            if cost is None:
                return
            self._read()
            self.cost += cost
            self.calls += 1
            if self.path is not None:
                import json

                from sdk.rundir import atomic_write_text

                atomic_write_text(self.path, json.dumps({"cost": self.cost, "calls": self.calls}))


@dataclass
class Usage:
    calls: int = 0  # requests answered by the endpoint in this process (after retries)
    cache_hits: int = 0
    malformed_retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float = 0.0

    def add(self, other: "Usage") -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)


class RateLimiter:
    """At most `per_minute` request starts per minute, spaced evenly (thread-safe)."""

    def __init__(self, per_minute: float | None):
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        time.sleep(max(0.0, start - now))


def normalize_word(text: str) -> str:
    return text.strip().strip(".,!?:;\"'`*").lower()


class OpenAITeacher:
    """The `openai` teacher backend. Plain arguments: the stage unpacks the validated config."""

    def __init__(self, *, base_url: str, model: str, api_key_env: str | None, api: str, top_logprobs: int,
                 decision_samples: int, decision_temperature: float, reasoning: str, concurrency: int,
                 requests_per_minute: float | None, timeout_s: float, max_retries: int, prices: dict[str, float],
                 budget: float | None, extra_body: dict[str, Any], cache: ResponseCache | None, chat: bool,
                 seed: int = 0, kind: str = "openai", ledger: Path | str | None = None, dry_run: bool = False):
        import openai

        key = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key and not dry_run:  # a dry run sends nothing: it needs no key
                raise DistillError(f"teacher.api_key_env: environment variable {api_key_env} is not set (it must "
                                   "hold the API key; set teacher.api_key_env: null for a server without keys)")
        self.base_url, self.model, self.api_key_env = base_url.rstrip("/"), model, api_key_env
        self._key = key  # held for the client and for redacting error bodies; never stored or hashed
        self.api = api if api != "auto" else ("chat" if chat else "completions")
        self.top_logprobs, self.decision_samples = top_logprobs, decision_samples
        self.decision_temperature, self.reasoning = decision_temperature, reasoning
        self.concurrency, self.max_retries, self.seed = concurrency, max_retries, seed
        self.prices, self.budget, self.extra_body = prices, budget, dict(extra_body)
        self.cache = cache
        self.usage = Usage()  # this object's calls; the budget counts the run's, in the ledger
        self.ledger = SpendLedger.at(ledger)
        self._lock = threading.Lock()
        self._stopping = threading.Event()  # set when a batch stops: its running prompts send nothing more
        self._limiter = RateLimiter(requests_per_minute)
        self.logprobs_refused: str | None = None  # why decisions stopped asking for log-probabilities
        self._answered_without_logprobs = 0  # prompts whose logprobs request was refused, plain one answered
        self.dry_run = dry_run  # True: cache misses are planned (counted, estimated), not sent
        self.planned: list[tuple[int, int]] = []  # (estimated prompt tokens, max completion tokens) per miss
        # calls a dry run plans only if the endpoint gives no log-probabilities (then decisions are sampled)
        self.planned_without_logprobs: list[tuple[int, int]] = []
        # the client retries 408/409/429/5xx, timeouts and cut connections with backoff, honouring Retry-After
        self._client = openai.OpenAI(base_url=self.base_url, api_key=key or "none", timeout=timeout_s,
                                     max_retries=max_retries)

    # ---- identity: what a cached answer depends on (never the key)
    def identity(self) -> str:
        return stable_hash(["openai", self.base_url, self.model, self.api, self.extra_body])

    # ---- requests
    def _body(self, text: str, *, max_tokens: int, temperature: float, top_p: float | None = None,
              stop: Sequence[str] = (), logprobs: int = 0, seed: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens, "temperature": temperature}
        if top_p is not None and temperature > 0:
            body["top_p"] = top_p
        if stop:
            body["stop"] = list(stop)
        if seed is not None:
            body["seed"] = seed
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": text}]
            if logprobs:
                body.update(logprobs=True, top_logprobs=logprobs)
        else:
            body["prompt"] = text
            if logprobs:
                body["logprobs"] = logprobs
        return {**body, **self.extra_body}

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prices.get("input_per_million", 0.0)
                + completion_tokens * self.prices.get("output_per_million", 0.0)) / 1e6

    def _call(self, body: dict[str, Any]) -> dict[str, Any]:
        body = {k: v for k, v in body.items() if not k.startswith("_")}  # "_sample": part of the cache key only
        extra = {k: v for k, v in body.items() if k not in _KNOWN_ARGS}
        args = {k: v for k, v in body.items() if k in _KNOWN_ARGS}
        create = self._client.chat.completions.create if self.api == "chat" else self._client.completions.create
        resp = create(**args, extra_body=extra or None)
        if isinstance(resp, str) or not hasattr(resp, "model_dump"):
            raise MalformedReply(f"reply is not a completion object: {str(resp)[:80]!r}")
        return resp.model_dump()

    def _answer(self, body: dict[str, Any], parse: Callable[[dict[str, Any]], dict[str, Any]], record: str,
                est_prompt_tokens: int, placeholder: dict[str, Any] | None = None,
                only_without_logprobs: bool = False) -> dict[str, Any]:
        """The parsed answer to `body`: from the cache, else from the endpoint (then cached at once)."""
        import openai

        key = request_key(["openai", self.identity()], body)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                with self._lock:
                    self.usage.cache_hits += 1
                return hit
        if self.dry_run:
            with self._lock:
                (self.planned_without_logprobs if only_without_logprobs else self.planned).append(
                    (est_prompt_tokens, int(body.get("max_tokens", 0))))
            return {"text": "", "reasoning": None, **(placeholder or {})}
        # worst-case cost of each attempt, held against the budget until its reply comes
        worst = self._cost(est_prompt_tokens, int(body.get("max_tokens", 0)))
        for attempt in range(self.max_retries + 1):
            if self._stopping.is_set():  # the run is stopping (Ctrl-C, another prompt's error): start nothing
                raise _Stopped()
            self.ledger.reserve(worst, self.budget)
            billed = None  # a reply came: what it cost (its usage, else the worst case), paid even if unusable
            try:
                self._limiter.wait()
                t0 = time.perf_counter()
                raw = self._call(body)
                billed = self._billed(raw, worst)
                answer = parse(raw)
                answer["usage"] = _usage(raw)  # checked here: a reply with unreadable usage is retried
                break
            except openai.APIStatusError as err:
                # the client's message repeats the status ("Error code: 400 - ..."), said once here
                said = _short(_redacted(re.sub(r"^Error code: \d+ - ", "", err.message), self._key))
                if err.status_code in (400, 422) and ("logprobs" in body or "top_logprobs" in body):
                    raise _LogprobsRefused(f"HTTP {err.status_code}: {said}") from None
                raise DistillError(f"teacher endpoint {self.base_url} refused {record}: HTTP {err.status_code}"
                                   f"{_hint(err.status_code, self.api_key_env)}: {said}") from None
            except openai.APIConnectionError as err:
                raise DistillError(f"teacher endpoint {self.base_url} unreachable for {record} after "
                                   f"{self.max_retries} retries: {type(err).__name__}") from None
            except (openai.APIResponseValidationError, ValueError, KeyError, TypeError, IndexError,
                    AttributeError, OverflowError) as err:  # any reply not shaped as asked
                with self._lock:
                    self.usage.malformed_retries += 1
                    self.usage.cost += billed or 0.0
                if attempt == self.max_retries:
                    raise DistillError(f"teacher endpoint {self.base_url}: malformed reply for {record} after "
                                       f"{self.max_retries + 1} attempts: {type(err).__name__}: "
                                       f"{_short(_redacted(str(err), self._key))}") from None
                time.sleep(min(0.5 * 2 ** attempt, 8.0) * (0.5 + random.random()))
            finally:
                self.ledger.settle(worst, billed)
        prompt_tokens, completion_tokens = answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"]
        cost = self._cost(prompt_tokens, completion_tokens)
        answer["usage"].update(cost=cost, latency_ms=1000.0 * (time.perf_counter() - t0))
        if self.cache is not None:
            self.cache.put(key, answer)
        with self._lock:
            u = self.usage
            u.calls += 1
            u.prompt_tokens += prompt_tokens
            u.completion_tokens += completion_tokens
            u.reasoning_tokens += answer["usage"]["reasoning_tokens"]
            u.cost += cost
        return answer

    def _billed(self, raw: Any, worst: float) -> float:
        """What a reply cost: from its usage, or the worst case when the usage cannot be read (it was billed)."""
        try:
            u = _usage(raw)
        except (MalformedReply, AttributeError, TypeError):
            return worst
        return self._cost(u["prompt_tokens"], u["completion_tokens"])

    def _map(self, fn: Callable[[int], Any], n: int, desc: str | None) -> list[Any]:
        """fn(i) for i < n, `concurrency` at a time, results in order; the first error stops the rest."""
        from tqdm.auto import tqdm

        out: list[Any] = [None] * n
        self._stopping.clear()

        def guarded(i: int) -> Any:
            try:
                return fn(i)
            except BaseException:
                self._stopping.set()  # before this thread takes the next prompt
                raise

        futures = {fut: i for i, fut in enumerate(_daemon_pool(guarded, n, self.concurrency))}
        try:
            # as they finish: the first error stops the batch at once, not after the prompts before it
            for fut in tqdm(as_completed(futures), total=n, desc=desc, disable=desc is None):
                out[futures[fut]] = fut.result()
        except KeyboardInterrupt:  # Ctrl-C: stop now; requests in flight are abandoned (cached if answered)
            self._stopping.set()
            for fut in futures:
                fut.cancel()
            raise
        except BaseException as err:
            self._stopping.set()  # running prompts start no further request
            for fut in futures:
                fut.cancel()
            wait(futures)  # the running ones end (each at its next request at the latest)
            if isinstance(err, _Stopped):  # a prompt that stopped because another failed: raise the failure
                for fut in futures:
                    cause = None if fut.cancelled() else fut.exception()
                    if cause is not None and not isinstance(cause, _Stopped):
                        raise cause from None
            raise
        return out

    # ---- what the stages ask for
    def decide(self, texts: Sequence[str], label_words: Sequence[str], est_tokens: Sequence[int],
               desc: str | None = "teacher decisions") -> list[dict[str, Any]]:
        """Per prompt: `label_logprobs` over the label words (log-probabilities renormalised over them),
        `source` (logprobs | samples), the answers read, and the mass the top-k gave the label words."""
        words = [normalize_word(w) for w in label_words]
        instruction = f"\n\nAnswer with one word: {' or '.join(w.strip() for w in label_words)}."
        shown = [t + instruction if self.api == "chat" else t for t in texts]

        def samples(i: int, only_without_logprobs: bool = False) -> dict[str, Any]:
            answers = []
            for j in range(self.decision_samples):
                temp = 0.0 if self.decision_samples == 1 else self.decision_temperature
                body = self._body(shown[i], max_tokens=_DECISION_MAX_TOKENS, temperature=temp,
                                  seed=self.seed + j if temp > 0 else None)
                if temp > 0:
                    body["_sample"] = j
                answers.append(self._answer(body, lambda raw: _parse_text(raw, self.api), f"decision prompt {i}",
                                            est_tokens[i], only_without_logprobs=only_without_logprobs))
            return _agreement(answers, words)

        def one(i: int) -> dict[str, Any]:
            refused = None
            if self.top_logprobs and self.logprobs_refused is None:
                try:
                    body = self._body(shown[i], max_tokens=1, temperature=0.0, logprobs=self.top_logprobs)
                    got = self._answer(body, lambda raw: _parse_decision_logprobs(raw, words, self.api),
                                       f"decision prompt {i}", est_tokens[i],
                                       {"label_logprobs": [-math.log(len(words))] * len(words)})
                    if got.get("label_logprobs") is not None:
                        if self.dry_run:  # what the prompt costs if the endpoint gives no log-probabilities
                            samples(i, only_without_logprobs=True)
                        return got
                    # the server answered and ignored the request for log-probabilities: it will do so again
                    self._refuse_logprobs("the endpoint answered without log-probabilities")
                except _LogprobsRefused as err:
                    refused = str(err)
                    if "logprob" in refused.lower():  # it says so itself: it will refuse them every time
                        self._refuse_logprobs(f"the endpoint refused log-probabilities ({refused})")
            got = samples(i)
            if refused is not None and self.logprobs_refused is None:
                # refused with logprobs, answered without: the refusal was theirs, unless the prompt alone is
                # at fault (one too long for a logprobs request); a few such prompts decide it for the run
                with self._lock:
                    self._answered_without_logprobs += 1
                    enough = self._answered_without_logprobs >= _REFUSALS_BEFORE_GIVING_UP
                if enough:
                    self._refuse_logprobs(f"the endpoint refused {_REFUSALS_BEFORE_GIVING_UP} requests for "
                                          f"log-probabilities that it answered without them (last: {refused})")
            return got

        return self._map(one, len(texts), desc)

    def _refuse_logprobs(self, why: str) -> None:
        with self._lock:
            if self.logprobs_refused is None:
                self.logprobs_refused = why
                print(f"[distill] warning: {why}; decisions are read from {self.decision_samples} sampled "
                      f"answer(s) per prompt from here on (soft targets from agreement, one call each)", flush=True)

    def generate(self, texts: Sequence[str], *, n: int, max_new_tokens: int, temperature: float, top_p: float,
                 stop: Sequence[str], est_tokens: Sequence[int], desc: str | None = "teacher completions"
                 ) -> list[list[dict[str, Any]]]:
        """n completions per prompt: {"text", "reasoning", "finish"} (reasoning: the model's trace, if any)."""

        def one(k: int) -> dict[str, Any]:
            i, j = divmod(k, n)
            body = self._body(texts[i], max_tokens=max_new_tokens, temperature=temperature, top_p=top_p, stop=stop,
                              seed=self.seed + j if temperature > 0 else None)
            body["_sample"] = j  # distinct samples are distinct cache entries, even without a seed
            return self._answer(body, lambda raw: _parse_text(raw, self.api), f"prompt {i} sample {j}", est_tokens[i])

        flat = self._map(one, len(texts) * n, desc)
        return [flat[i * n:(i + 1) * n] for i in range(len(texts))]

    def estimate(self) -> dict[str, Any]:
        """What the planned (dry-run) calls would take: prompt tokens as estimated, completions at most their
        max_tokens, and the cost bounds that follow from the prices."""
        prompt_tokens = sum(p for p, _ in self.planned)
        out_tokens = sum(m for _, m in self.planned)
        extra_prompt = sum(p for p, _ in self.planned_without_logprobs)
        extra_out = sum(m for _, m in self.planned_without_logprobs)
        return {"requests": len(self.planned), "cached": self.usage.cache_hits, "prompt_tokens": prompt_tokens,
                "max_completion_tokens": out_tokens, "prompt_cost": self._cost(prompt_tokens, 0),
                "max_cost": self._cost(prompt_tokens, out_tokens),
                "without_logprobs": {"requests": len(self.planned_without_logprobs), "prompt_tokens": extra_prompt,
                                     "max_completion_tokens": extra_out,
                                     "max_cost": self._cost(extra_prompt, extra_out)},
                "spent_before": self.ledger.cost}


def _daemon_pool(fn: Callable[[int], Any], n: int, workers: int) -> list[Future]:
    """fn(i) for i < n on `workers` daemon threads, as futures (cancel() drops the ones not started).

    Why not ThreadPoolExecutor: its threads are joined when the interpreter exits, so a Ctrl-C'd `distill` waited
    for every request in flight to answer or time out (timeout_s times the client's retries: minutes); an HTTP
    read blocked in another thread cannot be interrupted, and closing the client does not wake it. Daemon
    threads are abandoned at exit; each answer is cached the moment it arrives, so nothing received is lost."""
    import queue

    futures = [Future() for _ in range(n)]
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(n):
        todo.put(i)

    def work() -> None:
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            if not futures[i].set_running_or_notify_cancel():
                continue
            try:
                futures[i].set_result(fn(i))
            except BaseException as err:  # noqa: BLE001 - handed to the caller through the future
                futures[i].set_exception(err)

    for _ in range(min(workers, n)):  # each in a copy of the caller's context (how messages name settings)
        threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True,
                         name="teacher-request").start()
    return futures


def probe_endpoint(base_url: str, model: str, api_key_env: str | None, timeout_s: float = 10.0
                   ) -> tuple[list[str], list[str]]:
    """(problems, facts) from listing the endpoint's models (`GET <base_url>/models`, free): is it there, does
    it take the key, does it serve `model`. A server that does not list models is a fact, not a problem."""
    import difflib

    import openai

    key = os.environ.get(api_key_env) if api_key_env else None
    if api_key_env and not key:
        return [], []  # named already by the config checks
    client = openai.OpenAI(base_url=base_url.rstrip("/"), api_key=key or "none", timeout=timeout_s, max_retries=1)
    try:
        listed = [m.id for m in client.models.list()]
    except openai.AuthenticationError:
        return [f"teacher.api_key_env: {base_url} refused the key in ${api_key_env} (HTTP 401)" if api_key_env else
                f"teacher.api_key_env: {base_url} wants an API key (HTTP 401): set teacher.api_key_env to the "
                "variable that holds it"], []
    except openai.PermissionDeniedError:
        return [f"teacher.api_key_env: {base_url} refused the key in ${api_key_env} (HTTP 403: it may lack "
                "access)"], []
    except openai.APIStatusError as err:
        hint = (" (vLLM's and llama.cpp's servers answer under /v1, e.g. http://host:8000/v1)"
                if err.status_code == 404 and not base_url.rstrip("/").endswith("/v1") else "")
        return [], [f"teacher endpoint: {base_url} answered GET /models with HTTP {err.status_code}{hint}; "
                    "the key and model are checked at the first call"]
    except openai.APIConnectionError as err:
        return [f"teacher.base_url: {base_url} is unreachable from here ({type(err).__name__}: "
                f"{_short(_redacted(str(err), key))})"], []
    except (openai.APIResponseValidationError, ValueError, TypeError, AttributeError) as err:
        return [], [f"teacher endpoint: {base_url} answered GET /models with something else than a model list "
                    f"({type(err).__name__}); the model is checked at the first call"]
    # names a server accepts beside the one it lists: Ollama's "llama3" for "llama3:latest", Gemini's "models/..."
    if {model, f"{model}:latest", f"models/{model}"} & set(listed):
        return [], [f"teacher endpoint: {base_url} reachable, key accepted, serves {model!r}"]
    if len(listed) == 1:  # llama.cpp's server lists its one model by file or alias and answers any name with it
        return [], [f"teacher endpoint: {base_url} reachable, key accepted; it lists one model, {listed[0]!r}, not "
                    f"{model!r}: a one-model server (llama.cpp's) answers with it whatever the name, another "
                    "refuses the name at the first call"]
    close = difflib.get_close_matches(model, listed, n=2, cutoff=0.6)
    shown = ", ".join(repr(m) for m in (close or listed[:5]))
    return [f"teacher.model: {base_url} does not serve {model!r} (it lists {len(listed)} models"
            + (f"; did you mean {shown}?)" if close else f", e.g. {shown})")], []


_DECISION_MAX_TOKENS = 16
_REFUSALS_BEFORE_GIVING_UP = 3  # prompts refused with logprobs and answered without, before the run stops asking
_KNOWN_ARGS = {"model", "messages", "prompt", "max_tokens", "temperature", "top_p", "stop", "seed", "logprobs",
               "top_logprobs", "n"}


class _LogprobsRefused(Exception):
    pass


class _Stopped(Exception):
    """A request not sent because its batch is stopping (never seen outside `_map`)."""


def _hint(status: int, key_env: str | None) -> str:
    return {401: f" (check the API key in ${key_env}, named by teacher.api_key_env)" if key_env else
                 " (the server wants a key: set teacher.api_key_env to the variable that holds it)",
            403: " (the key may lack access to this model)",
            404: " (check teacher.model, and teacher.base_url: vLLM's and llama.cpp's servers answer under /v1, "
                 "e.g. http://host:8000/v1)"}.get(status, "")


def _redacted(text: str, key: str | None) -> str:
    """An endpoint's error text without the API key: some servers and proxies echo the Authorization header."""
    text = re.sub(r"(?i)(bearer\s+)[^\s\"',]+", r"\1[redacted]", str(text))
    # a local server's placeholder key ("x", "EMPTY") is no secret, and replacing it would garble the message
    return text.replace(key, "[api key redacted]") if key and len(key) >= 8 else text


def _short(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) < 200 else text[:200] + "..."


def _choice(raw: dict[str, Any]) -> dict[str, Any]:
    choices = raw.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedReply("reply has no choices")
    return choices[0]


def _parse_text(raw: dict[str, Any], api: str) -> dict[str, Any]:
    c = _choice(raw)
    if api == "chat":
        msg = c.get("message")
        if not isinstance(msg, dict):
            raise MalformedReply("chat reply has no message")
        text, reasoning = msg.get("content") or "", msg.get("reasoning_content")
    else:
        text, reasoning = c.get("text"), None
    if not isinstance(text, str):
        raise MalformedReply("reply has no text")
    if reasoning is None:
        text, reasoning = split_reasoning(text)
    return {"text": text, "reasoning": reasoning, "finish": c.get("finish_reason")}


def _usage(raw: dict[str, Any]) -> dict[str, int]:
    """Token counts of a reply (0 where the server gives none); counts that are not whole numbers >= 0 make
    the reply malformed: the budget is kept on them."""
    usage = raw.get("usage") or {}
    if not isinstance(usage, dict):
        raise MalformedReply(f"usage is not an object: {_short(repr(usage))}")
    details = usage.get("completion_tokens_details") or {}
    if not isinstance(details, dict):
        raise MalformedReply("usage.completion_tokens_details is not an object")
    out = {}
    for name, value in (("prompt_tokens", usage.get("prompt_tokens")),
                        ("completion_tokens", usage.get("completion_tokens")),
                        ("reasoning_tokens", details.get("reasoning_tokens"))):
        if value is None:
            value = 0
        if isinstance(value, float) and value.is_integer():  # 12.0 from some servers
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise MalformedReply(f"usage.{name} is not a token count: {_short(repr(value))}")
        out[name] = value
    return out


def _logprob(value: Any) -> float:
    """A log-probability from a reply: a number <= 0 (a little above 0 is rounding), else the reply is
    malformed: never a NaN or overflowing target in the store."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedReply(f"logprob {_short(repr(value))} is not a number")
    value = float(value)
    if math.isnan(value) or value > 1e-3:
        raise MalformedReply(f"logprob {value!r} is not a log-probability (a number <= 0)")
    return min(max(value, -1e4), 0.0)  # -inf (probability 0) as a finite floor: a target, not a NaN later


def _first_token_top(raw: dict[str, Any], api: str) -> dict[str, float] | None:
    """{token: logprob} at the first generated position, or None when the reply carries no log-probabilities."""
    lp = _choice(raw).get("logprobs")
    if not lp:
        return None
    if api == "chat":
        content = lp.get("content") or []
        if not content:
            return None
        return {str(t["token"]): _logprob(t["logprob"]) for t in content[0].get("top_logprobs") or []}
    tops = lp.get("top_logprobs") or []
    return {str(k): _logprob(v) for k, v in (tops[0] or {}).items()} if tops else None


def _parse_decision_logprobs(raw: dict[str, Any], words: list[str], api: str) -> dict[str, Any]:
    answer = _parse_text(raw, api)
    top = _first_token_top(raw, api)
    if top is None:
        return {**answer, "label_logprobs": None}
    mass = [0.0] * len(words)
    for token, logprob in top.items():
        w = normalize_word(token)
        if w in words:  # " yes", "Yes", "yes." all count for the label word yes
            mass[words.index(w)] += math.exp(logprob)
    floor = min(top.values()) - math.log(2) if top else -30.0  # a label outside the top-k: below all of them
    logps = [math.log(m) if m > 0 else floor for m in mass]
    z = math.log(sum(math.exp(x) for x in logps))
    return {**answer, "label_logprobs": [x - z for x in logps], "label_mass": sum(mass), "source": "logprobs"}


def _agreement(answers: list[dict[str, Any]], words: list[str]) -> dict[str, Any]:
    """A soft target from sampled answers: add-half smoothed shares of each label word."""
    counts = [0] * len(words)
    read = []
    for a in answers:
        w = normalize_word(a["text"].split()[0]) if a["text"].split() else ""
        read.append(w)
        if w in words:
            counts[words.index(w)] += 1
    total = sum(counts) + 0.5 * len(words)
    return {"label_logprobs": [math.log((c + 0.5) / total) for c in counts], "source": "samples",
            "answers": read, "reasoning": [a.get("reasoning") for a in answers],
            "usage": {k: sum(a.get("usage", {}).get(k, 0) for a in answers)
                      for k in ("prompt_tokens", "completion_tokens", "cost")}}
