"""A scripted OpenAI-compatible judge on 127.0.0.1, for the judge, eval and synth pairs tests.

The judge reads the two answers out of the user message (``[回答A]`` / ``[回答B]``);
``behaviour(first, second, n)`` decides what the n-th request with that exact
message gets: a reply text (sent with status 200), ("429", retry_after) or "500".
The default prefers the longer answer, and calls equal lengths a tie.
Requests are counted per message, so a test can tell which judgments were asked again.
A request whose user message is no judge request (a candidate for ``synth pairs``)
is answered by ``candidate(prompt, n)``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from http.server import BaseHTTPRequestHandler

from helpers.http_json import LoopbackServer, send_json

ANSWERS = re.compile(r"\[回答A\]\n(.*)\n\[回答B\]\n(.*)\Z", re.S)


def verdict(winner: str, reason: str = "更贴合对象和场景") -> str:
    return json.dumps({"winner": winner, "reason": reason}, ensure_ascii=False)


def longer_wins(first: str, second: str, n: int):
    if len(first) == len(second):
        return verdict("tie", "两者相当")
    return verdict("A" if len(first) > len(second) else "B")


class FakeJudge(LoopbackServer):
    def __init__(self):
        super().__init__()
        self.behaviour = longer_wins
        self.candidate = lambda prompt, n: f"{prompt}：远端候选{n}号，祝你万事如意！"
        self.on_request = None  # called with the running total, before answering

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def judged(self) -> Counter:
        """Requests per (first answer, second answer) shown to the judge."""
        out = Counter()
        for message, n in self.snapshot().items():
            m = ANSWERS.search(message)
            if m:
                out[m.groups()] += n
        return out

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        body = json.loads(h.rfile.read(int(h.headers.get("Content-Length", 0))))
        message = body["messages"][-1]["content"]
        with self.lock:
            self.counts[message] += 1
            n, total = self.counts[message], sum(self.counts.values())
        if self.on_request:
            self.on_request(total)
        m = ANSWERS.search(message)
        action = self.behaviour(*m.groups(), n) if m else self.candidate(message, n)
        if action == "500":
            return send_json(h, 500, {"error": {"message": "upstream exploded"}})
        if isinstance(action, tuple) and action[0] == "429":
            return send_json(h, 429, {"error": {"message": "rate limited"}}, {"Retry-After": action[1]})
        return send_json(h, 200, {
            "id": "chatcmpl-judge", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": action}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
        })
