"""``tianji-ft serve``: OpenAI- and Ollama-compatible HTTP endpoints over the chat engine.

Routes: ``POST /v1/chat/completions`` (JSON or SSE), ``GET /v1/models``,
``POST /api/chat`` and ``POST /api/generate`` (JSON or NDJSON, streaming by
default as in Ollama), ``GET /api/tags``, ``GET /health``.

One thread per connection; generation waits for one of the engine's
``max_concurrency`` slots, so a burst of requests queues instead of
overloading the model. Bodies over ``max_body`` bytes get 413 unread.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tianji_ft.chat.engine import GenerationParams
from tianji_ft.serve import protocol as p
from tianji_ft.serve.protocol import ApiError
from tianji_ft.core.errors import UserError

MAX_BODY = 1 << 20
DRAIN_LIMIT = 16 << 20
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
POST_ROUTES = {"/v1/chat/completions": "openai_chat", "/api/chat": "ollama_chat", "/api/generate": "ollama_generate"}
GET_ROUTES = {"/health": "health", "/v1/models": "models", "/api/tags": "tags", "/": "root", "/api/version": "version"}


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # pending connections the kernel keeps while threads start

    def __init__(self, address, engine, defaults: GenerationParams | None = None, names=(),
                 max_body: int = MAX_BODY, log_requests: bool = True):
        self.engine = engine
        self.defaults = defaults or GenerationParams()
        self.served = {engine.name, *names}
        self.max_body = max_body
        self.log_requests = log_requests
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tianji-ft"
    timeout = 60  # a client that stops sending its body does not hold a thread forever
    server: ChatServer

    # --- plumbing -----------------------------------------------------------------

    def log_message(self, fmt, *args):
        if self.server.log_requests:
            super().log_message(fmt, *args)

    def _send_json(self, status: int, body, close: bool = False) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, err: ApiError, close: bool = False) -> None:
        if self.path.startswith("/v1/"):
            kind = "not_found_error" if err.status == 404 else "invalid_request_error"
            body = {"error": {"message": err.message, "type": kind, "param": None, "code": err.code}}
        else:
            body = {"error": err.message}
        self._send_json(err.status, body, close=close)

    def _start_chunked(self, content_type: str) -> None:
        self._streaming = True
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _discard(self, size: int) -> None:
        """Read (a bounded amount of) an oversized body so the client sees the 413
        rather than a connection reset while it is still sending."""
        left = min(size, DRAIN_LIMIT)
        while left > 0:
            data = self.rfile.read(min(left, 1 << 16))
            if not data:
                break
            left -= len(data)

    def _read_json(self) -> dict:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or length is None:
            raise ApiError(411, "send the JSON body with a Content-Length header")
        try:
            size = int(length)
        except ValueError:
            raise ApiError(400, f"bad Content-Length {length!r}") from None
        if size > self.server.max_body:
            self._discard(size)
            raise ApiError(413, f"request body is {size} bytes; the limit is {self.server.max_body}")
        raw = self.rfile.read(size)
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ApiError(400, f"malformed JSON body: {err}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "the JSON body must be an object")
        return body

    def _dispatch(self, routes: dict, other: dict) -> None:
        self._streaming = False
        path = self.path.split("?", 1)[0]
        name = routes.get(path)
        try:
            if name is None:
                if path in other:
                    raise ApiError(405, f"{self.command} is not allowed on {path}")
                raise ApiError(404, f"no route {path}")
            getattr(self, "handle_" + name)()
        except ApiError as err:
            # 411/413: the body was not read, so the connection cannot be reused.
            self._send_error(err, close=err.status in (411, 413))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as err:  # a bug or a generation failure: answer 500, keep serving
            traceback.print_exc(file=sys.stderr)
            if self._streaming:  # headers are out; ending the connection is all that is left
                self.close_connection = True
                return
            self._send_error(ApiError(500, f"internal error: {type(err).__name__}: {err}"), close=True)

    def do_GET(self):
        self._dispatch(GET_ROUTES, POST_ROUTES)

    def do_POST(self):
        self._dispatch(POST_ROUTES, GET_ROUTES)

    # --- routes -------------------------------------------------------------------

    def handle_health(self):
        self._send_json(200, {"status": "ok", "models": sorted(self.server.served)})

    def handle_root(self):
        self._send_json(200, {"status": "tianji-ft serve is running"})

    def handle_version(self):
        self._send_json(200, {"version": "0.6.0"})

    def handle_models(self):
        created = int(time.time())
        self._send_json(200, {"object": "list", "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "tianji-ft"}
            for name in sorted(self.server.served)]})

    def handle_tags(self):
        self._send_json(200, {"models": [
            {"name": name, "model": name, "modified_at": p.ollama_time(), "size": 0, "digest": "",
             "details": {"format": "safetensors", "family": "", "parameter_size": "", "quantization_level": ""}}
            for name in sorted(self.server.served)]})

    def handle_openai_chat(self):
        server = self.server
        model, messages, params, stream, include_usage = p.openai_request(self._read_json(), server.defaults,
                                                                           server.served)
        cid = p.completion_id()
        if not stream:
            self._send_json(200, p.openai_completion(cid, model, server.engine.chat(messages, params)))
            return
        pieces = server.engine.stream(messages, params)
        self._start_chunked("text/event-stream; charset=utf-8")

        def event(obj) -> None:
            self._chunk(b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n")

        event(p.openai_chunk(cid, model, {"role": "assistant", "content": ""}))
        with _closing(pieces) as texts:
            for text in texts:
                event(p.openai_chunk(cid, model, {"content": text}))
        event(p.openai_chunk(cid, model, {}, pieces.reply.finish_reason))
        if include_usage:
            event(p.openai_chunk(cid, model, {}, usage=p.openai_usage(pieces.reply)))
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def handle_ollama_chat(self):
        self._ollama(*p.ollama_chat_request(self._read_json(), self.server.defaults, self.server.served), chat=True)

    def handle_ollama_generate(self):
        self._ollama(*p.ollama_generate_request(self._read_json(), self.server.defaults, self.server.served),
                     chat=False)

    def _ollama(self, model, messages, params, stream, chat: bool):
        started, engine = time.monotonic(), self.server.engine
        if not stream:
            reply = engine.chat(messages, params)
            self._send_json(200, p.ollama_final(model, reply, started, chat, reply.text))
            return
        pieces = engine.stream(messages, params)
        self._start_chunked("application/x-ndjson")

        def line(obj) -> None:
            self._chunk(json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n")

        with _closing(pieces) as texts:
            for text in texts:
                line(p.ollama_piece(model, text, chat))
        line(p.ollama_final(model, pieces.reply, started, chat))
        self._chunk(b"")


class _closing:
    """Iterate a text stream; closing it (on a dropped client) stops generation."""

    def __init__(self, pieces):
        self.iterator = iter(pieces)

    def __enter__(self):
        return self.iterator

    def __exit__(self, *exc):
        self.iterator.close()
        return False


def make_server(engine, host: str = "127.0.0.1", port: int = 8000, **kwargs) -> ChatServer:
    return ChatServer((host, port), engine, **kwargs)


def serve(engine, host: str = "127.0.0.1", port: int = 8000, defaults: GenerationParams | None = None,
          names=(), max_body: int = MAX_BODY) -> None:
    """Serve until Ctrl-C."""
    try:
        server = make_server(engine, host, port, defaults=defaults, names=names, max_body=max_body)
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror}); pick another --port") from None
    if host not in LOOPBACK:
        print(f"tianji-ft: warning: listening on {host}, reachable from other machines, with no authentication",
              file=sys.stderr)
    bound = server.server_address
    base = f"http://{host if ':' not in host else f'[{host}]'}:{bound[1]}"
    print(f"serving {', '.join(sorted(server.served))} at {base} "
          f"(OpenAI: {base}/v1, Ollama: {base}/api/chat); Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
