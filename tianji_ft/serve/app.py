"""The FastAPI app behind ``tianji-ft serve``: OpenAI- and Ollama-compatible routes over one chat engine.

Routes: ``POST /v1/chat/completions`` (JSON or server-sent events), ``GET
/v1/models``, ``POST /api/chat`` and ``POST /api/generate`` (JSON or NDJSON,
streaming by default as in Ollama), ``GET /api/tags``, ``GET /api/version``,
``GET /health``, ``GET /metrics`` (Prometheus), ``GET /docs`` and ``GET
/openapi.json``.

A chat request goes: body (411/413/400) -> its pydantic model (422) -> model
name (404) and messages (400) -> prompt tokens against the model's context
(400) -> a generation slot (429 when the queue is full, 503 past the request
timeout) -> generation on a pump thread (:mod:`tianji_ft.serve.scheduler`),
stopped when the client disconnects or the request times out.

Bodies are read as JSON whatever their Content-Type says: ``curl -d`` (the
Ollama tutorial) sends ``application/x-www-form-urlencoded``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from tianji_ft import __version__
from tianji_ft.chat.engine import GenerationParams
from tianji_ft.serve import protocol as p
from tianji_ft.serve import schemas as s
from tianji_ft.serve.auth import KeyCheck
from tianji_ft.serve.observe import ClientGone, Metrics, Observe, log_internal_error, request_info
from tianji_ft.serve.protocol import ApiError
from tianji_ft.serve.scheduler import Generation, GenerationTimeout, PromptCounter, Slots

MAX_BODY = 1 << 20
DRAIN_LIMIT = 16 << 20  # an oversized body up to this size is read (and dropped) so the client sees its 413
OLLAMA_VERSION = "0.6.0"  # what /api/version reports: the Ollama API level these routes follow


@dataclasses.dataclass
class Settings:
    defaults: GenerationParams = dataclasses.field(default_factory=GenerationParams)
    names: tuple[str, ...] = ()
    max_body: int = MAX_BODY
    api_keys: tuple[str, ...] = ()
    max_concurrency: int = 1
    max_queue: int = 64
    request_timeout: float = 600.0
    cors_origins: tuple[str, ...] = ()
    access_log: bool = True


class ServeState:
    """What the routes share: the engine, its slots and threads, the metrics."""

    def __init__(self, engine, settings: Settings):
        self.engine, self.settings = engine, settings
        self.served = {engine.name, *settings.names}
        self.metrics = Metrics()
        self.keys = KeyCheck(settings.api_keys)
        self.slots = Slots(settings.max_concurrency, settings.max_queue, on_change=self.metrics.slots_changed)
        self.counter = PromptCounter(engine)
        self.pool = ThreadPoolExecutor(settings.max_concurrency, thread_name_prefix="tianji-serve-pump")
        self.active: set[Generation] = set()

    def close(self) -> None:
        for generation in list(self.active):
            generation.stop()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.counter.close()


# --- errors -------------------------------------------------------------------------


def error_response(path: str, err: ApiError) -> JSONResponse:
    body = {"error": err.message} if path.startswith("/api/") else p.openai_error(err)
    return JSONResponse(body, status_code=err.status, headers=err.headers)


async def _api_error(request: Request, err: ApiError) -> JSONResponse:
    return error_response(request.url.path, err)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    path = request.url.path
    if exc.status_code == 404:
        err = ApiError(404, f"no route {json.dumps(path[:100])}; see /docs for the routes", code="not_found")
    elif exc.status_code == 405:
        err = ApiError(405, f"{request.method} is not allowed on {path}", code="method_not_allowed")
    else:
        err = ApiError(exc.status_code, str(exc.detail))
    err.headers.update(exc.headers or {})
    return error_response(path, err)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return error_response(request.url.path, ApiError(422, "the request does not match the schema (see /docs)"))


# --- reading a body -------------------------------------------------------------------


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, at most ``limit`` bytes (413 past it), within ``timeout`` seconds (408 past it)."""
    length = request.headers.get("content-length")
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if length is None and not chunked:
        raise ApiError(411, "send the JSON body with a Content-Length header", code="length_required")
    size = None
    if length is not None:
        try:
            size = int(length)
        except ValueError:
            size = -1
        if size < 0:
            raise ApiError(400, f"bad Content-Length {length[:20]!r}", code="bad_content_length",
                           headers={"Connection": "close"})
    too_large = ApiError(413, f"the request body is {size} bytes; the limit is {limit}" if size is not None
                         else f"the request body is over the limit of {limit} bytes", code="request_too_large",
                         headers={"Connection": "close"})
    if size is not None and size > DRAIN_LIMIT:
        raise too_large  # not worth reading: the connection closes after the answer

    async def read() -> bytes:
        body, received = bytearray(), 0
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received <= limit:
                    body += chunk
                elif received > DRAIN_LIMIT:
                    break
                # else: drained, so that the client, still sending, gets to read its 413
        except ClientDisconnect:
            raise ClientGone() from None
        if received > limit:
            raise too_large
        return bytes(body)

    try:
        return await asyncio.wait_for(read(), max(timeout, 0.001))
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {timeout:.0f} s", code="body_timeout",
                       headers={"Connection": "close"}) from None


async def _wait_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_disconnected(request: Request, awaitable):
    """``await awaitable``, unless the client disconnects first (then :class:`ClientGone`, the awaitable cancelled)."""
    task = asyncio.ensure_future(awaitable)
    watch = asyncio.ensure_future(_wait_disconnect(request.receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        watch.cancel()
        raise
    if task.done():
        watch.cancel()
        return task.result()
    task.cancel()
    try:
        await task
    except BaseException:  # its cancellation, or whatever it raised while stopping: the client is gone anyway
        pass
    raise ClientGone()


# --- the chat routes ---------------------------------------------------------------------


# Characters Python's str.splitlines() (and so httpx's iter_lines(), which the ollama client reads streams with)
# takes for line ends; json.dumps already escapes the ones below U+0020.
_LINE_ENDS = (("\x85", "\\u0085"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def _line(obj) -> bytes:
    """``obj`` as one line of JSON: Chinese kept readable, nothing a line reader could split."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    for char, escape in _LINE_ENDS:
        if char in text:  # rare: a scan is cheaper than str.translate on every piece
            text = text.replace(char, escape)
    return text.encode("utf-8")


def _sse(obj) -> bytes:
    return b"data: " + _line(obj) + b"\n\n"


def _ndjson(obj) -> bytes:
    return _line(obj) + b"\n"


def _timeout_error(state: ServeState) -> ApiError:
    seconds = state.settings.request_timeout
    return ApiError(503, f"the answer took longer than the request timeout ({seconds:g} s); ask for fewer tokens "
                    "or retry later", code="timeout", headers={"Retry-After": str(state.slots.retry_after())})


class _Answer:
    """One chat request from its checked body to its last byte."""

    def __init__(self, request: Request, state: ServeState, job: p.Job):
        self.request, self.state, self.job = request, state, job
        self.info = request_info(request.scope)
        self.deadline = self.info.started + state.settings.request_timeout
        self.generation = Generation(state.engine, job, state.pool, state.slots, on_done=state.active.discard)
        self.first_piece = True
        self._finished = False

    async def start(self) -> None:
        await until_disconnected(self.request, self.generation.start(self.deadline - time.monotonic()))
        self.state.active.add(self.generation)

    async def pieces(self):
        async for text in self.generation.pieces(self.deadline):
            if self.first_piece:
                self.first_piece = False
                self.state.metrics.ttft.observe(time.monotonic() - self.info.started)
            yield text

    def finished(self, outcome: str) -> None:
        """However the answer ended: done, client_gone, timeout or error (the first call counts)."""
        self.generation.stop()
        if self._finished:
            return
        self._finished = True
        metrics = self.state.metrics
        reply = self.generation.reply
        if outcome == "done" and reply is not None:
            self.info.completion_tokens = reply.completion_tokens
            metrics.generated_tokens.inc(reply.completion_tokens)
        elif outcome in ("client_gone", "timeout"):
            metrics.stopped.labels(outcome).inc()
            self.info.note = "client left; generation stopped" if outcome == "client_gone" else "timed out"

    async def whole(self):
        """The complete reply (non-streaming answers)."""
        async def collect():
            async for _ in self.pieces():
                pass
            return self.generation.reply

        outcome = "error"
        try:
            reply = await until_disconnected(self.request, collect())
            outcome = "done"
            return reply
        except ClientGone:
            outcome = "client_gone"
            raise
        except GenerationTimeout:
            outcome = "timeout"
            raise _timeout_error(self.state) from None
        finally:
            self.finished(outcome)

    async def streamed(self, start: list[bytes], piece, end, error):
        """Bytes of a streamed answer: ``start``, ``piece(text)`` each, ``end(reply)``, or ``error(ApiError)``."""
        outcome = "client_gone"  # unless it ends otherwise: a disconnect cancels this generator mid-await
        try:
            for data in start:
                yield data
            async for text in self.pieces():
                yield piece(text)
            outcome = "done"
            for data in end(self.generation.reply):
                yield data
        except GenerationTimeout:
            outcome = "timeout"
            yield error(_timeout_error(self.state))
        except Exception as err:  # headers are out: say so in the stream, log one line
            outcome = "error"
            log_internal_error(self.info, self.request.method, self.request.url.path, err)
            yield error(ApiError(500, f"internal error (request id {self.info.id})", code="internal_error"))
        finally:
            self.finished(outcome)

    def response(self, body, media_type: str, headers=None) -> StreamingResponse:
        return _Stream(body, on_close=lambda: self.finished("client_gone"), media_type=media_type, headers=headers)


class _Stream(StreamingResponse):
    """A streaming response that stops its generation however it ends, even before its first byte
    (a client gone just as its slot came free: Starlette then never starts the body)."""

    def __init__(self, content, on_close, **kwargs):
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


async def _checked_job(request: Request, state: ServeState, kind: str) -> p.Job:
    info = request_info(request.scope)
    settings = state.settings
    raw = await read_body(request, settings.max_body, info.started + settings.request_timeout - time.monotonic())
    body = p.parse_body(raw)
    if kind == "openai":
        job = p.openai_job(p.validate(s.ChatCompletionRequest, body), settings.defaults, state.served)
    else:
        model = s.OllamaChatRequest if kind == "ollama_chat" else s.OllamaGenerateRequest
        job = p.ollama_job(p.validate(model, body), settings.defaults, state.served)
    prompt_tokens = await state.counter.count(job.messages)
    p.fit_to_context(job, prompt_tokens, state.counter.context)
    info.prompt_tokens = prompt_tokens
    return job


async def openai_chat(request: Request) -> Response:
    state: ServeState = request.app.state.serve
    job = await _checked_job(request, state, "openai")
    answer = _Answer(request, state, job)
    await answer.start()
    state.metrics.prompt_tokens.inc(job.prompt_tokens)
    cid, model = p.completion_id(), job.model
    if not job.stream:
        return JSONResponse(p.openai_completion(cid, model, await answer.whole()))

    def end(reply):
        yield _sse(p.openai_chunk(cid, model, {}, reply.finish_reason))
        if job.include_usage:
            yield _sse(p.openai_chunk(cid, model, {}, usage=p.openai_usage(reply)))
        yield b"data: [DONE]\n\n"

    def error(err: ApiError) -> bytes:
        return _sse(p.openai_error(err)) + b"data: [DONE]\n\n"

    events = answer.streamed([_sse(p.openai_chunk(cid, model, {"role": "assistant", "content": ""}))],
                             lambda text: _sse(p.openai_chunk(cid, model, {"content": text})), end, error)
    return answer.response(events, "text/event-stream; charset=utf-8", headers={"Cache-Control": "no-cache"})


async def _ollama(request: Request, kind: str) -> Response:
    state: ServeState = request.app.state.serve
    job = await _checked_job(request, state, kind)
    answer = _Answer(request, state, job)
    await answer.start()
    state.metrics.prompt_tokens.inc(job.prompt_tokens)
    started, model, chat = time.monotonic(), job.model, job.chat
    if not job.stream:
        reply = await answer.whole()
        return JSONResponse(p.ollama_final(model, reply, started, chat, reply.text))
    lines = answer.streamed([], lambda text: _ndjson(p.ollama_piece(model, text, chat)),
                            lambda reply: [_ndjson(p.ollama_final(model, reply, started, chat))],
                            lambda err: _ndjson({"error": err.message}))
    return answer.response(lines, "application/x-ndjson")


async def ollama_chat(request: Request) -> Response:
    return await _ollama(request, "ollama_chat")


async def ollama_generate(request: Request) -> Response:
    return await _ollama(request, "ollama_generate")


# --- the app ----------------------------------------------------------------------------


_STATUS_TEXT = {
    400: "Malformed JSON, or a request the model cannot take: empty or out-of-order messages, a prompt plus "
         "max_tokens over the model's context",
    401: "A valid API key is required (Authorization: Bearer KEY)",
    404: "Unknown model",
    408: "The body did not arrive within the request timeout",
    411: "No Content-Length (and not chunked)",
    413: "The body is over the size limit (--max-body)",
    422: "A field is missing or has the wrong type or value",
    429: "The queue is full (--max-queue); retry after Retry-After seconds",
    503: "No slot came free, or the answer took longer than the request timeout; retry after Retry-After seconds",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "required": True,
                                "schema": {"type": "string"}}}


def _errors(api: str, *codes: int) -> dict:
    model = s.OllamaError if api == "ollama" else s.OpenAIError
    return {code: {"model": model, "description": _STATUS_TEXT[code],
                   **({"headers": _RETRY_AFTER} if code in (429, 503) else {})} for code in codes}


def _json_body(model) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


CHAT_ERRORS = (400, 404, 408, 411, 413, 422, 429, 503)


def create_app(engine, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    state = ServeState(engine, settings)
    app = FastAPI(title="tianji-ft serve", version=__version__, redoc_url=None,
                  description="OpenAI- and Ollama-compatible chat API over one fine-tuned model.")
    app.state.serve = state
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    guarded = {}
    if state.keys:
        bearer = HTTPBearer(auto_error=False, description="one of the server's API keys")

        async def require_key(request: Request, _=Security(bearer)) -> None:
            if not state.keys.accepts(request.headers.get("authorization")):
                raise ApiError(401, "a valid API key is required: send the header Authorization: Bearer KEY",
                               code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

        guarded = {"dependencies": [Security(require_key)]}

    def openai(code_list=()):
        return {**guarded, "responses": _errors("openai", *((401,) if state.keys else ()), *code_list)}

    def ollama(code_list=()):
        return {**guarded, "responses": _errors("ollama", *((401,) if state.keys else ()), *code_list)}

    created = int(time.time())

    @app.get("/", response_model=s.Root, tags=["server"])
    async def root():
        return {"status": "tianji-ft serve is running"}

    @app.get("/health", response_model=s.Health, tags=["server"])
    async def health():
        """Always open, without a key."""
        return {"status": "ok", "models": sorted(state.served)}

    @app.get("/api/version", response_model=s.Version, tags=["ollama"])
    async def version():
        return {"version": OLLAMA_VERSION}

    @app.get("/v1/models", response_model=s.ModelList, tags=["openai"], **openai())
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "tianji-ft"}
                                           for name in sorted(state.served)]}

    @app.get("/api/tags", response_model=s.OllamaTags, tags=["ollama"], **ollama())
    async def tags():
        details = {"format": "safetensors", "family": "", "parameter_size": "", "quantization_level": ""}
        return {"models": [{"name": name, "model": name, "modified_at": p.ollama_time(), "size": 0, "digest": "",
                            "details": details} for name in sorted(state.served)]}

    @app.get("/metrics", tags=["server"], response_class=Response, **openai(),
             openapi_extra={"responses": {"200": {"description": "Prometheus text format",
                                                  "content": {"text/plain": {"schema": {"type": "string"}}}}}})
    async def metrics():
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def ref(model) -> dict:
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    # One server-sent event (the convention before OpenAPI 3.2's itemSchema): its data is a JSON chunk, an error,
    # or the closing [DONE].
    sse_event = {"type": "object", "required": ["data"], "properties": {"data": {
        "type": "string", "if": {"const": "[DONE]"}, "then": True,
        "else": {"contentMediaType": "application/json",
                 "contentSchema": {"anyOf": [ref(s.ChatCompletionChunk), ref(s.OpenAIError)]}}}}}

    def ndjson(model) -> dict:  # the lines, read as an array
        return {"schema": {"type": "array", "items": {"anyOf": [ref(model), ref(s.OllamaError)]}}}

    app.post("/v1/chat/completions", tags=["openai"], **openai(CHAT_ERRORS),
             openapi_extra={**_json_body(s.ChatCompletionRequest), "responses": {"200": {
                 "description": "The answer; with stream true, server-sent events of chat.completion.chunk",
                 "content": {"application/json": {"schema": ref(s.ChatCompletion)},
                             "text/event-stream": {"schema": sse_event}}}}})(openai_chat)
    app.post("/api/chat", tags=["ollama"], **ollama(CHAT_ERRORS),
             openapi_extra={**_json_body(s.OllamaChatRequest), "responses": {"200": {
                 "description": "The answer; streaming (the default), one JSON object a line",
                 "content": {"application/json": {"schema": ref(s.OllamaChatResponse)},
                             "application/x-ndjson": ndjson(s.OllamaChatResponse)}}}})(ollama_chat)
    app.post("/api/generate", tags=["ollama"], **ollama(CHAT_ERRORS),
             openapi_extra={**_json_body(s.OllamaGenerateRequest), "responses": {"200": {
                 "description": "The answer; streaming (the default), one JSON object a line",
                 "content": {"application/json": {"schema": ref(s.OllamaGenerateResponse)},
                             "application/x-ndjson": ndjson(s.OllamaGenerateResponse)}}}})(ollama_generate)

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (*s.REQUEST_MODELS, s.ChatCompletion, s.ChatCompletionChunk, s.OllamaChatResponse,
                          s.OllamaGenerateResponse, s.OpenAIError, s.OllamaError):
                mode = "validation" if model in s.REQUEST_MODELS else "serialization"
                found = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
                components.update(found.pop("$defs", {}))
                components.setdefault(model.__name__, found)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], expose_headers=["X-Request-Id"])
    app.add_middleware(Observe, metrics=state.metrics, access_log=settings.access_log)  # outermost: sees everything
    return app
