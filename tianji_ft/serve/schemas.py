"""The request and response bodies of both APIs as pydantic models.

Request models are what ``/openapi.json`` publishes and what every body is
validated against (strictly: ``"0.5"`` is not a number, ``true`` is not an
integer), so the published schema and the server's checks cannot drift apart.
Unknown fields are allowed and ignored, as OpenAI and Ollama clients send
many. What a schema cannot say (the order of roles, that ``messages`` is not
empty, the model's context) is checked in :mod:`tianji_ft.serve.protocol`.

Response models document the answers; the handlers build plain dicts of the
same shape (the schemathesis test checks every answer against them).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import core_schema

# torch.manual_seed takes any integer in this range.
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


def _integral(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class JsonInt:
    """An integer as JSON Schema means it: 459.0 is one; 459.5, "459" and true are not.

    (A pydantic ``BeforeValidator`` would do the same but publish its bounds as
    ``ge``/``le``, which JSON Schema does not know, instead of ``minimum``/``maximum``.)
    """

    def __init__(self, ge: int | None = None, le: int | None = None):
        self.ge, self.le = ge, le

    def __get_pydantic_core_schema__(self, source, handler):
        return core_schema.no_info_before_validator_function(
            _integral, core_schema.int_schema(ge=self.ge, le=self.le, strict=True))


Temperature = Annotated[float, Field(ge=0, le=2, description="0 is greedy")]
TopP = Annotated[float, Field(ge=0, le=1)]
TopK = Annotated[int, JsonInt(ge=0)]
Penalty = Annotated[float, Field(ge=0.01, le=10, description="1.0 is none")]
Seed = Annotated[int, JsonInt(ge=SEED_MIN, le=SEED_MAX)]
Stop = str | list[str]

# What each field must be, for error messages ("temperature must be a number between 0 and 2").
FIELD_KINDS = {
    "model": "a non-empty string (GET /v1/models lists the names)",
    "messages": "a list of {role, content} objects",
    "role": "a string: system, user or assistant",
    "content": "a string or a list of text parts ({type: text, text})",
    "type": '"text" (only text parts are supported)',
    "text": "a string",
    "temperature": "a number between 0 and 2",
    "top_p": "a number between 0 and 1",
    "top_k": "an integer >= 0",
    "repetition_penalty": "a number between 0.01 and 10",
    "repeat_penalty": "a number between 0.01 and 10",
    "max_tokens": "an integer >= 1",
    "max_completion_tokens": "an integer >= 1",
    "n": "1 (one answer per request)",
    "seed": f"an integer between {SEED_MIN} and {SEED_MAX}",
    "stop": "a string or a list of strings",
    "stream": "true or false",
    "stream_options": "an object",
    "include_usage": "true or false",
    "options": "an object",
    "num_predict": "an integer (<= 0: as many as the context allows, up to the server's default)",
    "prompt": "a string",
    "system": "a string",
    "raw": "true or false",
}


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


# --- requests ---------------------------------------------------------------------


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: str = Field(description="system (first only), then user and assistant turns, ending on user")
    content: str | list[TextPart] = Field("", description="the text, or OpenAI's list of text parts")


class StreamOptions(_Strict):
    include_usage: bool | None = Field(None, description="a last chunk with the token counts")


class ChatCompletionRequest(_Strict):
    """OpenAI's chat completions request (the fields this server reads; others are ignored)."""

    model: str = Field(min_length=1, description="a name from GET /v1/models", examples=["tianji"])
    messages: list[ChatMessage] = Field(description="non-empty; the last message is the user's")
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    repetition_penalty: Penalty | None = None
    max_tokens: Annotated[int, JsonInt(ge=1)] | None = Field(
        None, description="default and cap: what the model's context leaves after the prompt; more is a 400")
    max_completion_tokens: Annotated[int, JsonInt(ge=1)] | None = Field(None, description="same as max_tokens")
    n: Annotated[int, JsonInt(ge=1, le=1)] | None = Field(None, description="only one answer per request")
    seed: Seed | None = None
    stop: Stop | None = Field(None, description="extra stop strings on top of the template's")
    stream: bool | None = Field(None, description="server-sent events (text/event-stream)")
    stream_options: StreamOptions | None = None


class OllamaOptions(_Strict):
    num_predict: Annotated[int, JsonInt()] | None = Field(
        None, description="capped at what the model's context leaves; <= 0: the server default")
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    repeat_penalty: Penalty | None = None
    seed: Seed | None = None
    stop: Stop | None = None


class OllamaChatRequest(_Strict):
    """Ollama's /api/chat request."""

    model: str = Field(min_length=1, description="a name from GET /api/tags (':latest' is accepted)",
                       examples=["tianji"])
    messages: list[ChatMessage] = Field(description="non-empty; the last message is the user's")
    stream: bool | None = Field(None, description="NDJSON, one object a line (the default)")
    options: OllamaOptions | None = None


class OllamaGenerateRequest(_Strict):
    """Ollama's /api/generate request."""

    model: str = Field(min_length=1, examples=["tianji"])
    prompt: str
    system: str | None = None
    raw: bool | None = Field(None, description="not supported: true is a 400")
    stream: bool | None = Field(None, description="NDJSON, one object a line (the default)")
    options: OllamaOptions | None = None


REQUEST_MODELS = (ChatCompletionRequest, OllamaChatRequest, OllamaGenerateRequest)


# --- responses --------------------------------------------------------------------


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIError(BaseModel):
    """OpenAI's error body."""

    error: ErrorDetail


class OllamaError(BaseModel):
    """Ollama's error body."""

    error: str


class Health(BaseModel):
    status: Literal["ok"]
    models: list[str]


class Root(BaseModel):
    status: str


class Version(BaseModel):
    version: str


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None
    finish_reason: Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: None
    finish_reason: Literal["stop", "length"] | None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed answer; the last holds only ``usage`` when ``include_usage`` is set."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class OllamaModelDetails(BaseModel):
    format: str
    family: str
    parameter_size: str
    quantization_level: str


class OllamaModel(BaseModel):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: OllamaModelDetails


class OllamaTags(BaseModel):
    models: list[OllamaModel]


class _OllamaFinal(BaseModel):
    """An answer; streamed, every line is one of these, ``done`` false until the last."""

    model: str
    created_at: str
    done: bool
    done_reason: Literal["stop", "length"] | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class OllamaChatResponse(_OllamaFinal):
    message: AssistantMessage


class OllamaGenerateResponse(_OllamaFinal):
    response: str
