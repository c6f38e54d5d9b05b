"""A real HTTP server on 127.0.0.1 that speaks enough of the OpenAI API (/v1/completions,
/v1/chat/completions) to be a teacher, and injects faults on chosen requests: the network boundary the
SDK's client is tested against (nothing inside the SDK is faked).

Faults, by global request number (1 = the first request the server sees):
  "429"       HTTP 429 with Retry-After: 1
  "500"       HTTP 500
  "slow"      the reply comes after `slow_s` seconds (longer than the client's timeout)
  "malformed" HTTP 200 whose body is not JSON
  "cut"       headers promise a body, half of it is sent, the connection is closed
  "hang"      no reply until the server stops (a client killed while waiting)
  "400"       HTTP 400 saying the prompt is too long (with or without log-probabilities asked)
`logprobs`: True (given when asked), False (silently left out of replies), "refuse" (HTTP 400 naming them,
as servers without them do) or "refuse-generic" (HTTP 400 "invalid request" that does not say why).
Every request is logged with its prompt and outcome ("ok" or the fault), so a test can assert that each
record got exactly one good answer.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def p_yes(prompt: str) -> float:
    """The fake teacher's probability of " yes" for a prompt (deterministic)."""
    return 0.05 + 0.9 * (_h(prompt) % 1000) / 1000


def _top(reply: dict) -> dict:
    return reply["choices"][0]["logprobs"]["top_logprobs"][0]  # a completions reply's first position


# replies that are valid JSON but not what was asked (a completions decision reply, changed in place)
REPLY_FAULTS = {
    "nan-logprob": lambda r: _top(r).update({" yes": float("nan")}),
    "huge-logprob": lambda r: _top(r).update({" yes": 1000.0}),
    "logprobs-text": lambda r: r["choices"][0].update(logprobs="oops"),
    "usage-text": lambda r: r.update(usage="n/a"),
    "usage-not-count": lambda r: r["usage"].update(prompt_tokens="many"),
}


class FakeOpenAI:
    def __init__(self, faults: dict[int, str] | None = None, key: str | None = None, logprobs: bool | str = True,
                 reasoning: str | None = None, slow_s: float = 3.0):
        self.faults = dict(faults or {})
        self.key, self.logprobs, self.reasoning, self.slow_s = key, logprobs, reasoning, slow_s
        self.models = ["fake-r1", "fake-chat"]  # what GET /v1/models lists
        self.log: list[dict] = []  # {"n", "prompt", "outcome", "auth"}
        self.hanging = threading.Event()  # set when a "hang" request is being held
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()

    def outcomes(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        for r in self.log:
            out[r["prompt"]].append(r["outcome"])
        return dict(out)

    # ---- replies
    def _reply(self, path: str, body: dict) -> dict:
        chat = path.endswith("/chat/completions")
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        max_tokens = int(body.get("max_tokens") or 16)
        py = p_yes(prompt)
        want_lp = self.logprobs is True and (body.get("logprobs") not in (None, False, 0))
        if max_tokens <= 16:  # a decision
            word = "yes" if py >= 0.5 else "no"
            lp_yes, lp_no = math.log(py), math.log(1 - py) - 0.01
            text = word if chat else f" {word}"
        else:
            text = f"def answer():\n    return {_h(prompt + str(body.get('seed'))) % 97}\n"
        usage = {"prompt_tokens": max(1, len(prompt) // 4), "completion_tokens": 1 if max_tokens <= 16 else 12,
                 "total_tokens": 0}
        if chat:
            message = {"role": "assistant", "content": text}
            if self.reasoning == "field":
                message["reasoning_content"] = f"thinking about {len(prompt)} characters"
            elif self.reasoning == "inline":
                message["content"] = f"<think>\nthinking about {len(prompt)} characters\n</think>\n\n{text}"
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            if want_lp and max_tokens <= 16:
                choice["logprobs"] = {"content": [{"token": word, "logprob": lp_yes if word == "yes" else lp_no,
                                                   "bytes": None, "top_logprobs": [
                                                       {"token": "yes", "logprob": lp_yes, "bytes": None},
                                                       {"token": "No", "logprob": lp_no, "bytes": None},
                                                       {"token": "maybe", "logprob": -6.0, "bytes": None}]}]}
            return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [choice], "usage": usage}
        choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
        if want_lp and max_tokens <= 16:
            choice["logprobs"] = {"tokens": [text], "token_logprobs": [lp_yes if word == "yes" else lp_no],
                                  "top_logprobs": [{" yes": lp_yes, " no": lp_no, " maybe": -6.0}], "text_offset": [0]}
        return {"id": "x", "object": "text_completion", "created": 0, "model": body["model"], "choices": [choice],
                "usage": usage}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                with fake._lock:
                    fake.log.append({"n": len(fake.log) + 1, "prompt": None, "outcome": f"GET {self.path}",
                                     "auth": self.headers.get("Authorization")})
                if not self.path.startswith("/v1/models"):
                    return self._send(404, json.dumps({"error": {"message": "not found"}}).encode())
                if fake.key is not None and self.headers.get("Authorization") != f"Bearer {fake.key}":
                    return self._send(401, json.dumps({"error": {"message": "bad key"}}).encode())
                models = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in fake.models]
                self._send(200, json.dumps({"object": "list", "data": models}).encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                prompt = body["messages"][-1]["content"] if "messages" in body else body.get("prompt")
                prompt = f"{prompt}#seed={body['seed']}" if body.get("seed") is not None else prompt
                with fake._lock:
                    n = len(fake.log) + 1
                    fault = fake.faults.get(n)
                    fake.log.append({"n": n, "prompt": prompt, "outcome": fault or "ok",
                                     "auth": self.headers.get("Authorization")})
                if fake.key is not None and self.headers.get("Authorization") != f"Bearer {fake.key}":
                    fake.log[-1]["outcome"] = "401"
                    # as some proxies do: the rejected header echoed back in the error body
                    echo = f"bad key; got Authorization: {self.headers.get('Authorization')}"
                    return self._send(401, json.dumps({"error": {"message": echo}}).encode())
                if fault == "400":
                    return self._send(400, json.dumps({"error": {"message": "This model's maximum context length "
                                                                 "is 8 tokens"}}).encode())
                asked = body.get("logprobs") not in (None, False, 0)
                if asked and fake.logprobs in ("refuse", "refuse-generic"):
                    fake.log[-1]["outcome"] = "400"
                    said = "logprobs are not supported by this model" if fake.logprobs == "refuse" else "invalid request"
                    return self._send(400, json.dumps({"error": {"message": said}}).encode())
                if fault == "403-echo":
                    echo = f"model not allowed for key {self.headers.get('Authorization', '').split()[-1]}"
                    return self._send(403, json.dumps({"error": {"message": echo}}).encode())
                if fault == "429":
                    return self._send(429, json.dumps({"error": {"message": "slow down"}}).encode(),
                                      {"Retry-After": "1"})
                if fault == "500":
                    return self._send(500, json.dumps({"error": {"message": "boom"}}).encode())
                if fault == "hang":
                    fake.hanging.set()
                    fake._stop.wait()
                    return
                if fault == "slow":
                    time.sleep(fake.slow_s)
                answer = fake._reply(self.path, body)
                if fault in REPLY_FAULTS:
                    REPLY_FAULTS[fault](answer)
                reply = json.dumps(answer).encode()  # NaN is written as NaN, which JSON parsers accept
                if fault == "malformed":
                    return self._send(200, b"{\"choices\": [tru")
                if fault == "cut":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply[: len(reply) // 2])
                    self.wfile.flush()
                    self.connection.close()
                    return
                try:
                    self._send(200, reply)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler
