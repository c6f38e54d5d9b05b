"""`distill serve`: a run's student GGUF behind HTTP (FastAPI + uvicorn), OpenAI-compatible plus a domain
endpoint.

- `GET /health`, `GET /v1/models`;
- `POST /v1/completions`, `POST /v1/chat/completions` (OpenAI's request and response shapes, `stream`
  included as server-sent events), so existing clients work unchanged;
- `POST /v1/decide` (decision templates): one record of the template's input fields in; the decision, the
  score (the last label's probability, which the threshold applies to), the decided label's probability,
  every label's probability and the model's name and version out. The prompt is built and
  tokenised exactly as in evaluation (sdk.scoring.FinishedRun), and the threshold is the one the evaluation
  chose on validation for this artifact.

Requests go to one deployment.serving.engine.LlamaCppEngine: concurrent requests are decoded together and
share cached prompt prefixes; when its queue is full the server answers 503 at once. Bad requests get a
4xx whose JSON names the field; uvicorn's graceful shutdown lets requests in flight finish.
"""


import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model, field_validator

from deployment.runtimes.generation import GenerationParams
from deployment.serving.engine import EngineStopped, Job, LlamaCppEngine, Overloaded
from evaluation.report import gate_verdict
from sdk.config import field_path
from sdk.errors import DistillError
from sdk.typed_config import TypedConfig

MAX_TEXT_CHARS = 16_000  # a field or prompt longer than this is refused before tokenising
MAX_BODY_BYTES = 1 << 20  # far above any request within MAX_TEXT_CHARS; larger bodies are not read


class _BodyTooLarge(Exception):
    pass


def _short(text: str) -> str:
    return text if len(text) <= 200 else text[:200] + "..."


_UNION_TAGS = {"str", "int", "float", "bool"}  # pydantic's loc tags for the members of a field's type union


class ServedModel:
    """A run's evaluated GGUF artifact, its tokenizer, template and threshold, and the engine over it."""

    def __init__(self, run_dir: str | Path, artifact: str | None = None, threads: int | None = None,
                 n_seq: int = 32, max_queue: int = 64, max_prompt_tokens: int = 1024, kv_f32: bool = True):
        """kv_f32: keep the KV cache in F32 (llama.cpp's default is F16). With F16, a prompt whose prefix comes
        from the cache gets probabilities up to ~1e-2 away from evaluating it whole (the cached half was
        rounded in another pass); with F32 they agree to float precision, and a small student's cache stays
        small (6 layers x 2 x 192 values x 4 bytes = 9 KiB per token for the default student)."""
        import os

        from sdk.models import known_file_sha256
        from sdk.scoring import load_run

        self.run = load_run(run_dir)
        self.entry = self.run.entry(artifact)
        self.name = self.entry["name"]
        fmt, spec = self.run._spec(self.name, 8)
        if fmt != "gguf":
            raise DistillError(f"artifact {self.name!r} is a {fmt} artifact; `distill serve` serves GGUF files "
                               f"(GGUF artifacts of this run: {', '.join(self.gguf_artifacts()) or 'none'})")
        self.path = Path(spec["model"])
        self.version = f"{self.run.config.name}/{self.name}@{known_file_sha256(self.path)[:12]}"
        self.template = self.run.template
        self.tokenizer = self.run.tokenizer
        self.threads = threads or os.cpu_count() or 1
        self.engine = LlamaCppEngine(str(self.path), threads=self.threads, n_seq=n_seq,
                                     n_ctx=max(4096, n_seq * 256), max_queue=max_queue,
                                     max_prompt_tokens=max_prompt_tokens, kv_f32=kv_f32)
        self.created = int(time.time())

    def gguf_artifacts(self) -> list[str]:
        return [e["name"] for e in self.run.entries if e.get("format") == "gguf"]

    @property
    def input_columns(self) -> list[str]:
        return list(self.run.table.names) if self.run.table is not None else list(self.run.template.columns)

    def close(self) -> None:
        self.engine.close()


# ---- request bodies (OpenAI's field names; unknown fields are refused)
class StreamOptions(TypedConfig):
    include_usage: bool = False  # a last chunk with the token counts, as OpenAI sends it


class _Sampling(TypedConfig):
    model: str | None = None
    max_tokens: int = Field(16, ge=1, le=4096)
    max_completion_tokens: int | None = Field(None, ge=1, le=4096)  # OpenAI's newer name for max_tokens (chat)
    stream_options: StreamOptions | None = None
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    stream: bool = False
    n: Literal[1] = 1
    seed: int | None = None
    user: str | None = None

    def params(self) -> GenerationParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return GenerationParams(max_new_tokens=self.max_completion_tokens or self.max_tokens,
                                temperature=self.temperature, top_p=self.top_p,
                                stop=[s for s in stop if s], seed=self.seed or 0)


class CompletionRequest(_Sampling):
    prompt: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS)


class ChatMessage(TypedConfig):
    role: Literal["system", "user", "assistant"]
    content: str = Field(..., max_length=MAX_TEXT_CHARS)


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1)


def decide_request_model(columns: list[str], optional: set[str]) -> type[BaseModel]:
    """The /v1/decide body: exactly the run's input fields (text or numbers; the run's own checks read them)."""
    value = str | int | float | bool
    fields: dict[str, Any] = {}
    for c in columns:
        if c in optional:
            fields[c] = (value | None, Field(None))
        else:
            fields[c] = (value, Field(...))
    required = [c for c in columns if c not in optional]

    def not_blank(cls, v):  # as `distill score` refuses an empty value, here naming the field as `param`
        if isinstance(v, str) and not v.strip():
            raise ValueError("must not be empty")
        return v

    def not_too_long(cls, v):  # named here, not as the prompt's token count over the server's limit
        if isinstance(v, str) and len(v) > MAX_TEXT_CHARS:
            raise ValueError(f"longer than {MAX_TEXT_CHARS} characters ({len(v)})")
        return v

    validators = {"not_too_long": field_validator(*columns)(not_too_long)}
    if required:
        validators["not_blank"] = field_validator(*required)(not_blank)
    return create_model("DecideRequest", __base__=TypedConfig, __validators__=validators, **fields)


# ---- the app
def create_app(served: ServedModel):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title=f"distill-sdk: {served.name}", version=served.version)
    template = served.template
    decision = template.task == "decision"
    DecideRequest = decide_request_model(served.input_columns, set(getattr(template, "text_columns", ())))

    async def parse(request: Request, model: type[BaseModel]):
        """The JSON body validated by `model` (errors go to the 400 handler below, naming the field)."""
        from pydantic import ValidationError

        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise _BodyTooLarge()
        chunks, size = [], 0
        async for chunk in request.stream():  # read up to the limit only, whatever the header said
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise _BodyTooLarge()
            chunks.append(chunk)
        try:
            data = json.loads(b"".join(chunks) or b"null")
            json.dumps(data, ensure_ascii=False).encode("utf-8")  # an unpaired surrogate escape is not text
        except (ValueError, RecursionError) as err:  # bad JSON, bad UTF-8, 4,300+ digit numbers, deep nesting
            msg = ("nested too deeply" if isinstance(err, RecursionError) else "a number with too many digits"
                   if "int_max_str_digits" in str(err) else _short(str(err)))
            raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": msg}]) from None
        if not isinstance(data, dict):
            raise RequestValidationError([{"type": "model_type", "loc": ("body",),
                                           "msg": "the body must be a JSON object"}])
        try:
            return model.model_validate(data)
        except ValidationError as err:
            raise RequestValidationError(err.errors()) from None

    def error(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}},
                            status_code=status, headers={"Retry-After": "1"} if status == 503 else None)

    @app.exception_handler(StarletteHTTPException)  # 404 / 405 in the same error shape as every other reply
    async def _http(request: Request, err: StarletteHTTPException):
        what = {404: f"no such endpoint: {request.method} {request.url.path}",
                405: f"{request.method} is not allowed on {request.url.path}"}.get(err.status_code, str(err.detail))
        response = error(err.status_code, what)
        response.headers.update(err.headers or {})  # a 405 carries Allow
        return response

    @app.exception_handler(_BodyTooLarge)
    async def _too_large(request: Request, err: _BodyTooLarge):
        return error(413, f"body: larger than {MAX_BODY_BYTES} bytes")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError):
        problems: dict[str, str] = {}  # field -> message (a union's members each report: one line per field)
        for e in err.errors():
            loc = [x for x in e.get("loc", ()) if x != "body"]
            msg = str(e.get("msg", "")).removeprefix("Value error, ")
            head, sep, rest = msg.partition(": ")
            if e.get("type") == "value_error" and sep and head.isidentifier():  # a body check naming its field
                loc, msg = [*loc, head], rest
            union = bool(loc) and loc[-1] in _UNION_TAGS and len(loc) > 1
            where = field_path(tuple(loc[:-1] if union else loc)) or "body"  # messages[0].content
            if where in problems:
                continue
            if e.get("type") == "json_invalid":
                problems[where] = f"body: invalid JSON ({e.get('msg')})"
            elif e.get("type") == "extra_forbidden":
                problems[where] = f"{where}: unknown field"
            elif union:
                problems[where] = f"{where}: must be text, a number or true/false"
            else:
                problems[where] = f"{where}: {msg}"
        return error(400, "; ".join(problems.values()), next(iter(problems), None))

    async def run_job(job: Job):
        try:
            fut = served.engine.submit(job)
        except Overloaded as err:
            return error(503, f"server busy: {err}; retry shortly", kind="overloaded")
        except EngineStopped as err:
            return error(503, str(err), kind="unavailable")
        except ValueError as err:
            return error(400, str(err), "prompt")
        return await asyncio.wrap_future(fut)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": served.name, "version": served.version, "queued": served.engine.pending(),
                "threads": served.threads, "stats": dict(served.engine.stats)}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": served.created,
                                            "owned_by": "distill-sdk", "version": served.version}]}

    @app.post("/v1/decide")
    async def decide(request: Request):
        if not decision:
            return error(404, f"template {template.name!r} generates text: use /v1/completions or "
                              "/v1/chat/completions")
        body = await parse(request, DecideRequest)
        import numpy as np

        from sdk.scoring import decide_labels

        record = body.model_dump()
        try:
            df = served.run.check([record], "request")
            text = served.run.prompts(df, "request")[0]
        except DistillError as err:  # the template's own words where it gave them ("column 'amount': ...")
            return error(400, getattr(err, "detail", None) or str(err), getattr(err, "field", None))
        tokens = served.run.tokenize([text])[0]
        probs = await run_job(Job(tokens=tokens, label_ids=list(served.run.task["label_ids"])))
        if not isinstance(probs, np.ndarray):
            return probs  # an error response
        threshold = served.run.threshold(served.name)
        label = decide_labels(template, probs[None, :], threshold, served.run.options)[0]
        words = [template.label_words[i].strip() for i in range(len(template.label_words))]
        # score: the last label's probability, the figure the threshold applies to (as `distill score` and a
        # bundle's predict.py give it); probability: the decided label's (a flagged fraud case at a low
        # threshold reads "yes" with probability 0.04: the score, not a confidence)
        answer = {"model": served.name, "version": served.version, "decision": words[label], "label": label,
                  "score": float(probs[-1]), "probability": float(probs[label]),
                  "probabilities": dict(zip(words, map(float, probs))), "threshold": threshold}
        unseen = served.run.unseen_values(df)  # a category the training data never held: scored, and said so
        if unseen:
            answer["unseen"] = {col: next(iter(values)) for col, values in unseen.items()}
        return answer

    def completion_tokens(text: str) -> list[int]:
        return list(served.tokenizer(text, add_special_tokens=True)["input_ids"])

    def chat_tokens(messages: list[ChatMessage]) -> list[int]:
        tok = served.tokenizer
        msgs = [m.model_dump() for m in messages]
        if template.chat and getattr(tok, "chat_template", None):  # the run's prompts were chat turns
            ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
            return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        # the run's model read plain prompts (chat off, as fraud's, or a tokenizer without a chat template): the
        # messages are one such prompt, their contents joined by newlines, tokenized as the data stage did; a
        # one-message chat is then the completion of that message (the tokenizer's chat template wrapped it in
        # turns the model never saw)
        return served.run.tokenize(["\n".join(m["content"] for m in msgs)])[0]

    async def respond(req: _Sampling, tokens: list[int], chat: bool):
        created, rid = int(time.time()), f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        obj = "chat.completion" if chat else "text_completion"
        params = req.params()
        if not req.stream:
            gen = await run_job(Job(tokens=tokens, params=params))
            if not hasattr(gen, "text"):
                return gen
            choice = ({"index": 0, "message": {"role": "assistant", "content": gen.text},
                       "finish_reason": gen.finish} if chat else
                      {"index": 0, "text": gen.text, "logprobs": None, "finish_reason": gen.finish})
            return {"id": rid, "object": obj, "created": created, "model": served.name, "choices": [choice],
                    "usage": {"prompt_tokens": len(tokens), "completion_tokens": gen.n_tokens,
                              "total_tokens": len(tokens) + gen.n_tokens}}
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        job = Job(tokens=tokens, params=params, on_text=lambda s: loop.call_soon_threadsafe(pieces.put_nowait, s))
        try:
            fut = served.engine.submit(job)
        except Overloaded as err:
            return error(503, f"server busy: {err}; retry shortly", kind="overloaded")
        except (EngineStopped, ValueError) as err:
            return error(400 if isinstance(err, ValueError) else 503, str(err), "prompt")
        fut.add_done_callback(lambda f: loop.call_soon_threadsafe(pieces.put_nowait, None))

        def chunk(delta: str | None, finish: str | None) -> str:
            if chat:
                choice = {"index": 0, "delta": {} if delta is None else {"content": delta}, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
            return "data: " + json.dumps({"id": rid, "object": f"{obj}.chunk" if chat else obj, "created": created,
                                          "model": served.name, "choices": [choice]}) + "\n\n"

        async def events():
            if chat:
                yield "data: " + json.dumps({"id": rid, "object": "chat.completion.chunk", "created": created,
                                             "model": served.name, "choices": [{"index": 0, "delta": {
                                                 "role": "assistant"}, "finish_reason": None}]}) + "\n\n"
            # stream the engine's pieces, holding back what could be the start of a stop string
            sent = ""
            raw = ""
            while True:
                piece = await pieces.get()
                if piece is None:
                    break
                raw += piece
                safe = _safe_prefix(raw, params.stop)
                if len(safe) > len(sent):
                    yield chunk(safe[len(sent):], None)
                    sent = safe
            gen = fut.result() if fut.exception() is None else None
            if gen is None:
                yield "data: " + json.dumps({"error": {"message": str(fut.exception())}}) + "\n\n"
            else:
                if len(gen.text) > len(sent):
                    yield chunk(gen.text[len(sent):], None)
                yield chunk(None, gen.finish)
                if req.stream_options is not None and req.stream_options.include_usage:
                    yield "data: " + json.dumps({
                        "id": rid, "object": f"{obj}.chunk" if chat else obj, "created": created, "model": served.name,
                        "choices": [], "usage": {"prompt_tokens": len(tokens), "completion_tokens": gen.n_tokens,
                                                 "total_tokens": len(tokens) + gen.n_tokens}}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await parse(request, CompletionRequest)
        return await respond(body, completion_tokens(body.prompt), chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await parse(request, ChatRequest)
        return await respond(body, chat_tokens(body.messages), chat=True)

    return app


def _safe_prefix(text: str, stop: list[str]) -> str:
    """The part of `text` that can be sent: before any stop string, and not ending in a stop string's start."""
    for s in stop:
        i = text.find(s)
        if i >= 0:
            text = text[:i]
    hold = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    return text[: len(text) - hold]


def serve(run_dir: str | Path, artifact: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          threads: int | None = None, n_seq: int = 32, max_queue: int = 64) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM: requests in flight finish first)."""
    import uvicorn

    _check_settings(host, port, threads, n_seq, max_queue)
    try:
        served = ServedModel(run_dir, artifact, threads=threads, n_seq=n_seq, max_queue=max_queue)
    except ValueError as err:  # llama.cpp refused the context (too many sequences for this machine's memory)
        raise DistillError(f"cannot serve {run_dir}: {err}") from None
    app = create_app(served)
    gate = served.entry.get("gate")
    if gate and gate_verdict(gate) != "pass":  # named on the command line: served, and said (as `distill bundle` does)
        kept = gate.get("retention")
        why = gate.get("reason") or (f"{gate['metric']} on validation kept {kept:.1%} of the unquantized student's"
                                     if kept is not None else f"{gate['metric']} on validation")
        print(f"[distill] warning: {served.name}: release gate {gate_verdict(gate)} ({why}; see the report's "
              "Release gates)", flush=True)
    print(f"[distill] serving {served.name} ({served.version}) on http://{host}:{port} "
          f"with {served.threads} threads; {served.engine.n_seq} sequences, queue {max_queue}", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)
    finally:
        served.close()


MAX_SEQUENCES = 256  # llama.cpp's LLAMA_MAX_SEQ (src/llama-cparams.h)


def _check_settings(host: str, port: int, threads: int | None, n_seq: int, max_queue: int) -> None:
    """The server's settings, checked before the model loads; the address is tried too, so a port in use
    or a host this machine does not have is named here rather than by uvicorn after the model loaded."""
    import socket

    for name, value, low, high in (("--port", port, 1, 65535), ("--sequences", n_seq, 1, MAX_SEQUENCES),
                                   ("--max-queue", max_queue, 1, None), ("--threads", threads, 1, None)):
        if value is not None and (value < low or (high is not None and value > high)):
            raise DistillError(f"{name} {value}: must be {low} or more" + (f" and at most {high}" if high else ""))
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise DistillError(f"--host {host!r}: not an address of this machine ({err})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as err:
            raise DistillError(f"cannot listen on {host}:{port}: {err.strerror}") from None


def serve_command(
    run_dir: Path,
    artifact: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    threads: int | None = None,
    sequences: int = 32,
    max_queue: int = 64,
) -> None:
    """Serve a finished run's student GGUF over HTTP: OpenAI-compatible /v1/completions and
    /v1/chat/completions, /v1/decide for decision templates, /health. Ctrl-C stops after requests in flight."""
    import typer

    try:
        serve(run_dir, artifact, host=host, port=port, threads=threads, n_seq=sequences, max_queue=max_queue)
    except DistillError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2)
