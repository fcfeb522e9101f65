"""The server's request checks, without a model: the real app over a fake engine, in process.

HTTP tests go through Starlette's TestClient to ``create_app`` (the routes,
the body limit, the error shapes); the schema tests validate bodies at each
bound and one step past it, as the published schema states them.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from tianji_ft.chat.engine import GenerationParams, Reply
from tianji_ft.serve import protocol as p
from tianji_ft.serve import schemas as s
from tianji_ft.serve.app import Settings, create_app

MODEL = "tianji"
USER = [{"role": "user", "content": "祝妈妈生日快乐"}]
ROUTES = ("/v1/chat/completions", "/api/chat")


@pytest.fixture
def client(make_engine):
    from fastapi.testclient import TestClient

    def make(**settings):
        app = create_app(make_engine(), Settings(names=(MODEL,), access_log=False, **settings))
        return TestClient(app, raise_server_exceptions=False)

    return make


def error_message(response) -> str:
    body = response.json()
    return body["error"]["message"] if isinstance(body["error"], dict) else body["error"]


# --- over HTTP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES)
def test_empty_messages_are_400_on_both_chat_routes(client, route):
    with client() as http:
        response = http.post(route, json={"model": MODEL, "messages": []})
        assert response.status_code == 400
        assert "messages must be a non-empty list" in error_message(response)
        ok = http.post(route, json={"model": MODEL, "messages": USER, "stream": False})
        assert ok.status_code == 200 and "祝妈妈生日快乐" in ok.text


@pytest.mark.parametrize("route", ROUTES)
def test_a_body_one_byte_over_the_limit_is_413_and_one_at_the_limit_is_answered(client, route):
    limit = 2048
    body = json.dumps({"model": MODEL, "messages": USER, "stream": False, "pad": ""}).encode()
    at_limit = body[:-2] + b" " * (limit - len(body)) + body[-2:]
    assert len(at_limit) == limit
    over = at_limit[:-2] + b" " + at_limit[-2:]
    with client(max_body=limit) as http:
        assert http.post(route, content=at_limit).status_code == 200
        response = http.post(route, content=over)
        assert response.status_code == 413
        assert f"the request body is {limit + 1} bytes; the limit is {limit}" in error_message(response)


def test_the_openai_error_shape_names_the_field(client):
    with client() as http:
        response = http.post("/v1/chat/completions", json={"model": MODEL, "messages": USER, "temperature": 3})
    assert response.status_code == 422
    assert response.json() == {"error": {"message": "temperature must be a number between 0 and 2, not 3",
                                          "type": "invalid_request_error", "param": "temperature",
                                          "code": "invalid_value"}}


def test_an_unknown_model_is_404_with_the_names_served(client):
    with client() as http:
        response = http.post("/api/chat", json={"model": "gpt-4o", "messages": USER})
    assert response.status_code == 404
    assert error_message(response) == "model 'gpt-4o' not found; this server serves fake, tianji"


# --- the schema at its bounds ---------------------------------------------------------------------


def openai(**fields):
    return s.ChatCompletionRequest.model_validate({"model": MODEL, "messages": USER, **fields})


def ollama_options(**fields):
    return s.OllamaOptions.model_validate(fields)


@pytest.mark.parametrize("field, inside, outside", [
    ("temperature", [0, 0.0, 2, 1.5], [-0.001, 2.001, "0.5", True]),
    ("top_p", [0, 1, 0.9], [-0.01, 1.01]),
    ("top_k", [0, 50, 7.0], [-1, 7.5, "7", True]),
    ("repetition_penalty", [0.01, 10, 1.0], [0.0099, 10.01, 0]),
    ("max_tokens", [1, 4096], [0, -1, 1.5]),
    ("max_completion_tokens", [1], [0]),
    ("n", [1, 1.0], [0, 2]),
    ("seed", [s.SEED_MIN, s.SEED_MAX, 0], [s.SEED_MIN - 1, s.SEED_MAX + 1, "3"]),
    ("stop", ["。", ["。", "！"], None], [3, [3], {"a": 1}]),
    ("stream", [True, False], ["true", 1]),
    ("stream_options", [{"include_usage": True}, {}], [{"include_usage": "yes"}, []]),
])
def test_openai_fields_are_accepted_at_their_bounds_and_refused_one_step_past(field, inside, outside):
    for value in inside:
        got = getattr(openai(**{field: value}), field)
        assert (got.model_dump(exclude_none=True) if hasattr(got, "model_dump") else got) == value
    for value in outside:
        with pytest.raises(ValidationError):
            openai(**{field: value})


@pytest.mark.parametrize("field, inside, outside", [
    ("temperature", [0, 2], [2.01, -0.01]),
    ("top_p", [0, 1], [1.01]),
    ("top_k", [0], [-1]),
    ("repeat_penalty", [0.01, 10], [0.009, 10.5]),
    ("num_predict", [-1, 0, 128], [1.5, "128"]),
    ("seed", [s.SEED_MAX], [s.SEED_MAX + 1]),
    ("stop", ["\n", ["\n"]], [1]),
])
def test_ollama_options_at_their_bounds(field, inside, outside):
    for value in inside:
        assert getattr(ollama_options(**{field: value}), field) == value
    for value in outside:
        with pytest.raises(ValidationError):
            ollama_options(**{field: value})


def test_model_and_messages_are_required_and_typed():
    for body in ({"messages": USER}, {"model": "", "messages": USER}, {"model": MODEL},
                 {"model": MODEL, "messages": "祝福"}, {"model": 3, "messages": USER},
                 {"model": MODEL, "messages": [{"role": "user", "content": 3}]},
                 {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image", "text": "x"}]}]},
                 {"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}):
        with pytest.raises(ValidationError):
            s.ChatCompletionRequest.model_validate(body)
    message = s.ChatMessage.model_validate({"role": "user"})
    assert message.content == ""  # a message without content is an empty one
    assert s.ChatCompletionRequest.model_validate({"model": MODEL, "messages": USER, "user": "x"}).model_extra == \
        {"user": "x"}


def test_ollama_generate_and_chat_requests():
    generate = s.OllamaGenerateRequest.model_validate({"model": MODEL, "prompt": "祝福", "system": "你好",
                                                       "raw": False, "stream": False})
    assert (generate.prompt, generate.system, generate.raw, generate.stream) == ("祝福", "你好", False, False)
    for body in ({"model": MODEL}, {"model": "", "prompt": "x"}, {"model": MODEL, "prompt": 1},
                 {"model": MODEL, "prompt": "x", "raw": "no"}):
        with pytest.raises(ValidationError):
            s.OllamaGenerateRequest.model_validate(body)
    for body in ({"model": MODEL}, {"model": "", "messages": USER}, {"model": MODEL, "messages": USER,
                                                                     "options": {"top_k": -1}}):
        with pytest.raises(ValidationError):
            s.OllamaChatRequest.model_validate(body)


def test_the_published_bounds_are_the_checked_ones():
    props = s.ChatCompletionRequest.model_json_schema()["properties"]

    def bounds(name):
        branch = next(b for b in props[name]["anyOf"] if b.get("type") in ("number", "integer"))
        return branch.get("minimum"), branch.get("maximum")

    assert bounds("temperature") == (0, 2) and bounds("top_p") == (0, 1)
    assert bounds("repetition_penalty") == (0.01, 10) and bounds("top_k") == (0, None)
    assert bounds("max_tokens") == (1, None) and bounds("n") == (1, 1)
    assert bounds("seed") == (-(2**63), 2**64 - 1)


def test_every_field_kind_is_a_phrase_for_an_error_message():
    for name in ("temperature", "top_p", "top_k", "seed", "max_tokens", "n", "stop", "messages", "model"):
        assert s.FIELD_KINDS[name]
    assert s.FIELD_KINDS["temperature"] == "a number between 0 and 2"
    assert s.FIELD_KINDS["seed"] == f"an integer between {-(2**63)} and {2**64 - 1}"


# --- protocol: what a schema cannot say -------------------------------------------------------------


DEFAULTS = GenerationParams()


def job_of(body: dict, api: str = "openai"):
    if api == "openai":
        return p.openai_job(p.validate(s.ChatCompletionRequest, body), DEFAULTS, {MODEL})
    return p.ollama_job(p.validate(s.OllamaChatRequest, body), DEFAULTS, {MODEL})


def api_error(fn, *args) -> p.ApiError:
    with pytest.raises(p.ApiError) as info:
        fn(*args)
    return info.value


def test_validation_errors_name_the_path_the_rule_and_the_value():
    err = api_error(p.validate, s.ChatCompletionRequest, {"model": MODEL, "messages": [{"role": 1}]})
    assert (err.status, err.code, err.param) == (422, "invalid_value", "messages[0].role")
    assert err.message == "messages[0].role must be a string: system, user or assistant, not 1"
    err = api_error(p.validate, s.ChatCompletionRequest, {"model": MODEL})
    assert (err.status, err.code, err.param, err.message) == (422, "missing_field", "messages",
                                                              "messages is required")
    err = api_error(p.validate, s.ChatCompletionRequest, {"model": MODEL, "messages": USER, "stop": "x" * 100 and 5})
    assert err.message == "stop must be a string or a list of strings, not 5"
    long = "长" * 80
    err = api_error(p.validate, s.ChatCompletionRequest, {"model": MODEL, "messages": USER, "seed": long})
    assert err.message.endswith("not '" + "长" * 56 + "...") and len(err.message.split("not ")[1]) == 60


def test_the_path_leaves_out_union_branches():
    assert p._path(("messages", 0, "content", "list[TextPart]", 1, "text")) == "messages[0].content[1].text"
    assert p._path(("stop", "list[str]", 2)) == "stop[2]"
    assert p._path(("unknown",)) == ""


def test_roles_out_of_order_are_400_naming_the_message():
    err = api_error(job_of, {"model": MODEL, "messages": [{"role": "user", "content": "a"},
                                                          {"role": "user", "content": "b"}]})
    assert (err.status, err.param, err.message) == (400, "messages", "messages[1]: two user messages in a row")
    err = api_error(job_of, {"model": MODEL, "messages": []}, "ollama")
    assert err.status == 400 and err.message == "messages must be a non-empty list of {role, content}"


def test_a_model_name_with_latest_is_the_bare_name():
    assert job_of({"model": f"{MODEL}:latest", "messages": USER}, "ollama").model == f"{MODEL}:latest"
    err = api_error(job_of, {"model": "other:latest", "messages": USER}, "ollama")
    assert (err.status, err.code, err.param) == (404, "model_not_found", "model")
    # a long name is cut to 60 characters of its repr
    assert "model '" + "x" * 56 + "... not found" in api_error(job_of, {"model": "x" * 100, "messages": USER}).message


def test_stop_strings_add_to_the_defaults_and_empty_ones_are_dropped():
    defaults = GenerationParams(stop=("<|im_end|>",))
    job = p.openai_job(p.validate(s.ChatCompletionRequest, {"model": MODEL, "messages": USER,
                                                            "stop": ["。", "", "！"]}), defaults, {MODEL})
    assert job.params.stop == ("<|im_end|>", "。", "！")
    job = p.ollama_job(p.validate(s.OllamaChatRequest, {"model": MODEL, "messages": USER,
                                                        "options": {"stop": "\n", "repeat_penalty": 1.3,
                                                                    "top_k": 5, "top_p": 0.8, "temperature": 0.1,
                                                                    "seed": 9}}), defaults, {MODEL})
    params = job.params
    assert (params.stop, params.repetition_penalty, params.top_k, params.top_p, params.temperature, params.seed) == \
        (("<|im_end|>", "\n"), 1.3, 5, 0.8, 0.1, 9)
    assert job.stream is True and job.chat is True and job.api == "ollama"


def test_openai_picks_max_completion_tokens_over_max_tokens_and_usage_only_when_asked():
    job = job_of({"model": MODEL, "messages": USER, "max_tokens": 5, "max_completion_tokens": 9,
                  "stream": True, "stream_options": {"include_usage": False}})
    assert (job.max_tokens, job.stream, job.include_usage) == (9, True, False)
    job = job_of({"model": MODEL, "messages": USER, "max_tokens": 5, "repetition_penalty": 1.2, "top_k": 3})
    assert (job.max_tokens, job.params.repetition_penalty, job.params.top_k) == (5, 1.2, 3)


def test_ollama_generate_refuses_raw_and_puts_the_system_first():
    generate = lambda body: p.ollama_job(p.validate(s.OllamaGenerateRequest, body), DEFAULTS, {MODEL})  # noqa: E731
    err = api_error(generate, {"model": MODEL, "prompt": "x", "raw": True})
    assert (err.status, err.param) == (400, "raw") and "raw prompts are not supported" in err.message
    job = generate({"model": MODEL, "prompt": "祝福", "system": "你是祝福大师", "options": {"num_predict": 7}})
    assert job.messages == [{"role": "system", "content": "你是祝福大师"}, {"role": "user", "content": "祝福"}]
    assert (job.chat, job.num_predict, job.stream) == (False, 7, True)
    assert generate({"model": MODEL, "prompt": "祝福", "system": ""}).messages == [{"role": "user", "content": "祝福"}]


@pytest.mark.parametrize("prompt, context, max_tokens, num_predict, wanted", [
    (10, 100, None, None, 90),   # the default (512) capped at what is left
    (10, 1000, None, None, 512),
    (10, 100, 90, None, 90),     # exactly what is left
    (10, 100, None, 95, 90),
    (10, 100, None, 0, 90),      # <= 0: the default
    (10, 100, None, 20, 20),
    (10, None, 2000, None, 2000),
    (99, 100, None, None, 1),
])
def test_fit_to_context(prompt, context, max_tokens, num_predict, wanted):
    job = p.Job("openai", MODEL, USER, GenerationParams(max_new_tokens=512), stream=False, max_tokens=max_tokens,
                num_predict=num_predict)
    p.fit_to_context(job, prompt, context)
    assert (job.params.max_new_tokens, job.prompt_tokens) == (wanted, prompt)


def test_a_prompt_at_the_context_or_max_tokens_one_past_what_is_left_is_400():
    job = p.Job("openai", MODEL, USER, GenerationParams(), stream=False)
    err = api_error(p.fit_to_context, job, 100, 100)
    assert (err.status, err.code, err.param) == (400, "context_length_exceeded", "messages")
    assert "the prompt is 100 tokens and this model's context is 100 tokens" in err.message
    job = p.Job("openai", MODEL, USER, GenerationParams(), stream=False, max_tokens=91)
    err = api_error(p.fit_to_context, job, 10, 100)
    assert (err.status, err.param) == (400, "max_tokens")
    assert "max_tokens is 91: 101 in all, over this model's context of 100 tokens; ask for at most 90" in err.message


@pytest.mark.parametrize("raw, words", [
    (b" \n\t", "the request body is empty"),
    (b'{"a": Infinity}', "Infinity is not a JSON number"),
    (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
    (b'{"a": 1}\xff', "not UTF-8 (invalid start byte at byte 8)"),
    (b'"text"', "must be an object"),
])
def test_parse_body_refusals(raw, words):
    err = api_error(p.parse_body, raw)
    assert (err.status, err.code) == (400, "invalid_json") and words in err.message


def test_a_lone_surrogate_is_found_in_keys_lists_and_nested_objects():
    err = api_error(p.parse_body, b'{"messages": [{"role": "user", "content": "ok"}, {"content": "\\udc00"}]}')
    assert err.param == "messages[1].content" and err.message.startswith("messages[1].content holds a lone")
    err = api_error(p.parse_body, b'{"options": {"\\ud800": 1}}')
    assert err.param == "options"
    err = api_error(p.parse_body, b'{"\\ud800": 1}')
    assert err.param is None and err.message.startswith("the body holds a lone surrogate")
    assert p.parse_body('{"text": "\\ud83d\\ude00 祝福"}'.encode()) == {"text": "😀 祝福"}


# --- response bodies -----------------------------------------------------------------------------


def test_openai_bodies():
    reply = Reply("祝你快乐", "length", 12, 4)
    before = int(time.time())
    body = p.openai_completion("chatcmpl-1", MODEL, reply)
    assert before <= body.pop("created") <= time.time()
    assert body == {"id": "chatcmpl-1", "object": "chat.completion", "model": MODEL,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "祝你快乐"},
                                 "logprobs": None, "finish_reason": "length"}],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16}}
    chunk = p.openai_chunk("c", MODEL, {"content": "祝"})
    assert before <= chunk.pop("created") <= time.time()
    assert chunk == {"id": "c", "object": "chat.completion.chunk", "model": MODEL,
                     "choices": [{"index": 0, "delta": {"content": "祝"}, "logprobs": None, "finish_reason": None}]}
    last = p.openai_chunk("c", MODEL, {}, usage=p.openai_usage(reply))
    assert last["choices"] == [] and last["usage"]["total_tokens"] == 16
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{24}", p.completion_id()) and p.completion_id() != p.completion_id()


@pytest.mark.parametrize("status, kind", [(400, "invalid_request_error"), (401, "authentication_error"),
                                          (404, "not_found_error"), (422, "invalid_request_error"),
                                          (429, "rate_limit_error"), (500, "server_error"),
                                          (503, "overloaded_error")])
def test_openai_error_types(status, kind):
    body = p.openai_error(p.ApiError(status, "出错了", code="c", param="x"))
    assert body == {"error": {"message": "出错了", "type": kind, "param": "x", "code": "c"}}


def test_ollama_bodies():
    reply = Reply("祝你快乐", "stop", 12, 4)
    final = p.ollama_final(MODEL, reply, time.monotonic() - 0.5, chat=True, text="祝你快乐")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", final.pop("created_at"))
    assert 0.4e9 < final.pop("total_duration") == final.pop("eval_duration") < 60e9
    assert final == {"model": MODEL, "done": True, "done_reason": "stop", "load_duration": 0,
                     "prompt_eval_count": 12, "eval_count": 4,
                     "message": {"role": "assistant", "content": "祝你快乐"}}
    generated = p.ollama_final(MODEL, reply, time.monotonic(), chat=False, text="祝")
    assert generated["response"] == "祝" and "message" not in generated
    piece = p.ollama_piece(MODEL, "祝", chat=True)
    assert piece["message"] == {"role": "assistant", "content": "祝"} and piece["done"] is False
    assert p.ollama_piece(MODEL, "祝", chat=False)["response"] == "祝"


# --- exact messages: they are what a client shows its user -------------------------------------------


@pytest.mark.parametrize("raw, message, param", [
    (b"", "the request body is empty; send a JSON object", None),
    (b'{"a": NaN}', "malformed JSON body: NaN is not a JSON number", None),
    (b'{"a": 1}\xff', "malformed JSON body: not UTF-8 (invalid start byte at byte 8)", None),
    (b'{"a": ', "malformed JSON body: Expecting value: line 1 column 7 (char 6)", None),
    (b"[]", "the JSON body must be an object", None),
    (b'{"system": "\\ud800"}', "system holds a lone surrogate escape (\\ud800-\\udfff), which is not Unicode text",
     "system"),
])
def test_parse_body_messages(raw, message, param):
    err = api_error(p.parse_body, raw)
    assert (err.status, err.code, err.message, err.param) == (400, "invalid_json", message, param)
    assert err.headers == {}


def test_an_api_error_keeps_its_headers():
    assert p.ApiError(413, "too large", headers={"Connection": "close"}).headers == {"Connection": "close"}


def test_a_job_answers_a_chat_with_defaults_filled_in_by_the_checks():
    job = p.Job("ollama", MODEL, USER, DEFAULTS, stream=True)
    assert (job.include_usage, job.chat, job.max_tokens, job.num_predict, job.prompt_tokens) == \
        (False, True, None, None, 0)


@pytest.mark.parametrize("length, shown", [(60, None), (61, 60)])
def test_values_in_messages_are_cut_past_60_characters(length, shown):
    value = "x" * (length - 2)  # its repr has two quotes more
    err = api_error(p.validate, s.ChatCompletionRequest, {"model": MODEL, "messages": USER, "seed": value})
    quoted = err.message.split(", not ", 1)[1]
    assert quoted == (repr(value) if shown is None else repr(value)[:57] + "...")


# --- the published schemas ---------------------------------------------------------------------------

PUBLISHED = Path(__file__).parent / "fixtures" / "published_schemas.json"


def test_the_published_schemas_are_the_pinned_ones():
    """What /openapi.json publishes, pinned: clients generate code from it, so a change must be
    deliberate (rewrite the fixture with the models' ``model_json_schema()`` and review the diff)."""
    import inspect

    from pydantic import BaseModel

    pinned = json.loads(PUBLISHED.read_text(encoding="utf-8"))
    models = {name: model for name, model in vars(s).items() if inspect.isclass(model)
              and issubclass(model, BaseModel) and model.__module__ == s.__name__ and name != "_Strict"}
    assert {name: model.model_json_schema() for name, model in models.items()} | {"FIELD_KINDS": s.FIELD_KINDS} \
        == pinned
    assert s.REQUEST_MODELS == (s.ChatCompletionRequest, s.OllamaChatRequest, s.OllamaGenerateRequest)


def test_request_models_ignore_unknown_fields_and_refuse_loose_types():
    for model in s.REQUEST_MODELS:
        assert model.model_config["extra"] == "allow" and model.model_config["strict"] is True
    with pytest.raises(ValidationError):
        s.TextPart.model_validate({"type": "text", "text": 5})
    assert s.TextPart.model_validate({"type": "text", "text": "祝", "x": 1}).text == "祝"


def test_an_error_with_no_field_names_the_body_and_pydantics_words():
    from pydantic import RootModel

    err = api_error(p.validate, RootModel[int], "七")
    assert (err.status, err.code, err.param) == (422, "invalid_value", "the body")
    assert err.message == "the body: Input should be a valid integer, unable to parse string as an integer"


def test_a_body_too_deep_for_the_validator_is_400():
    class Deep:
        @staticmethod
        def model_validate(body):
            raise RecursionError("maximum recursion depth exceeded")

    err = api_error(p.validate, Deep, {})
    assert (err.status, err.code, err.message) == (400, "invalid_json", "the JSON body is nested too deeply")


def test_each_refusal_names_its_parameter_and_says_what_to_do():
    err = api_error(job_of, {"model": MODEL, "messages": []})
    assert (err.param, err.message) == ("messages", "messages must be a non-empty list of {role, content}")
    generate = lambda body: p.ollama_job(p.validate(s.OllamaGenerateRequest, body), DEFAULTS, {MODEL})  # noqa: E731
    err = api_error(generate, {"model": MODEL, "prompt": "x", "raw": True})
    assert err.message == "raw prompts are not supported; send the text without a template"
    job = p.Job("openai", MODEL, USER, GenerationParams(), stream=False)
    err = api_error(p.fit_to_context, job, 120, 100)
    assert err.message == ("the prompt is 120 tokens and this model's context is 100 tokens, which leaves no room "
                           "for an answer; shorten the messages")
    assert job_of({"model": MODEL, "messages": USER}).api == "openai"


def test_num_predict_of_one_is_one_token():
    job = p.Job("ollama", MODEL, USER, GenerationParams(max_new_tokens=512), stream=True, num_predict=1)
    p.fit_to_context(job, 10, 100)
    assert job.params.max_new_tokens == 1
