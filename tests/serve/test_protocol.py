"""Request checking for the OpenAI and Ollama bodies (no model needed)."""

from __future__ import annotations

import pytest

from tianji_ft.chat.engine import GenerationParams
from tianji_ft.serve.protocol import (ApiError, check_messages, ollama_chat_request, ollama_generate_request,
                                      openai_request)

DEFAULTS = GenerationParams(temperature=0.1, max_new_tokens=64, seed=0)
SERVED = {"tianji", "merged"}
USER = [{"role": "user", "content": "你好"}]


def _status(fn, *args):
    with pytest.raises(ApiError) as info:
        fn(*args)
    return info.value.status, info.value.message


def test_openai_fields_map_to_generation_params():
    model, messages, params, stream, usage = openai_request(
        {"model": "tianji", "messages": USER, "temperature": 0, "top_p": 0.5, "max_tokens": 7, "seed": 3,
         "stop": "。", "stream": True, "stream_options": {"include_usage": True}}, DEFAULTS, SERVED)
    assert (model, messages, stream, usage) == ("tianji", USER, True, True)
    assert (params.temperature, params.top_p, params.max_new_tokens, params.seed, params.stop) == (0, 0.5, 7, 3, ("。",))
    _, _, params, stream, _ = openai_request({"model": "merged", "messages": USER}, DEFAULTS, SERVED)
    assert params == DEFAULTS and stream is False


def test_openai_text_parts_are_joined():
    messages = check_messages([{"role": "user", "content": [{"type": "text", "text": "你"}, {"type": "text", "text": "好"}]}])
    assert messages == USER


@pytest.mark.parametrize("body, status, words", [
    ({"messages": USER}, 400, "model is required"),
    ({"model": "gpt-4", "messages": USER}, 404, "not found"),
    ({"model": "tianji"}, 400, "messages is required"),
    ({"model": "tianji", "messages": []}, 400, "non-empty list"),
    ({"model": "tianji", "messages": ["hi"]}, 400, "messages[0] must be an object"),
    ({"model": "tianji", "messages": [{"role": "bot", "content": "x"}]}, 400, "role must be"),
    ({"model": "tianji", "messages": [{"role": "user", "content": None}]}, 400, "must be a string"),
    ({"model": "tianji", "messages": USER, "temperature": "hot"}, 400, "temperature must be a number"),
    ({"model": "tianji", "messages": USER, "temperature": 3}, 400, "between 0 and 2"),
    ({"model": "tianji", "messages": USER, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "tianji", "messages": USER, "n": 2}, 400, "n must be"),
    ({"model": "tianji", "messages": USER, "stream": "yes"}, 400, "stream must be"),
    ({"model": "tianji", "messages": USER, "stop": 5}, 400, "stop must be"),
])
def test_openai_bad_bodies(body, status, words):
    got, message = _status(openai_request, body, DEFAULTS, SERVED)
    assert got == status and words in message


def test_ollama_defaults_to_streaming_and_reads_options():
    model, _, params, stream = ollama_chat_request(
        {"model": "tianji:latest", "messages": USER, "options": {"num_predict": 5, "repeat_penalty": 1.2,
                                                                 "temperature": 0, "stop": ["\n"]}}, DEFAULTS, SERVED)
    assert (model, stream) == ("tianji:latest", True)
    assert (params.max_new_tokens, params.repetition_penalty, params.temperature, params.stop) == (5, 1.2, 0, ("\n",))
    _, _, params, _ = ollama_chat_request({"model": "tianji", "messages": USER, "options": {"num_predict": -1}},
                                          DEFAULTS, SERVED)
    assert params.max_new_tokens == DEFAULTS.max_new_tokens


def test_ollama_generate_builds_messages_from_prompt_and_system():
    _, messages, _, stream = ollama_generate_request({"model": "tianji", "prompt": "你好", "system": "S",
                                                      "stream": False}, DEFAULTS, SERVED)
    assert messages == [{"role": "system", "content": "S"}, *USER] and stream is False
    assert _status(ollama_generate_request, {"model": "tianji"}, DEFAULTS, SERVED)[0] == 400
    assert _status(ollama_generate_request, {"model": "tianji", "prompt": "x", "raw": True}, DEFAULTS, SERVED)[0] == 400
    assert _status(ollama_chat_request, {"model": "tianji", "messages": USER, "options": []}, DEFAULTS, SERVED)[0] == 400
