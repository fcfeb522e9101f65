"""Request checking for the OpenAI and Ollama bodies (no model, no HTTP)."""

from __future__ import annotations

import pytest

from tianji_ft.chat.engine import GenerationParams
from tianji_ft.serve import schemas as s
from tianji_ft.serve.protocol import ApiError, fit_to_context, ollama_job, openai_job, parse_body, validate

DEFAULTS = GenerationParams(temperature=0.1, max_new_tokens=64, seed=0)
SERVED = {"tianji", "merged"}
USER = [{"role": "user", "content": "你好"}]


def _openai(body):
    return openai_job(validate(s.ChatCompletionRequest, body), DEFAULTS, SERVED)


def _ollama_chat(body):
    return ollama_job(validate(s.OllamaChatRequest, body), DEFAULTS, SERVED)


def _ollama_generate(body):
    return ollama_job(validate(s.OllamaGenerateRequest, body), DEFAULTS, SERVED)


def _error(fn, *args) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args)
    return info.value


def test_openai_fields_map_to_generation_params():
    job = _openai({"model": "tianji", "messages": USER, "temperature": 0, "top_p": 0.5, "max_tokens": 7, "seed": 3,
                   "stop": "。", "stream": True, "stream_options": {"include_usage": True}, "user": "ignored"})
    assert (job.model, job.messages, job.stream, job.include_usage, job.max_tokens) == ("tianji", USER, True, True, 7)
    params = job.params
    assert (params.temperature, params.top_p, params.seed, params.stop) == (0, 0.5, 3, ("。",))
    job = _openai({"model": "merged", "messages": USER})
    assert job.params == DEFAULTS and job.stream is False and job.max_tokens is None


def test_openai_text_parts_are_joined():
    job = _openai({"model": "tianji", "messages": [{"role": "user", "content": [{"type": "text", "text": "你"},
                                                                                 {"type": "text", "text": "好"}]}]})
    assert job.messages == USER


@pytest.mark.parametrize("body, words", [
    (b"", "empty"),
    (b'{"model": "tianji", "messages": [', "malformed JSON"),
    (b"[1, 2]", "must be an object"),
    (b'{"temperature": NaN}', "malformed JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"n": ' + b"9" * 5000 + b"}", "malformed JSON"),  # past Python's int digits limit
    (b"[" * 100_000 + b"]" * 100_000, "malformed JSON"),
    (b'{"model": "tianji", "messages": [{"role": "user", "content": "\\ud800"}]}', "lone surrogate"),
])
def test_bodies_that_are_not_json_objects_are_400(body, words):
    err = _error(parse_body, body)
    assert err.status == 400 and words in err.message


@pytest.mark.parametrize("body, param, words", [
    ({"messages": USER}, "model", "model is required"),
    ({"model": ""}, "model", "model must be a non-empty string"),
    ({"model": "tianji"}, "messages", "messages is required"),
    ({"model": "tianji", "messages": ["hi"]}, "messages[0]", "must be"),
    ({"model": "tianji", "messages": [{"content": "x"}]}, "messages[0].role", "messages[0].role is required"),
    ({"model": "tianji", "messages": [{"role": "user", "content": None}]}, "messages[0].content", "a string or a list"),
    ({"model": "tianji", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages[0].content", "text parts"),
    ({"model": "tianji", "messages": USER, "temperature": "hot"}, "temperature", "a number between 0 and 2, not 'hot'"),
    ({"model": "tianji", "messages": USER, "temperature": True}, "temperature", "a number between 0 and 2"),
    ({"model": "tianji", "messages": USER, "temperature": 3}, "temperature", "between 0 and 2, not 3"),
    ({"model": "tianji", "messages": USER, "max_tokens": 0}, "max_tokens", "an integer >= 1, not 0"),
    ({"model": "tianji", "messages": USER, "max_tokens": 1.5}, "max_tokens", "an integer"),
    ({"model": "tianji", "messages": USER, "n": 2}, "n", "n must be 1"),
    ({"model": "tianji", "messages": USER, "seed": 2**70}, "seed", "seed must be an integer between"),
    ({"model": "tianji", "messages": USER, "stream": "yes"}, "stream", "stream must be true or false"),
    ({"model": "tianji", "messages": USER, "stop": 5}, "stop", "stop must be a string or a list of strings"),
    ({"model": "tianji", "messages": USER, "stream_options": []}, "stream_options", "must be an object"),
])
def test_openai_bodies_off_the_schema_are_422_naming_the_field(body, param, words):
    err = _error(_openai, body)
    assert (err.status, err.param) == (422, param) and words in err.message, err.message


@pytest.mark.parametrize("body, status, words", [
    ({"model": "gpt-4", "messages": USER}, 404, "not found"),
    ({"model": "tianji", "messages": []}, 400, "non-empty list"),
    ({"model": "tianji", "messages": [{"role": "bot", "content": "x"}]}, 400, "role must be"),
    ({"model": "tianji", "messages": [{"role": "system", "content": "S"}]}, 400, "must end with a user message"),
])
def test_openai_requests_the_schema_cannot_refuse(body, status, words):
    err = _error(_openai, body)
    assert err.status == status and words in err.message


def test_ollama_defaults_to_streaming_and_reads_options():
    job = _ollama_chat({"model": "tianji:latest", "messages": USER,
                        "options": {"num_predict": 5, "repeat_penalty": 1.2, "temperature": 0, "stop": ["\n"]}})
    assert (job.model, job.stream, job.num_predict) == ("tianji:latest", True, 5)
    assert (job.params.repetition_penalty, job.params.temperature, job.params.stop) == (1.2, 0, ("\n",))
    assert _error(_ollama_chat, {"model": "tianji", "messages": USER, "options": []}).status == 422


def test_ollama_generate_builds_messages_from_prompt_and_system():
    job = _ollama_generate({"model": "tianji", "prompt": "你好", "system": "S", "stream": False})
    assert job.messages == [{"role": "system", "content": "S"}, *USER] and job.stream is False and not job.chat
    assert _error(_ollama_generate, {"model": "tianji"}).message == "prompt is required"
    assert _error(_ollama_generate, {"model": "tianji", "prompt": "x", "raw": True}).status == 400


@pytest.mark.parametrize("max_tokens, num_predict, prompt, context, expected", [
    (None, None, 10, 1000, 64),   # the server default
    (None, None, 990, 1000, 10),  # the default, capped at what the context leaves
    (500, None, 10, 1000, 500),   # asked for, and fits
    (990, None, 10, 1000, 990),   # exactly fills the context
    (None, 5000, 10, 1000, 990),  # Ollama's num_predict is capped, not refused
    (None, -1, 10, 1000, 64),     # <= 0: the server default
    (None, None, 10, None, 64),   # a model without a known context: no cap
])
def test_max_tokens_defaults_to_and_is_capped_at_what_the_context_leaves(max_tokens, num_predict, prompt, context,
                                                                         expected):
    job = _openai({"model": "tianji", "messages": USER, **({"max_tokens": max_tokens} if max_tokens else {})})
    job.num_predict = num_predict
    fit_to_context(job, prompt, context)
    assert job.params.max_new_tokens == expected and job.prompt_tokens == prompt


def test_a_prompt_that_leaves_no_room_or_max_tokens_over_the_context_is_400_naming_both_numbers():
    job = _openai({"model": "tianji", "messages": USER, "max_tokens": 991})
    err = _error(fit_to_context, job, 10, 1000)
    assert err.status == 400 and err.code == "context_length_exceeded"
    assert all(str(n) in err.message for n in (10, 991, 1000, 990))
    err = _error(fit_to_context, _openai({"model": "tianji", "messages": USER}), 1000, 1000)
    assert err.status == 400 and "1000 tokens" in err.message and "no room" in err.message


def test_integers_are_json_schema_integers():
    # JSON Schema (and so /openapi.json and schemathesis) counts 7.0 as an integer; 7.5, "7" and true are not
    assert _openai({"model": "tianji", "messages": USER, "max_tokens": 7.0, "seed": 3.0}).max_tokens == 7
    for bad in (7.5, "7", True):
        assert _error(_openai, {"model": "tianji", "messages": USER, "max_tokens": bad}).status == 422


def test_the_published_schemas_use_only_json_schema_bounds():
    import json

    for model in s.REQUEST_MODELS:
        text = json.dumps(model.model_json_schema())
        assert '"minimum"' in text and '"ge"' not in text and '"le"' not in text
