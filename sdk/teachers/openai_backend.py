"""The `openai` teacher backend for the stages: an OpenAI-compatible endpoint through `openai_api`.

Decisions: the label words' log-probabilities at the first answer token when the endpoint returns top-k
log-probabilities, else the agreement of `decision_samples` sampled answers; stored as decision targets
over the label words' token ids. Generation: completions (and a reasoning model's trace, kept in the
training target as <think>...</think> when `reasoning: keep`). No distributions over the run's
vocabulary: token-level KD needs a local teacher.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdk.distill.schedules import uses_teacher_distributions
from sdk.errors import DistillError
from sdk.models import cache_dir
from sdk.teachers.cache import CACHE_FILE, ResponseCache


# How to reach the endpoint and what may be spent, not what it answers: changing these re-runs no stage (a
# higher budget resumes where the last one stopped) and re-evaluates nothing already measured.
OPERATIONAL_KEYS = ("api_key_env", "concurrency", "requests_per_minute", "timeout_s", "max_retries", "prices",
                    "budget")

TIMED_KEYS = ("requests_per_minute",)  # operational, but the wait shows in timed calls

# Below this mean share of the first answer token's top-k probability on the label words, the teacher mostly
# answers something else: its log-probabilities over the label words, renormalised, are mostly noise.
LOW_LABEL_MASS = 0.5


def client_settings(teacher_config) -> dict[str, Any]:
    """The endpoint settings as plain values (no key: only the name of its variable)."""
    return teacher_config.model_dump(mode="json")


def answer_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that decide what the teacher answers (what stage keys and cached results hang on)."""
    return {k: v for k, v in settings.items() if k not in OPERATIONAL_KEYS}


def make_client(settings: dict[str, Any], *, chat: bool, seed: int, cached: bool = True,
                ledger: Path | str | None = None, dry_run: bool = False):
    from sdk.teachers.openai_api import OpenAITeacher

    cache = ResponseCache(cache_dir() / CACHE_FILE) if cached else None
    return OpenAITeacher(**settings, cache=cache, chat=chat, seed=seed, ledger=ledger, dry_run=dry_run)


class OpenAIBackend:
    kind = "openai"

    def __init__(self, ctx, dry_run: bool = False):
        from sdk.teachers.openai_api import LEDGER_FILE

        self.ctx = ctx
        self.settings = client_settings(ctx.config.teacher)
        self.ledger = ctx.run.path(LEDGER_FILE)  # the run's spending: one budget for annotation and evaluation
        self.client = make_client(self.settings, chat=bool(ctx.template.chat), seed=ctx.config.seed,
                                  ledger=self.ledger, dry_run=dry_run)

    def identity(self) -> str:
        return self.client.identity()

    def usage(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self.client.usage), "api": self.client.api, "model": self.client.model,
                "base_url": self.client.base_url}

    def decision_targets(self, prompts, texts, label_ids, label_words, top_k):
        import torch

        answers = self.client.decide(texts, label_words, [len(p) for p in prompts])
        values = torch.tensor([a["label_logprobs"] for a in answers], dtype=torch.float32)
        ids = torch.tensor([list(label_ids)] * len(answers), dtype=torch.long)
        sources = [a.get("source") for a in answers]
        info = {"source": "logprobs" if all(s == "logprobs" for s in sources) else
                "samples" if all(s == "samples" for s in sources) else "mixed",
                "label_mass_mean": _mean([a.get("label_mass") for a in answers]), "teacher_usage": self.usage(),
                "warnings": decision_warnings(self.client, answers, label_words)}
        if self.client.logprobs_refused:
            info["logprobs_refused"] = self.client.logprobs_refused
        return values, ids, info

    def completions(self, prompts, texts, params):
        out = self.client.generate(texts, n=params["n"], max_new_tokens=params["max_new_tokens"],
                                   temperature=params["temperature"], top_p=params["top_p"], stop=params["stop"],
                                   est_tokens=[len(p) for p in prompts])
        # the annotate stage decides whether a trace stays in the target (teacher.reasoning)
        completions = [[{"text": o["text"], "reasoning": o.get("reasoning")} for o in per] for per in out]
        return completions, {"teacher_runtime": f"openai:{self.client.model}", "teacher_usage": self.usage()}

    def response_topk(self, prompts, responses, k):
        return None

    def artifact(self):
        from evaluation.harness import Artifact

        c, t = self.ctx.config, self.ctx.template
        # operational settings and the ledger ride apart: the harness keys a result on what is computed only;
        # a rate limit spaces the timed latency calls too, so a result measured under another one is not reused
        timed = {k: self.settings[k] for k in TIMED_KEYS}
        spec = {"settings": {**answer_settings(self.settings), **timed}, "chat": bool(t.chat), "seed": c.seed,
                "operational": {**{k: self.settings[k] for k in OPERATIONAL_KEYS if k not in timed},
                                "ledger": str(self.ledger)},
                "label_words": [t.label_words[i] for i in range(len(t.label_words))] if t.task == "decision" else None}
        return Artifact("teacher-api", "teacher", "openai", None, self.settings["base_url"], None, None, spec, None)


def decision_warnings(client, answers: list[dict[str, Any]], label_words) -> list[str]:
    """What the report should say about an API teacher's decisions: log-probabilities it would not give, and
    first answer tokens that are mostly not the label words (targets that then say little)."""
    out = []
    sources = [a.get("source") for a in answers]
    if client.logprobs_refused:
        out.append(f"teacher {client.model}: {client.logprobs_refused}; {sources.count('samples')} of {len(sources)} "
                   f"decisions were read from sampled answers (teacher.decision_samples: {client.decision_samples}) "
                   "instead")
    masses = [a["label_mass"] for a in answers if a.get("label_mass") is not None]
    if masses and _mean(masses) < LOW_LABEL_MASS:
        words = " / ".join(w.strip() for w in label_words)
        out.append(f"teacher {client.model} put on average {_mean(masses):.0%} of its first answer token's "
                   f"probability on the label words ({words}); {sum(m == 0 for m in masses)} of {len(masses)} "
                   f"prompts had none of them among its top {client.top_logprobs} tokens, so their targets say "
                   "nothing. It mostly answers something else: check what it replies (with api: chat it is told to "
                   "answer with one word; a raw-prompt completions endpoint is not), or set teacher.top_logprobs: 0 "
                   "to read sampled answers")
    return out


def check_distill_loss(teacher_kind: str, losses: list[tuple[str, dict[str, Any]]], task: str) -> None:
    """Token-level KD on responses needs the teacher's distributions over the run's vocabulary. losses: (config
    field, loss) of every training (DistillConfig.trained_losses)."""
    if teacher_kind != "openai" or task != "generation":
        return
    for where, loss in losses:
        if uses_teacher_distributions(loss):
            raise DistillError(f"{where}.alpha: token-level KD needs the teacher's distributions over the student's "
                               f"vocabulary, which an openai teacher does not give; set {where}.alpha: 1.0 "
                               "(sequence-level KD on its verified completions)")


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None
