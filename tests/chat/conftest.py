"""Fixtures for the chat tests: the taught engine, a fake engine."""

from __future__ import annotations

import pytest

from tianji_ft.chat.engine import Reply


@pytest.fixture(scope="session")
def taught_engine(taught_model_dir):
    from tianji_ft.chat.engine import ChatEngine

    return ChatEngine(taught_model_dir, device="cpu")



class FakeEngine:
    """Answers ``"<n>:<last user message>"`` and records every message list it was given."""

    def __init__(self, finish_reason: str = "stop"):
        self.calls: list[list[dict]] = []
        self.finish_reason = finish_reason

    def _reply(self, messages):
        self.calls.append(messages)
        return Reply(f"{len(self.calls)}:{messages[-1]['content']}", self.finish_reason, 1, 1)

    def chat(self, messages, params=None):
        return self._reply(messages)

    def stream(self, messages, params=None):
        engine = self

        class Pieces:
            reply = None

            def __iter__(self):
                Pieces.reply = engine._reply(messages)
                text = Pieces.reply.text
                yield text[:1]
                yield text[1:]

        return Pieces()


@pytest.fixture
def fake_engine():
    return FakeEngine()
