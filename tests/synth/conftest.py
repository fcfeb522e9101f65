"""A fault-injecting OpenAI-compatible chat server on 127.0.0.1, for the synth tests.

Requests are counted per item (the user prompt). ``behaviour(prompt, n)`` picks
what the n-th request for a prompt gets: "ok", ("429", retry_after), "500",
("slow", seconds), "drop" (close without answering), "echo_key_400" (an error
body quoting the Authorization header) or "401".
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from helpers.http_json import LoopbackServer, send_json

TEST_KEY = "sk-test-9f8e7d6c5b4a-DO-NOT-LEAK"
PROMPT_FIELDS = re.compile(r"对象称谓是：(.+?)，祝福场景是：(.+?)。")


def prompt_name(prompt: str) -> str:
    return PROMPT_FIELDS.search(prompt).group(1)


class FakeLLM(LoopbackServer):
    def __init__(self):
        super().__init__()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.auth_headers: set[str] = set()
        self.behaviour = lambda prompt, n: "ok"
        self.ok_delay = 0.0

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        body = json.loads(h.rfile.read(int(h.headers.get("Content-Length", 0))))
        if not h.path.endswith("/chat/completions"):
            return send_json(h, 404, {"error": {"message": "not found"}})
        prompt = body["messages"][-1]["content"]
        with self.lock:
            self.counts[prompt] += 1
            n = self.counts[prompt]
            self.times[prompt].append(time.monotonic())
            self.auth_headers.add(h.headers.get("Authorization", ""))
        action = self.behaviour(prompt, n)
        kind = action[0] if isinstance(action, tuple) else action
        if kind == "ok":
            time.sleep(self.ok_delay)
            name, scene = PROMPT_FIELDS.search(prompt).groups()
            reply = f'"祝{name}{scene}顺顺利利，万事如意！"\n（以上为祝福）'
            return send_json(h, 200, {
                "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            })
        if kind == "429":
            return send_json(h, 429, {"error": {"message": "rate limited"}}, {"Retry-After": action[1]})
        if kind == "500":
            return send_json(h, 500, {"error": {"message": "upstream exploded"}})
        if kind == "slow":
            time.sleep(action[1])
            return send_json(h, 200, {"error": "too late"})
        if kind == "drop":
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return None
        if kind == "echo_key_400":
            return send_json(h, 400, {"error": {"message": f"bad request, you sent {h.headers.get('Authorization')}"}})
        if kind == "401":
            return send_json(h, 401, {"error": {"message": "invalid api key"}})
        raise AssertionError(f"unknown action {action!r}")


@pytest.fixture
def fake_llm():
    server = FakeLLM()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def api_key(monkeypatch) -> str:
    monkeypatch.setenv("TIANJI_TEST_KEY", TEST_KEY)
    return TEST_KEY


def _assert_key_absent(folder: Path, *texts: str) -> None:
    """The key appears in no file under ``folder`` and in none of ``texts``."""
    files = [p for p in Path(folder).rglob("*") if p.is_file()]
    assert files, f"nothing written under {folder}"
    for path in files:
        assert TEST_KEY.encode() not in path.read_bytes(), f"API key leaked into {path}"
    for text in texts:
        assert TEST_KEY not in text, "API key leaked into captured output"


@pytest.fixture
def assert_key_absent():
    return _assert_key_absent
