"""Request checking and response bodies for the OpenAI and Ollama chat APIs.

A body goes through three steps, each with its own status:

1. :func:`parse_body`: bytes to a JSON object, else 400 (malformed JSON, not
   an object, a lone surrogate);
2. :func:`validate`: the object against its pydantic model
   (:mod:`tianji_ft.serve.schemas`), else 422 naming the field;
3. :func:`openai_job` / :func:`ollama_job` then :func:`fit_to_context`: what
   no schema says, else 400 (empty ``messages``, roles out of order, a
   prompt plus ``max_tokens`` over the model's context) or 404 (unknown model).

Every problem raises :class:`ApiError`; the app turns it into each API's error shape.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid

from pydantic import BaseModel, ValidationError

from tianji_ft.chat.engine import GenerationParams, Reply
from tianji_ft.core.templates import split_messages
from tianji_ft.serve.schemas import (FIELD_KINDS, ChatCompletionRequest, ChatMessage, OllamaChatRequest,
                                     OllamaGenerateRequest, OllamaOptions)


class ApiError(Exception):
    """An answer other than 200: ``status``, a message for the client, OpenAI's ``code`` and ``param``."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}


@dataclasses.dataclass
class Job:
    """One chat request, checked: what to generate and how to answer."""

    api: str  # "openai" | "ollama"
    model: str
    messages: list[dict]
    params: GenerationParams
    stream: bool
    include_usage: bool = False
    chat: bool = True  # Ollama: /api/chat (message) or /api/generate (response)
    max_tokens: int | None = None  # OpenAI's explicit max_tokens: over the context is a 400
    num_predict: int | None = None  # Ollama's: capped at the context
    prompt_tokens: int = 0


# --- 1. bytes to an object ------------------------------------------------------------


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


def parse_body(raw: bytes) -> dict:
    if not raw.strip():
        raise ApiError(400, "the request body is empty; send a JSON object", code="invalid_json")
    try:
        body = json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError as err:
        raise ApiError(400, f"malformed JSON body: not UTF-8 ({err.reason} at byte {err.start})",
                       code="invalid_json") from None
    except (ValueError, RecursionError) as err:  # JSONDecodeError, NaN, a 5000-digit number, nesting
        raise ApiError(400, f"malformed JSON body: {str(err)[:200]}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the JSON body must be an object", code="invalid_json")
    where = _lone_surrogate(body)
    if where is not None:
        raise ApiError(400, f"{where or 'the body'} holds a lone surrogate escape (\\ud800-\\udfff), which is not "
                       "Unicode text", code="invalid_json", param=where or None)
    return body


def _lone_surrogate(value, where: str = "") -> str | None:
    """The path of the first string with an unpaired surrogate (JSON allows the escape; UTF-8 does not)."""
    stack = [(value, where)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return where
        elif isinstance(value, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k)) for k, v in value.items())
            if any(_lone_surrogate(k) is not None for k in value):
                return where
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(value))
    return None


# --- 2. the object against its model --------------------------------------------------


def validate(model: type[BaseModel], body: dict):
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise _validation_error(err) from None
    except RecursionError:
        raise ApiError(400, "the JSON body is nested too deeply", code="invalid_json") from None


def _path(loc) -> str:
    """``messages[0].content`` from pydantic's location, leaving out union branch tags (``str``, ``list[str]``)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in FIELD_KINDS:
            out += f".{part}" if out else part
    return out


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _validation_error(err: ValidationError) -> ApiError:
    first = err.errors(include_url=False)[0]
    path = _path(first["loc"]) or "the body"
    name = next((p for p in reversed(first["loc"]) if isinstance(p, str) and p in FIELD_KINDS), None)
    if first["type"] == "missing":
        message, code = f"{path} is required", "missing_field"
    elif name is not None:
        message, code = f"{path} must be {FIELD_KINDS[name]}, not {_short(first.get('input'))}", "invalid_value"
    else:
        message, code = f"{path}: {first['msg']}", "invalid_value"
    return ApiError(422, message, code=code, param=path)


# --- 3. what a schema cannot say -------------------------------------------------------


def check_model(model: str, served: set[str]) -> str:
    # Ollama clients add ":latest" to a bare name.
    if model not in served and model.removesuffix(":latest") not in served:
        raise ApiError(404, f"model {_short(model)} not found; this server serves {', '.join(sorted(served))}",
                       code="model_not_found", param="model")
    return model


def check_messages(messages: list[ChatMessage]) -> list[dict]:
    if not messages:
        raise ApiError(400, "messages must be a non-empty list of {role, content}", param="messages")
    plain = [{"role": m.role,
              "content": m.content if isinstance(m.content, str) else "".join(part.text for part in m.content)}
             for m in messages]
    try:
        split_messages(plain)
    except ValueError as err:
        raise ApiError(400, str(err), param="messages") from None
    return plain


def _stop_list(value) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(s for s in value if s)


def _pick(value, default):
    return default if value is None else value


def openai_job(request: ChatCompletionRequest, defaults: GenerationParams, served: set[str]) -> Job:
    model = check_model(request.model, served)
    messages = check_messages(request.messages)
    params = dataclasses.replace(
        defaults,
        temperature=_pick(request.temperature, defaults.temperature),
        top_p=_pick(request.top_p, defaults.top_p),
        top_k=_pick(request.top_k, defaults.top_k),
        repetition_penalty=_pick(request.repetition_penalty, defaults.repetition_penalty),
        seed=_pick(request.seed, defaults.seed),
        stop=defaults.stop + _stop_list(request.stop),
    )
    include_usage = bool(request.stream_options and request.stream_options.include_usage)
    max_tokens = _pick(request.max_completion_tokens, request.max_tokens)
    return Job("openai", model, messages, params, stream=bool(request.stream), include_usage=include_usage,
               max_tokens=max_tokens)


def _ollama_params(options: OllamaOptions | None, defaults: GenerationParams) -> GenerationParams:
    options = options or OllamaOptions()
    return dataclasses.replace(
        defaults,
        temperature=_pick(options.temperature, defaults.temperature),
        top_p=_pick(options.top_p, defaults.top_p),
        top_k=_pick(options.top_k, defaults.top_k),
        repetition_penalty=_pick(options.repeat_penalty, defaults.repetition_penalty),
        seed=_pick(options.seed, defaults.seed),
        stop=defaults.stop + _stop_list(options.stop),
    )


def ollama_job(request: OllamaChatRequest | OllamaGenerateRequest, defaults: GenerationParams,
               served: set[str]) -> Job:
    model = check_model(request.model, served)
    if isinstance(request, OllamaChatRequest):
        messages, chat = check_messages(request.messages), True
    else:
        if request.raw:
            raise ApiError(400, "raw prompts are not supported; send the text without a template", param="raw")
        system = [ChatMessage(role="system", content=request.system)] if request.system else []
        messages, chat = check_messages(system + [ChatMessage(role="user", content=request.prompt)]), False
    num_predict = request.options.num_predict if request.options else None
    # Ollama streams unless told not to.
    return Job("ollama", model, messages, _ollama_params(request.options, defaults),
               stream=_pick(request.stream, True), chat=chat, num_predict=num_predict)


def fit_to_context(job: Job, prompt_tokens: int, context: int | None) -> None:
    """Set how many tokens to generate, within the model's context; 400 when the request cannot fit.

    OpenAI's ``max_tokens`` is checked (a prompt plus ``max_tokens`` over the
    context is a 400 naming both numbers, as OpenAI and vLLM answer); the
    default, and Ollama's ``num_predict``, are capped at what the context leaves.
    """
    job.prompt_tokens = prompt_tokens
    default = job.params.max_new_tokens
    if context is not None and prompt_tokens >= context:
        raise ApiError(400, f"the prompt is {prompt_tokens} tokens and this model's context is {context} tokens, "
                       "which leaves no room for an answer; shorten the messages", code="context_length_exceeded",
                       param="messages")
    left = None if context is None else context - prompt_tokens
    if job.max_tokens is not None:
        if left is not None and job.max_tokens > left:
            raise ApiError(400, f"the prompt is {prompt_tokens} tokens and max_tokens is {job.max_tokens}: "
                           f"{prompt_tokens + job.max_tokens} in all, over this model's context of {context} tokens; "
                           f"ask for at most {left}", code="context_length_exceeded", param="max_tokens")
        wanted = job.max_tokens
    elif job.num_predict is not None and job.num_predict > 0:
        wanted = job.num_predict
    else:
        wanted = default
    job.params = dataclasses.replace(job.params, max_new_tokens=wanted if left is None else min(wanted, left))


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


OPENAI_TYPES = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error",
                500: "server_error", 503: "overloaded_error"}


def openai_error(err: ApiError) -> dict:
    kind = OPENAI_TYPES.get(err.status, "invalid_request_error")
    return {"error": {"message": err.message, "type": kind, "param": err.param, "code": err.code}}


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
