"""The OpenAI-compatible teacher client against a real local HTTP server that injects faults."""

from __future__ import annotations

import math
import sqlite3
import time

import pytest

from sdk.errors import DistillError
from sdk.teachers.cache import ResponseCache
from sdk.teachers.openai_api import BudgetReached, OpenAITeacher
from tests.sdk.teachers.fake_openai import REPLY_FAULTS, FakeOpenAI, p_yes

PROMPTS = [f"${10 * i} grocery store 1{i % 10}h US, account {i}d. Fraud?" for i in range(12)]
SECRET = "sk-test-0123456789abcdef-DO-NOT-LEAK"


def client(server: FakeOpenAI, cache_path=None, **kw) -> OpenAITeacher:
    settings = dict(base_url=server.base_url, model="fake", api_key_env=None, api="completions", top_logprobs=5,
                    decision_samples=1, decision_temperature=1.0, reasoning="drop", concurrency=4,
                    requests_per_minute=None, timeout_s=1.0, max_retries=4,
                    prices={"input_per_million": 0.0, "output_per_million": 0.0}, budget=None, extra_body={})
    settings.update(kw)
    cache = ResponseCache(cache_path) if cache_path else None
    return OpenAITeacher(**settings, cache=cache, chat=False)


def test_every_fault_is_retried_and_each_record_answered_exactly_once(tmp_path):
    faults = {2: "429", 3: "500", 5: "slow", 7: "malformed", 9: "cut", 11: "500"}
    with FakeOpenAI(faults) as server:
        teacher = client(server, tmp_path / "cache.sqlite")
        got = teacher.decide(PROMPTS, [" no", " yes"], [10] * len(PROMPTS), desc=None)
        outcomes = server.outcomes()
    # each prompt: exactly one good answer, plus only the faults injected on it
    assert sorted(outcomes) == sorted(PROMPTS)
    for prompt, seen in outcomes.items():
        assert seen.count("ok") == 1, (prompt, seen)
        assert all(o in faults.values() for o in seen if o != "ok")
    assert sum(len(v) for v in outcomes.values()) == len(PROMPTS) + len(faults)
    # the answers are the server's: log-probabilities of the label words, renormalised over them
    for prompt, g in zip(PROMPTS, got):
        py = p_yes(prompt)
        expected = math.log(py) - math.log(py + math.exp(math.log(1 - py) - 0.01))
        assert g["label_logprobs"][1] == pytest.approx(expected, abs=1e-6)
        assert g["source"] == "logprobs"
    assert teacher.usage.calls == len(PROMPTS) and teacher.usage.malformed_retries >= 1


def test_a_rerun_is_served_from_the_cache_and_a_corrupt_entry_is_fetched_again(tmp_path):
    path = tmp_path / "cache.sqlite"
    with FakeOpenAI() as server:
        first = client(server, path).decide(PROMPTS, [" no", " yes"], [10] * len(PROMPTS), desc=None)
        assert len(server.log) == len(PROMPTS)
        again = client(server, path)
        assert again.decide(PROMPTS, [" no", " yes"], [10] * len(PROMPTS), desc=None) == first
        assert len(server.log) == len(PROMPTS) and again.usage.cache_hits == len(PROMPTS)
        # truncate one stored answer: it is detected, never served, and asked for again
        with sqlite3.connect(path) as db:
            key, value = db.execute("SELECT key, value FROM answers LIMIT 1").fetchone()
            db.execute("UPDATE answers SET value = ? WHERE key = ?", (value[: len(value) // 2], key))
        third = client(server, path)
        answers = third.decide(PROMPTS, [" no", " yes"], [10] * len(PROMPTS), desc=None)
        assert [a["label_logprobs"] for a in answers] == [a["label_logprobs"] for a in first]
        assert len(server.log) == len(PROMPTS) + 1 and third.cache.dropped == 1


def test_an_unreadable_cache_file_is_moved_aside(tmp_path):
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.warns(UserWarning, match="unreadable"):
        cache = ResponseCache(path)
    assert len(cache) == 0 and list(tmp_path.glob("cache.sqlite.corrupt-*"))


def test_a_reply_that_stays_malformed_names_the_record(tmp_path):
    with FakeOpenAI({n: "malformed" for n in range(1, 50)}) as server:
        with pytest.raises(DistillError, match=r"malformed reply for decision prompt 0 after 3 attempts"):
            client(server, concurrency=1, max_retries=2).decide(PROMPTS[:1], [" no", " yes"], [10], desc=None)


@pytest.mark.parametrize("fault", sorted(REPLY_FAULTS))
def test_a_reply_with_impossible_values_is_retried_never_stored(fault, tmp_path):
    """NaN or positive log-probabilities, fields of the wrong kind, unreadable token counts: retried, and
    named when they persist; what is stored is only a clean answer."""
    with FakeOpenAI({1: fault}) as server:
        got = client(server, tmp_path / "cache.sqlite", concurrency=1).decide(PROMPTS[:1], [" no", " yes"], [10],
                                                                              desc=None)
    assert all(math.isfinite(x) and x <= 0 for x in got[0]["label_logprobs"])
    assert got[0]["label_logprobs"][1] == pytest.approx(math.log(p_yes(PROMPTS[0])), abs=0.02)
    with FakeOpenAI({n: fault for n in range(1, 10)}) as server:
        with pytest.raises(DistillError, match=r"malformed reply for decision prompt 0 after 2 attempts"):
            client(server, concurrency=1, max_retries=1).decide(PROMPTS[:1], [" no", " yes"], [10], desc=None)


def test_the_budget_stops_before_it_is_exceeded_and_a_rerun_resumes(tmp_path):
    path = tmp_path / "cache.sqlite"
    prices = {"input_per_million": 1000.0, "output_per_million": 1000.0}
    # each call: prompt ~10 tokens (server counts len/4) + 1 completion token; reserved: 10 + 1 tokens
    with FakeOpenAI() as server:
        with pytest.raises(BudgetReached, match="raise teacher.budget and re-run"):
            client(server, path, concurrency=1, prices=prices, budget=0.05).decide(
                PROMPTS, [" no", " yes"], [10] * len(PROMPTS), desc=None)
        spent = len(server.log)
        assert 0 < spent < len(PROMPTS)
        resumed = client(server, path, concurrency=1, prices=prices, budget=10.0)
        resumed.decide(PROMPTS, [" no", " yes"], [10] * len(PROMPTS), desc=None)
        assert len(server.log) == len(PROMPTS) and resumed.usage.cache_hits == spent
        assert resumed.usage.cost == pytest.approx(sum(
            (max(1, len(p) // 4) + 1) * 1000.0 / 1e6 for p in PROMPTS[spent:]))


def test_the_budget_is_the_run_folders_across_clients_and_processes(tmp_path):
    """Two clients on one ledger (annotation, then the teacher's evaluation in another process) spend from one
    budget; the stop message counts what the run spent; a damaged ledger is named, never guessed."""
    from sdk.teachers.openai_api import SpendLedger

    ledger = tmp_path / "run" / "teacher_spend.json"
    prices = {"input_per_million": 1000.0, "output_per_million": 1000.0}
    per_call = [(max(1, len(p) // 4) + 1) * 1000.0 / 1e6 for p in PROMPTS]
    with FakeOpenAI() as server:
        first = client(server, concurrency=1, prices=prices, budget=0.08, ledger=ledger)
        first.decide(PROMPTS[:4], [" no", " yes"], [10] * 4, desc=None)
        assert json_of(ledger) == {"cost": pytest.approx(sum(per_call[:4])), "calls": 4}
        SpendLedger._open.clear()  # as a fresh process would: the file is read again
        second = client(server, concurrency=1, prices=prices, budget=0.08, ledger=ledger)
        with pytest.raises(BudgetReached, match=r"teacher budget 0.08 reached: 0\.0\d+ spent on \d+ calls in this "
                                                r"run \(recorded in .*teacher_spend.json\)"):
            second.decide(PROMPTS[4:], [" no", " yes"], [10] * 8, desc=None)
        assert json_of(ledger)["cost"] <= 0.08 and len(server.log) == json_of(ledger)["calls"] < 12
    ledger.write_text('{"cost": -1, "calls": 2}')
    SpendLedger._open.clear()
    with FakeOpenAI() as server, pytest.raises(DistillError, match=r"teacher_spend.json: the run's record of teacher "
                                                                   r"spending is damaged"):
        client(server, ledger=ledger)


def test_another_process_spending_is_seen_and_never_overwritten(tmp_path):
    import subprocess
    import sys

    from sdk.teachers.openai_api import SpendLedger

    ledger = tmp_path / "teacher_spend.json"
    here = SpendLedger.at(ledger)
    here.reserve(1.0, 10.0)
    here.settle(1.0, 1.0)
    # the evaluation worker: another process spends 5 through its own ledger object on the same file
    subprocess.run([sys.executable, "-c", "import sys; from sdk.teachers.openai_api import SpendLedger as L; "
                    "x = L.at(sys.argv[1]); x.reserve(5.0, 10.0); x.settle(5.0, 5.0)", str(ledger)], check=True)
    with pytest.raises(BudgetReached, match="6.0000 spent on 2 calls"):
        here.reserve(4.5, 10.0)  # 1 + 5 spent: 4.5 more would pass 10
    here.reserve(3.0, 10.0)
    here.settle(3.0, 3.0)
    assert json_of(ledger) == {"cost": 9.0, "calls": 3}  # the other process's 5 kept


def test_a_billed_reply_that_is_unusable_is_counted_too(tmp_path):
    ledger = tmp_path / "teacher_spend.json"
    prices = {"input_per_million": 1000.0, "output_per_million": 1000.0}
    with FakeOpenAI({1: "nan-logprob", 2: "usage-text"}) as server:
        c = client(server, concurrency=1, prices=prices, ledger=ledger)
        c.decide(PROMPTS[:1], [" no", " yes"], [10], desc=None)
    one = (max(1, len(PROMPTS[0]) // 4) + 1) * 1000.0 / 1e6  # what each reply cost (usage known)
    worst = (10 + 1) * 1000.0 / 1e6  # unreadable usage: the worst case reserved for it
    assert len(server.log) == 3 and json_of(ledger) == {"cost": pytest.approx(2 * one + worst), "calls": 3}
    assert c.usage.calls == 1 and c.usage.cost == pytest.approx(2 * one + worst)


def test_an_error_stops_the_batch_without_new_requests():
    # prompt 0 is slow; prompt 1 is refused (an error that stops the run): prompt 0 sends no further sample
    with FakeOpenAI({1: "slow", 2: "400"}, slow_s=0.5) as server, pytest.raises(DistillError, match="HTTP 400"):
        client(server, concurrency=2, top_logprobs=0, decision_samples=3, timeout_s=5.0).decide(
            PROMPTS[:6], [" no", " yes"], [10] * 6, desc=None)
    time.sleep(0.8)  # prompt 0's slow request has ended; nothing else may follow it
    assert len(server.log) == 2


def json_of(path):
    import json

    return json.loads(path.read_text())


def test_a_server_that_leaves_logprobs_out_is_asked_for_them_once():
    with FakeOpenAI(logprobs=False) as server:
        c = client(server, concurrency=1)
        got = c.decide(PROMPTS[:6], [" no", " yes"], [10] * 6, desc=None)
    # one request found them missing; then each prompt is one sampled answer (was two requests per prompt)
    assert len(server.log) == 1 + 6 and {g["source"] for g in got} == {"samples"}
    assert c.logprobs_refused == "the endpoint answered without log-probabilities"


def test_a_server_refusing_logprobs_by_name_is_asked_once():
    with FakeOpenAI(logprobs="refuse") as server:
        c = client(server, concurrency=1)
        got = c.decide(PROMPTS[:6], [" no", " yes"], [10] * 6, desc=None)
    assert len(server.log) == 1 + 6 and {g["source"] for g in got} == {"samples"}
    assert "HTTP 400: logprobs are not supported" in c.logprobs_refused


def test_a_refusal_that_does_not_say_why_turns_logprobs_off_after_a_few_prompts():
    with FakeOpenAI(logprobs="refuse-generic") as server:
        c = client(server, concurrency=1)
        c.decide(PROMPTS[:6], [" no", " yes"], [10] * 6, desc=None)
    assert len(server.log) == 3 * 2 + 3 and "refused 3 requests for log-probabilities" in c.logprobs_refused


def test_one_prompt_refused_does_not_turn_logprobs_off_for_the_run():
    # a 400 on prompt 0's logprobs request that the plain request then answers: that prompt alone is sampled
    with FakeOpenAI({1: "400"}) as server:
        c = client(server, concurrency=1)
        got = c.decide(PROMPTS[:6], [" no", " yes"], [10] * 6, desc=None)
    assert [g["source"] for g in got] == ["samples"] + ["logprobs"] * 5 and c.logprobs_refused is None
    # refused with and without log-probabilities: the endpoint's own reason stops the run, naming the record
    with FakeOpenAI({1: "400", 2: "400"}) as server, pytest.raises(
            DistillError, match=r"refused decision prompt 0: HTTP 400: .*maximum context length is 8 tokens"):
        client(server, concurrency=1).decide(PROMPTS[:2], [" no", " yes"], [10] * 2, desc=None)


def test_a_teacher_answering_other_words_than_the_labels_is_warned_about():
    from sdk.teachers.openai_backend import decision_warnings

    with FakeOpenAI() as server:  # it answers yes / no; the labels asked for are other words
        c = client(server)
        other = c.decide(PROMPTS[:4], [" legit", " fraud"], [10] * 4, desc=None)
        same = c.decide(PROMPTS[:4], [" no", " yes"], [10] * 4, desc=None)
    [w] = decision_warnings(c, other, [" legit", " fraud"])
    assert "put on average 0% of its first answer token's probability on the label words (legit / fraud)" in w
    assert "4 of 4 prompts had none of them among its top 5 tokens" in w
    assert decision_warnings(c, same, [" no", " yes"]) == []


def test_a_dry_run_needs_no_key_and_plans_the_calls_made_without_logprobs(monkeypatch):
    monkeypatch.delenv("UNSET_TEACHER_KEY", raising=False)
    with FakeOpenAI() as server:
        c = client(server, api_key_env="UNSET_TEACHER_KEY", dry_run=True, decision_samples=3,
                   prices={"input_per_million": 1.0, "output_per_million": 2.0})
        c.decide(PROMPTS[:4], [" no", " yes"], [10] * 4, desc=None)
        e = c.estimate()
    assert len(server.log) == 0 and e["requests"] == 4 and e["max_completion_tokens"] == 4
    assert e["without_logprobs"]["requests"] == 12 and e["without_logprobs"]["max_completion_tokens"] == 12 * 16
    assert e["without_logprobs"]["max_cost"] == pytest.approx((12 * 10 * 1.0 + 12 * 16 * 2.0) / 1e6)


def test_the_key_is_sent_but_never_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TEACHER_KEY", SECRET)
    with FakeOpenAI(key=SECRET) as server:
        teacher = client(server, tmp_path / "cache.sqlite", api_key_env="FAKE_TEACHER_KEY")
        teacher.decide(PROMPTS[:3], [" no", " yes"], [10] * 3, desc=None)
        assert {r["auth"] for r in server.log} == {f"Bearer {SECRET}"}
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f


def test_a_wrong_key_is_a_clear_error_without_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TEACHER_KEY", "wrong-" + SECRET)
    with FakeOpenAI(key=SECRET) as server:
        with pytest.raises(DistillError) as err:
            client(server, api_key_env="FAKE_TEACHER_KEY").decide(PROMPTS[:1], [" no", " yes"], [10], desc=None)
    assert "HTTP 401" in str(err.value) and "FAKE_TEACHER_KEY" in str(err.value) and SECRET not in str(err.value)


def test_an_error_body_echoing_the_key_is_shown_without_it(monkeypatch):
    # a wrong key echoed whole by the endpoint (401), and the right key echoed in another refusal (403)
    monkeypatch.setenv("FAKE_TEACHER_KEY", "wrong-" + SECRET)
    with FakeOpenAI(key=SECRET) as server, pytest.raises(DistillError) as err:
        client(server, api_key_env="FAKE_TEACHER_KEY").decide(PROMPTS[:1], [" no", " yes"], [10], desc=None)
    assert "HTTP 401" in str(err.value) and "redacted" in str(err.value) and SECRET not in str(err.value)
    monkeypatch.setenv("FAKE_TEACHER_KEY", SECRET)
    with FakeOpenAI(key=SECRET, faults={1: "403-echo"}) as server, pytest.raises(DistillError) as err:
        client(server, api_key_env="FAKE_TEACHER_KEY", max_retries=0).decide(PROMPTS[:1], [" no", " yes"], [10],
                                                                             desc=None)
    assert "HTTP 403" in str(err.value) and "model not allowed" in str(err.value)
    assert SECRET not in str(err.value) and SECRET[-12:] not in str(err.value)


def test_a_missing_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with FakeOpenAI() as server, pytest.raises(DistillError, match="NO_SUCH_KEY_VAR is not set"):
        client(server, api_key_env="NO_SUCH_KEY_VAR")


def test_chat_decisions_read_label_words_in_any_case(tmp_path):
    with FakeOpenAI() as server:
        got = client(server, api="chat").decide(PROMPTS[:4], [" no", " yes"], [10] * 4, desc=None)
        sent = server.log[0]["prompt"]
    assert sent.endswith("Answer with one word: no or yes.")
    for prompt, g in zip(PROMPTS, got):  # "No" counts for " no", "yes" for " yes"
        py = p_yes(prompt + "\n\nAnswer with one word: no or yes.")
        assert math.exp(g["label_logprobs"][1]) == pytest.approx(py / (py + (1 - py) * math.exp(-0.01)), abs=1e-6)


def test_without_logprobs_sampled_answers_give_the_soft_target():
    with FakeOpenAI(logprobs=False) as server:
        got = client(server, top_logprobs=0, decision_samples=3).decide(PROMPTS[:2], [" no", " yes"], [10] * 2,
                                                                         desc=None)
    assert len(server.log) == 6  # 3 sampled answers per prompt, each its own request (seeded)
    for prompt, g in zip(PROMPTS, got):
        assert g["source"] == "samples"
        yes = 3 if p_yes(prompt) >= 0.5 else 0  # the fake answers deterministically
        assert math.exp(g["label_logprobs"][1]) == pytest.approx((yes + 0.5) / 4)


@pytest.mark.parametrize("mode", ["field", "inline"])
def test_generation_keeps_the_reasoning_trace_apart(mode):
    with FakeOpenAI(reasoning=mode) as server:
        out = client(server, api="chat").generate(PROMPTS[:2], n=2, max_new_tokens=64, temperature=0.7, top_p=0.9,
                                                  stop=[], est_tokens=[10, 10], desc=None)
    assert len(server.log) == 4
    for per in out:
        assert len(per) == 2 and per[0]["text"] != per[1]["text"]  # two seeded samples
        for o in per:
            assert o["text"].startswith("def answer():") and o["reasoning"].startswith("thinking about")


def test_rate_limit_spaces_request_starts():
    import time

    with FakeOpenAI() as server:
        t0 = time.perf_counter()
        client(server, requests_per_minute=600).decide(PROMPTS[:5], [" no", " yes"], [10] * 5, desc=None)
        elapsed = time.perf_counter() - t0
    assert elapsed >= 0.4  # 5 starts, 0.1 s apart


def test_a_placeholder_key_does_not_garble_the_endpoint_message():
    from sdk.teachers.openai_api import _redacted

    said = 'max_tokens exceeds the context: expected 512 ("Authorization": "Bearer x", "n": 1)'
    assert _redacted(said, "x") == 'max_tokens exceeds the context: expected 512 ("Authorization": "Bearer [redacted]", "n": 1)'
    assert _redacted(f"bad key {SECRET}!", SECRET) == "bad key [api key redacted]!"


def test_request_threads_speak_as_their_caller():
    """Messages built in the request threads name settings as the caller does (a ContextVar the threads copy)."""
    from sdk.errors import option, speaking
    from sdk.teachers.openai_api import _daemon_pool

    with speaking("python"):
        futures = _daemon_pool(lambda i: option("out", "x"), 3, 2)
        assert [f.result(timeout=10) for f in futures] == ["out='x'"] * 3
