"""A real llama.cpp server (llama-cpp-python's `llama_cpp.server`) on 127.0.0.1 with the embedded SmolLM2
GGUF, used through HTTP as an `openai` teacher: decisions (label-word log-probabilities) and generation."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    from sdk.models import _embedded_gguf

    gguf = _embedded_gguf("embedded:smollm2-135m-instruct")
    port = _free_port()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}  # its threads must not spin while idle between requests
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--logits_all", "true",
                             "--model_alias", "smollm2"], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path_factory.mktemp("server") / "server.log", "w"))  # a pipe would fill
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{base}/models", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("llama_cpp.server did not start in 120 s")
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def _client(base: str, api: str, cache=None):
    from sdk.teachers.openai_api import OpenAITeacher

    return OpenAITeacher(base_url=base, model="smollm2", api_key_env=None, api=api, top_logprobs=10,
                         decision_samples=1, decision_temperature=1.0, reasoning="drop", concurrency=1,
                         requests_per_minute=None, timeout_s=120.0, max_retries=2, prices={}, budget=None,
                         extra_body={}, cache=cache, chat=api == "chat")


def test_decisions_read_label_word_logprobs_from_a_llama_cpp_server(llama_server):
    prompts = ["$3 gift_cards online 02h RU, account 4d, new device, 9 tx/h. Fraud?",
               "$40 grocery store 14h US, account 900d, same device, 0 tx/h. Fraud?"]
    got = _client(llama_server, "completions").decide(prompts, [" no", " yes"], [30, 30], desc=None)
    for g in got:
        assert g["source"] == "logprobs", g
        assert sum(math.exp(x) for x in g["label_logprobs"]) == pytest.approx(1.0)
        assert g["label_mass"] > 0.0


def test_generation_through_chat_on_a_llama_cpp_server(llama_server, tmp_path):
    from sdk.teachers.cache import ResponseCache

    cache = ResponseCache(tmp_path / "c.sqlite")
    client = _client(llama_server, "chat", cache)
    out = client.generate(["Write a Python function add(a, b) that returns a + b."], n=2, max_new_tokens=48,
                          temperature=0.7, top_p=0.95, stop=[], est_tokens=[20], desc=None)
    assert len(out[0]) == 2 and all(o["text"].strip() for o in out[0])
    assert client.usage.calls == 2 and client.usage.completion_tokens > 0
    again = _client(llama_server, "chat", cache)
    assert again.generate(["Write a Python function add(a, b) that returns a + b."], n=2, max_new_tokens=48,
                          temperature=0.7, top_p=0.95, stop=[], est_tokens=[20], desc=None) == out
    assert again.usage.calls == 0 and again.usage.cache_hits == 2
