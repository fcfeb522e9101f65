"""What the server tells its operator: Prometheus metrics, one access-log line per request, one line per 500.

:class:`Observe` is the outermost middleware. It gives each request an id
(the ``X-Request-Id`` header), counts it, writes its access-log line
(method, route, status, tokens, milliseconds), and turns any exception that
escaped a handler into a 500 in the API's shape plus one log line naming the
request id and the exception's type and place: never the body, the message
(which may quote it) or the headers (which may hold a key).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import traceback
import uuid

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from starlette.requests import ClientDisconnect
from uvicorn.protocols.utils import ClientDisconnected

log = logging.getLogger("tianji_ft.serve")
access = logging.getLogger("tianji_ft.serve.access")

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
DURATION_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class ClientGone(Exception):
    """The client disconnected before its answer: nothing to send."""


# However the client's leaving shows up: ours, Starlette's reading a body, uvicorn's writing one. (Not any
# ConnectionError: one from the engine is a failure of ours, a 500.)
GONE = (ClientGone, ClientDisconnect, ClientDisconnected)


class Metrics:
    """The server's metrics, in a registry of their own (one per app)."""

    def __init__(self):
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes, open fds, CPU seconds
        self.requests = Counter("tianji_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.duration = Histogram("tianji_request_duration_seconds", "Time from request to the end of the answer",
                                  ["route"], buckets=DURATION_BUCKETS, registry=r)
        self.prompt_tokens = Counter("tianji_prompt_tokens", "Prompt tokens of the requests generated for",
                                     registry=r)
        self.generated_tokens = Counter("tianji_generated_tokens", "Tokens generated (answers that ran to their end)",
                                        registry=r)
        self.ttft = Histogram("tianji_time_to_first_token_seconds",
                              "Time from request to the first piece of its answer", buckets=TTFT_BUCKETS, registry=r)
        self.queue_depth = Gauge("tianji_queue_depth", "Requests waiting for a generation slot", registry=r)
        self.running = Gauge("tianji_generations_running", "Generation slots in use", registry=r)
        self.in_flight = Gauge("tianji_requests_in_flight", "HTTP requests being answered (queued ones included)",
                               registry=r)
        self.stopped = Counter("tianji_generations_stopped", "Generations stopped early, by reason",
                               ["reason"], registry=r)
        for reason in ("client_gone", "timeout"):
            self.stopped.labels(reason)

    def slots_changed(self, busy: int, waiting: int) -> None:
        self.running.set(busy)
        self.queue_depth.set(waiting)


@dataclasses.dataclass
class RequestInfo:
    """Per request, filled in by the handlers for the access log."""

    id: str
    started: float
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    note: str = ""


def request_info(scope) -> RequestInfo:
    info = scope.get("tianji")
    if info is None:  # a request that did not pass through Observe (not in this app)
        info = scope["tianji"] = RequestInfo(uuid.uuid4().hex[:16], time.monotonic())
    return info


def where(err: BaseException) -> str:
    """``file.py:123`` of the innermost frame: enough to find a bug, nothing from the request."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return "?"
    frame = frames[-1]
    return f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}"


def log_internal_error(info: RequestInfo, method: str, route: str, err: BaseException) -> None:
    log.error("request %s %s %s failed: %s at %s (answered 500)", info.id, method, route, type(err).__name__,
              where(err))


def error_body(path: str, status: int, message: str, code: str | None) -> bytes:
    if path.startswith("/api/"):
        body = {"error": message}
    else:
        kind = {500: "server_error"}.get(status, "invalid_request_error")
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return json.dumps(body).encode("utf-8")


class Observe:
    """Pure ASGI middleware: request id, metrics, access log, and the last word on exceptions."""

    def __init__(self, app, metrics: Metrics, access_log: bool = True):
        self.app, self.metrics, self.access_log = app, metrics, access_log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        info = scope["tianji"] = RequestInfo(uuid.uuid4().hex[:16], time.monotonic())
        state = {"status": None, "done": False}
        request_id = info.id.encode()

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id)]}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                state["done"] = True
            await send(message)

        metrics = self.metrics
        metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except GONE:  # 499: nginx's code for it, when nothing was sent; nothing more can be
            state["status"], info.note = state["status"] or 499, "client left"
        except Exception as err:  # a bug: one line with the request id, and a 500 if nothing was sent yet
            route = _route(scope)
            log_internal_error(info, scope["method"], route, err)
            if state["status"] is None:
                body = error_body(scope["path"], 500, f"internal error (request id {info.id})", "internal_error")
                await send_with_id({"type": "http.response.start", "status": 500,
                                    "headers": [(b"content-type", b"application/json"),
                                                (b"content-length", str(len(body)).encode())]})
                await send_with_id({"type": "http.response.body", "body": body})
            else:  # the answer was streaming: end it where it stands
                info.note = "cut short by an internal error"
                if not state["done"]:
                    try:
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                    except Exception:
                        pass
        finally:
            metrics.in_flight.dec()
            elapsed = time.monotonic() - info.started
            route, status = _route(scope), state["status"] or 500
            metrics.requests.labels(route, scope["method"], str(status)).inc()
            metrics.duration.labels(route).observe(elapsed)
            if self.access_log:
                _access_line(scope, route, status, info, elapsed)


def _route(scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def _access_line(scope, route: str, status: int, info: RequestInfo, elapsed: float) -> None:
    client = scope.get("client")
    who = client[0] if client else "-"
    shown = route if route != "unmatched" else json.dumps(scope["path"][:100])[1:-1]  # no control characters
    tokens = ""
    if info.prompt_tokens is not None:
        completion = "-" if info.completion_tokens is None else info.completion_tokens
        tokens = f" prompt={info.prompt_tokens} completion={completion}"
    note = f" ({info.note})" if info.note else ""
    access.info("%s %s %s %d%s %dms id=%s%s", who, scope["method"], shown, status, tokens, round(elapsed * 1000),
                info.id, note)
