"""Servers on 127.0.0.1 for the serve tests: one over the taught tiny model, and any number over a fake engine."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from tianji_ft.chat.engine import GenerationParams, Reply

MODEL_NAME = "tianji"


class FakeTokenizer:
    """One token per character."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(range(len(text)))}


class FakeEngine:
    """Answers ``"<n>:<last message>"`` one character a piece, as the chat engine's streams do.

    It honours ``max_new_tokens`` (finish "length" past it), has a context
    (``model.config.max_position_embeddings``), can be slowed (``delay`` per
    piece), held (clear ``gate``) or made to fail (``fail``: True, or the exception class), and counts the
    generations that ran to their end and those stopped early (a stream closed
    before its end, as the server does when a client leaves).
    """

    name = "fake"

    def __init__(self, context: int = 256, delay: float = 0.0, fail: bool | type = False):
        self.model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=context))
        self.tokenizer = FakeTokenizer()
        self.delay, self.fail = delay, fail
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[tuple[list[dict], GenerationParams]] = []
        self.finished = self.stopped = 0
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def render(self, messages) -> str:
        return "".join(f"<{m['role']}>{m['content']}" for m in messages)

    def stream(self, messages, params):
        engine = self

        class Pieces:
            reply = None

            def __iter__(self):
                with engine._lock:
                    engine.calls.append((messages, params))
                    n = len(engine.calls)
                    engine.running += 1
                    engine.most_running = max(engine.most_running, engine.running)
                text, finish = f"{n}:{messages[-1]['content']}", "stop"
                if len(text) > params.max_new_tokens:
                    text, finish = text[:params.max_new_tokens], "length"
                done = False
                try:
                    if engine.fail:
                        kind = engine.fail if isinstance(engine.fail, type) else RuntimeError
                        raise kind(f"engine failure with the prompt {messages[-1]['content']}")
                    for ch in text:
                        engine.gate.wait(30)
                        if engine.delay:
                            time.sleep(engine.delay)
                        yield ch
                    self.reply = Reply(text, finish, len(engine.render(messages)), len(text))
                    done = True
                finally:
                    with engine._lock:
                        engine.running -= 1
                        if done:
                            engine.finished += 1
                        else:
                            engine.stopped += 1

        return Pieces()

    def chat(self, messages, params=None):  # the server never calls it: every answer is a stream
        raise AssertionError("serve must answer through stream() so that it can stop generating")


@pytest.fixture(scope="session")
def make_engine():
    """``make_engine(**FakeEngine options)``."""
    return FakeEngine


@pytest.fixture
def start_server():
    """``start_server(engine=None, **make_server kwargs)``: a running server over a fake engine, stopped afterwards."""
    from tianji_ft.serve.server import make_server

    started = []

    def start(engine=None, **kwargs):
        engine = engine or FakeEngine()
        kwargs.setdefault("names", [MODEL_NAME])
        kwargs.setdefault("access_log", False)
        srv = make_server(engine, "127.0.0.1", 0, **kwargs).start()
        started.append((srv, engine))
        return srv

    yield start
    for srv, engine in started:
        engine.gate.set()
        srv.stop()


@pytest.fixture(scope="session")
def server(taught_model_dir):
    """The running server over the taught model (one generation at a time, so bursts must queue)."""
    from tianji_ft.chat.engine import ChatEngine
    from tianji_ft.serve.server import make_server

    engine = ChatEngine(taught_model_dir, device="cpu", max_concurrency=1)
    srv = make_server(engine, "127.0.0.1", 0, defaults=GenerationParams(temperature=0.0, max_new_tokens=48),
                      names=[MODEL_NAME], access_log=False).start()
    yield srv
    srv.stop()
    engine.close()


@pytest.fixture(scope="session")
def base_url(server) -> str:
    return server.url
