"""A live server on 127.0.0.1 over the taught tiny model, shared by the serve tests."""

from __future__ import annotations

import threading

import pytest

from tianji_ft.chat.engine import GenerationParams

MODEL_NAME = "tianji"





@pytest.fixture(scope="session")
def server(taught_model_dir):
    """The running server (one generation at a time, so bursts must queue)."""
    from tianji_ft.chat.engine import ChatEngine
    from tianji_ft.serve.server import make_server

    engine = ChatEngine(taught_model_dir, device="cpu", max_concurrency=1)
    srv = make_server(engine, "127.0.0.1", 0, defaults=GenerationParams(temperature=0.0, max_new_tokens=48),
                      names=[MODEL_NAME], log_requests=False)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def base_url(server) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"
