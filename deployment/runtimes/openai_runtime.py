"""An OpenAI-compatible endpoint as a runtime, to evaluate an API teacher like any artifact.

Prompts are the template's texts (an endpoint tokenises itself), not token ids. Batch scoring and
generation go through the teacher cache (a re-evaluation asks nothing again); the batch-1 calls that
latency measures are always live, so P50/P99 are the endpoint's, not the cache's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from deployment.runtimes.generation import Generation, GenerationParams


class OpenAIRuntime:
    threads = 0  # the work happens on the server

    def __init__(self, settings: dict[str, Any], chat: bool, seed: int = 0, label_words: list[str] | None = None,
                 operational: dict[str, Any] | None = None):
        """operational: how to reach the endpoint and what may be spent (sdk.teachers.openai_backend), with the
        run's spending `ledger`: the evaluation spends from the run's budget, not a fresh one."""
        from sdk.teachers.openai_backend import make_client

        operational = dict(operational or {})
        ledger = operational.pop("ledger", None)
        settings = {**settings, **operational}
        self.label_words = label_words or []
        self.client = make_client(settings, chat=chat, seed=seed, ledger=ledger)
        self.live = make_client({**settings, "concurrency": 1}, chat=chat, seed=seed, cached=False, ledger=ledger)

    def usage(self) -> dict[str, Any]:
        from dataclasses import asdict

        total = asdict(self.client.usage)
        for k, v in asdict(self.live.usage).items():
            total[k] += v
        return total

    def score(self, texts: Sequence[str], label_ids: Sequence[int]) -> np.ndarray:
        answers = self.client.decide(list(texts), self.label_words, [len(t) // 3 for t in texts], desc="teacher API")
        return np.exp(np.asarray([a["label_logprobs"] for a in answers], dtype=np.float64))

    def score_one(self, text: str, label_ids: Sequence[int]) -> np.ndarray:
        return np.exp(np.asarray(self.live.decide([text], self.label_words, [len(text) // 3], desc=None)[0]
                                 ["label_logprobs"]))

    def _params(self, params: GenerationParams) -> dict[str, Any]:
        return {"max_new_tokens": params.max_new_tokens, "temperature": params.temperature, "top_p": params.top_p,
                "stop": list(params.stop)}

    def generate(self, texts: Sequence[str], params: GenerationParams, progress: str | None = None
                 ) -> list[list[Generation]]:
        out = self.client.generate(list(texts), n=params.n, est_tokens=[len(t) // 3 for t in texts],
                                   desc=progress, **self._params(params))
        return [[_generation(o) for o in per] for per in out]

    def generate_one(self, text: str, params: GenerationParams) -> Generation:
        t0 = time.perf_counter()
        o = self.live.generate([text], n=1, est_tokens=[len(text) // 3], desc=None, **self._params(params))[0][0]
        g = _generation(o)
        g.seconds = time.perf_counter() - t0
        g.ttft_s = g.seconds  # not streamed: the first token arrives with the whole answer
        return g


def _generation(o: dict[str, Any]) -> Generation:
    """A Generation from an API answer. Its token ids are not the run's: only their count is known."""
    n = int(o.get("usage", {}).get("completion_tokens") or 0) or max(1, math.ceil(len(o["text"]) / 4))
    return Generation(text=o["text"], token_ids=[0] * n, ttft_s=0.0,
                      seconds=o.get("usage", {}).get("latency_ms", 0.0) / 1000.0,
                      finish="length" if o.get("finish") == "length" else "stop")
