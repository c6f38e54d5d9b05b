"""evaluation.harness.run_worker: a result is reused only for an identical job; how a job is run (an API's
budget, timeouts) is not part of what it computes."""

from __future__ import annotations

from evaluation import harness
from tests.sdk.teachers.fake_openai import FakeOpenAI


def _teacher_job(base_url: str, ledger, **operational) -> dict:
    settings = {"kind": "openai", "base_url": base_url, "model": "fake-r1", "api": "completions", "top_logprobs": 5,
                "decision_samples": 1, "decision_temperature": 1.0, "reasoning": "drop", "extra_body": {}}
    ops = {"api_key_env": None, "concurrency": 2, "requests_per_minute": None, "timeout_s": 5.0, "max_retries": 2,
           "prices": {"input_per_million": 1.0, "output_per_million": 1.0}, "budget": None, "ledger": str(ledger),
           **operational}
    texts = [f"${5 * i} at store {i}. Fraud?" for i in range(4)]
    return {"format": "openai", "label_ids": [0, 1],
            "spec": {"settings": settings, "chat": False, "seed": 0, "label_words": [" no", " yes"],
                     "operational": ops},
            "score": {"val": texts[:2], "test": texts[2:]}, "latency": {"kind": "score", "prompts": texts[:1]}}


def test_an_api_result_is_reused_across_operational_changes_and_says_its_calls_were_earlier(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    ledger = tmp_path / "run" / "teacher_spend.json"
    with FakeOpenAI() as server:
        first = harness.run_worker(_teacher_job(server.base_url, ledger), tmp_path / "work", "teacher-api")
        asked = len(server.log)
        assert first["usage"]["calls"] == asked > 4 and "reused" not in first["usage"]  # 4 scored, then timed live
        again = harness.run_worker(_teacher_job(server.base_url, ledger, budget=50.0, concurrency=4),
                                   tmp_path / "work", "teacher-api")
        assert len(server.log) == asked and again["probs_test"] == first["probs_test"]
        assert again["usage"] == {**first["usage"], "reused": True}  # paid by the first run, not this one
        other = _teacher_job(server.base_url, ledger)
        other["spec"]["settings"]["model"] = "fake-chat"  # another model answers otherwise: asked again
        harness.run_worker(other, tmp_path / "work", "teacher-api")
        assert len(server.log) > asked
