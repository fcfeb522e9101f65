"""Fixtures for the chat tests: tiny models, their tokenizers, the taught model, a fake engine."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tianji_ft.chat.engine import Reply


def _load_taught_module():
    spec = importlib.util.spec_from_file_location("tianji_taught_model", Path(__file__).with_name("taught_model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


taught = _load_taught_module()


@pytest.fixture(scope="session")
def tiny_model():
    """``tiny_model(family)``: the cached tiny model folder of that family."""
    from tianji_ft.launch.tiny import ensure_tiny_model

    return ensure_tiny_model


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    cache = {}

    def load(family):
        if family not in cache:
            cache[family] = AutoTokenizer.from_pretrained(tiny_model(family), trust_remote_code=True)
        return cache[family]

    return load


@pytest.fixture(scope="session")
def taught_model_dir(tmp_path_factory) -> Path:
    """The tiny InternLM2 model taught to answer the demo wishes and stop (with a run manifest)."""
    import torch

    torch.set_num_threads(1)
    return taught.taught_model(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def taught_engine(taught_model_dir):
    from tianji_ft.chat.engine import ChatEngine

    return ChatEngine(taught_model_dir, device="cpu")


@pytest.fixture(scope="session")
def wishes():
    return taught.wishes()


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
