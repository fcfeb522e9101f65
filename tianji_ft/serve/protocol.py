"""Request checking and response bodies for the OpenAI and Ollama chat APIs.

Every problem with a request raises :class:`ApiError` with the HTTP status
and a message saying which field is wrong, so clients get a 400/404 they can
act on instead of a 500 or a hung connection.
"""

from __future__ import annotations

import dataclasses
import time
import uuid

from tianji_ft.chat.engine import GenerationParams, Reply
from tianji_ft.core.templates import split_messages


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def _number(body: dict, key: str, kind, low=None, high=None, where: str = ""):
    value = body.get(key)
    if value is None:
        return None
    ok_types = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types):
        raise ApiError(400, f"{where}{key} must be {'an integer' if kind is int else 'a number'}, not {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ApiError(400, f"{where}{key} must be between {low} and {high}, not {value}")
    return kind(value)


def _stop_list(value, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(s for s in value if s)
    raise ApiError(400, f"{where}stop must be a string or a list of strings")


def _content(value, i: int) -> str:
    """Message content: a string, or OpenAI's list of text parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        if any(p.get("type") != "text" or not isinstance(p.get("text"), str) for p in value):
            raise ApiError(400, f"messages[{i}].content: only text parts are supported")
        return "".join(p["text"] for p in value)
    raise ApiError(400, f"messages[{i}].content must be a string")


def check_messages(value) -> list[dict]:
    if value is None:
        raise ApiError(400, "messages is required: a list of {role, content}")
    if not isinstance(value, list) or not value:
        raise ApiError(400, "messages must be a non-empty list of {role, content}")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message:
            raise ApiError(400, f"messages[{i}] must be an object with role and content")
        messages.append({"role": message["role"], "content": _content(message.get("content", ""), i)})
    try:
        split_messages(messages)
    except ValueError as err:
        raise ApiError(400, str(err)) from None
    return messages


def check_model(body: dict, served: set[str]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model is required (GET /v1/models lists it)")
    # Ollama clients add ":latest" to a bare name.
    if model not in served and model.removesuffix(":latest") not in served:
        raise ApiError(404, f"model {model!r} not found; this server serves {', '.join(sorted(served))}",
                       code="model_not_found")
    return model


def _stream_flag(body: dict, default: bool) -> bool:
    value = body.get("stream", default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, "stream must be true or false")
    return value


def openai_request(body: dict, defaults: GenerationParams, served: set[str]):
    """(model, messages, params, stream, include_usage) from a chat completions body."""
    model = check_model(body, served)
    messages = check_messages(body.get("messages"))
    n = _number(body, "n", int, 1, 1)
    del n  # only one choice is generated; anything else was refused above
    max_tokens = _number(body, "max_completion_tokens", int, 1) or _number(body, "max_tokens", int, 1)
    params = dataclasses.replace(
        defaults,
        temperature=_pick(_number(body, "temperature", float, 0, 2), defaults.temperature),
        top_p=_pick(_number(body, "top_p", float, 0, 1), defaults.top_p),
        top_k=_pick(_number(body, "top_k", int, 0), defaults.top_k),
        repetition_penalty=_pick(_number(body, "repetition_penalty", float, 0.01, 10), defaults.repetition_penalty),
        max_new_tokens=_pick(max_tokens, defaults.max_new_tokens),
        seed=_pick(_number(body, "seed", int), defaults.seed),
        stop=defaults.stop + _stop_list(body.get("stop"), ""),
    )
    options = body.get("stream_options")
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object")
    return model, messages, params, _stream_flag(body, False), bool(options.get("include_usage"))


def ollama_params(body: dict, defaults: GenerationParams) -> GenerationParams:
    options = body.get("options")
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise ApiError(400, "options must be an object")
    w = "options."
    num_predict = _number(options, "num_predict", int, where=w)
    return dataclasses.replace(
        defaults,
        temperature=_pick(_number(options, "temperature", float, 0, 2, w), defaults.temperature),
        top_p=_pick(_number(options, "top_p", float, 0, 1, w), defaults.top_p),
        top_k=_pick(_number(options, "top_k", int, 0, where=w), defaults.top_k),
        repetition_penalty=_pick(_number(options, "repeat_penalty", float, 0.01, 10, w), defaults.repetition_penalty),
        # Ollama: num_predict -1 means "no limit"; the server default is the limit then.
        max_new_tokens=num_predict if num_predict and num_predict > 0 else defaults.max_new_tokens,
        seed=_pick(_number(options, "seed", int, where=w), defaults.seed),
        stop=defaults.stop + _stop_list(options.get("stop"), w),
    )


def ollama_chat_request(body: dict, defaults: GenerationParams, served: set[str]):
    model = check_model(body, served)
    return model, check_messages(body.get("messages")), ollama_params(body, defaults), _stream_flag(body, True)


def ollama_generate_request(body: dict, defaults: GenerationParams, served: set[str]):
    model = check_model(body, served)
    prompt, system = body.get("prompt"), body.get("system")
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt is required and must be a string")
    if system is not None and not isinstance(system, str):
        raise ApiError(400, "system must be a string")
    if body.get("raw"):
        raise ApiError(400, "raw prompts are not supported; send the text without a template")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return model, messages, ollama_params(body, defaults), _stream_flag(body, True)


def _pick(value, default):
    return default if value is None else value


# --- responses --------------------------------------------------------------------


def completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def openai_completion(cid: str, model: str, reply: Reply) -> dict:
    return {
        "id": cid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                     "logprobs": None, "finish_reason": reply.finish_reason}],
        "usage": openai_usage(reply),
    }


def openai_usage(reply: Reply) -> dict:
    return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens}


def openai_chunk(cid: str, model: str, delta: dict, finish_reason: str | None = None, usage=None) -> dict:
    chunk = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
    if usage is not None:
        chunk["choices"], chunk["usage"] = [], usage
    return chunk


def ollama_time() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def ollama_final(model: str, reply: Reply, started: float, chat: bool, text: str = "") -> dict:
    """The last (``done``) object of an Ollama answer; ``text`` is its content."""
    elapsed = int((time.monotonic() - started) * 1e9)
    body = {"model": model, "created_at": ollama_time(), "done": True, "done_reason": reply.finish_reason,
            "total_duration": elapsed, "load_duration": 0, "prompt_eval_count": reply.prompt_tokens,
            "eval_count": reply.completion_tokens, "eval_duration": elapsed}
    if chat:
        body["message"] = {"role": "assistant", "content": text}
    else:
        body["response"] = text
    return body


def ollama_piece(model: str, text: str, chat: bool) -> dict:
    body = {"model": model, "created_at": ollama_time(), "done": False}
    if chat:
        body["message"] = {"role": "assistant", "content": text}
    else:
        body["response"] = text
    return body
