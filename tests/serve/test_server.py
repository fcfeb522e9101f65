"""The server live on 127.0.0.1 over the taught model: the real openai and ollama clients, raw error requests,
the model's context as the limit, a burst of 20."""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from tianji_ft.serve.server import MAX_BODY

pytestmark = pytest.mark.slow
MODEL = "tianji"


def _raw(base_url, method, path, body=None, headers=None, timeout=60):
    """(status, parsed JSON or text) of one request sent exactly as given."""
    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode("utf-8")
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read().decode("utf-8")
        try:
            return resp.status, json.loads(raw)
        except json.JSONDecodeError:
            return resp.status, raw
    finally:
        conn.close()


def _ask(question):
    return [{"role": "user", "content": question}]


def test_binds_to_loopback(server):
    assert server.server_address[0] == "127.0.0.1"


def test_openai_sdk_plain_and_streaming(base_url, wishes):
    import openai

    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=60)
    question, answer = wishes[0]
    reply = client.chat.completions.create(model=MODEL, messages=_ask(question))
    assert reply.choices[0].message.content == answer
    assert reply.choices[0].finish_reason == "stop" and reply.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(model=MODEL, messages=_ask(question), stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer and len(chunks) > 3
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.total_tokens == reply.usage.total_tokens
    assert {m.id for m in client.models.list()} == {MODEL, "taught-internlm2"}


def test_openai_sdk_sees_404_for_an_unknown_model(base_url):
    import openai

    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.NotFoundError, match="not found"):
        client.chat.completions.create(model="gpt-4o", messages=_ask("你好"))
    with pytest.raises(openai.BadRequestError, match="must end with a user message"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "system", "content": "S"}])


def test_ollama_client_chat_and_generate(base_url, wishes):
    import ollama

    client = ollama.Client(host=base_url, timeout=60)
    question, answer = wishes[1]
    reply = client.chat(model=MODEL, messages=_ask(question))
    assert reply.message.content == answer and reply.done_reason == "stop"
    parts = list(client.chat(model=MODEL + ":latest", messages=_ask(question), stream=True))
    assert "".join(p.message.content for p in parts) == answer and parts[-1].done
    assert client.generate(model=MODEL, prompt=question).response == answer
    assert "".join(p.response for p in client.generate(model=MODEL, prompt=question, stream=True)) == answer
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="llama3", messages=_ask(question))
    assert info.value.status_code == 404


def test_tutorial_curl_body_works_unchanged(base_url, wishes):
    # The tutorial's request: Ollama's /api/chat with stream false.
    status, body = _raw(base_url, "POST", "/api/chat", {"model": MODEL, "stream": False, "messages": _ask(wishes[2][0])})
    assert status == 200 and body["message"] == {"role": "assistant", "content": wishes[2][1]} and body["done"]


def test_health_and_listings(base_url):
    assert _raw(base_url, "GET", "/health") == (200, {"status": "ok", "models": ["taught-internlm2", MODEL]})
    status, tags = _raw(base_url, "GET", "/api/tags")
    assert status == 200 and {m["name"] for m in tags["models"]} == {MODEL, "taught-internlm2"}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat", "/api/generate"])
def test_malformed_json_is_400(base_url, path):
    status, body = _raw(base_url, "POST", path, b'{"model": "tianji", "messages": [')
    assert status == 400 and "malformed JSON" in json.dumps(body)


@pytest.mark.parametrize("path, body, status, words", [
    ("/v1/chat/completions", {"model": MODEL}, 422, "messages is required"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, 422, "model is required"),
    ("/api/chat", {"model": MODEL, "messages": [{"content": "x"}]}, 422, "messages[0].role is required"),
    ("/api/generate", {"model": MODEL}, 422, "prompt is required"),
    ("/api/chat", [1, 2], 400, "must be an object"),
    ("/api/chat", {"model": MODEL, "messages": []}, 400, "non-empty list"),
])
def test_missing_fields_get_a_message_naming_them(base_url, path, body, status, words):
    got_status, got = _raw(base_url, "POST", path, body)
    assert got_status == status and words in json.dumps(got, ensure_ascii=False)


def test_error_bodies_follow_each_api(base_url):
    status, body = _raw(base_url, "POST", "/v1/chat/completions", {"model": "nope", "messages": _ask("x")})
    assert status == 404 and body["error"]["code"] == "model_not_found"
    status, body = _raw(base_url, "POST", "/api/chat", {"model": "nope", "messages": _ask("x")})
    assert status == 404 and "not found" in body["error"]


def test_a_body_just_over_the_limit_is_413(base_url):
    big = json.dumps({"model": MODEL, "messages": _ask("x" * MAX_BODY)}).encode("utf-8")
    big = big[: MAX_BODY - 3] + b'"}]}'
    assert len(big) == MAX_BODY + 1
    status, body = _raw(base_url, "POST", "/api/chat", big)
    assert status == 413 and f"{MAX_BODY + 1} bytes" in body["error"]


def test_the_models_context_is_the_limit(base_url, wishes):
    # the taught model has 2048 positions; a 3.8k-token prompt used to run and answer garbage
    started = time.monotonic()
    status, body = _raw(base_url, "POST", "/v1/chat/completions", {"model": MODEL, "messages": _ask("祝福" * 3000)})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    assert "2048 tokens" in body["error"]["message"] and time.monotonic() - started < 10
    status, body = _raw(base_url, "POST", "/v1/chat/completions",
                        {"model": MODEL, "messages": _ask(wishes[0][0]), "max_tokens": 10**9})
    assert status == 400 and "1000000000" in body["error"]["message"] and "2048" in body["error"]["message"]
    status, body = _raw(base_url, "POST", "/api/generate", {"model": MODEL, "prompt": "祝福" * 3000, "stream": False})
    assert status == 400 and "2048 tokens" in body["error"]
    status, body = _raw(base_url, "POST", "/v1/chat/completions",
                        {"model": MODEL, "messages": _ask(wishes[0][0]), "seed": 2**64 - 1})
    assert status == 200 and body["choices"][0]["message"]["content"] == wishes[0][1]


def test_unknown_routes_methods_and_missing_length(base_url):
    assert _raw(base_url, "GET", "/v2/anything")[0] == 404
    assert _raw(base_url, "GET", "/api/chat")[0] == 405
    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.putrequest("POST", "/api/chat")
    conn.endheaders()
    assert conn.getresponse().status == 411
    conn.close()


def test_a_client_that_leaves_mid_stream_does_not_stop_the_server(base_url, wishes):
    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    conn.request("POST", "/api/chat", body=json.dumps({"model": MODEL, "messages": _ask(wishes[3][0])}))
    resp = conn.getresponse()
    assert resp.status == 200 and resp.readline()
    conn.close()
    status, body = _raw(base_url, "POST", "/api/generate", {"model": MODEL, "prompt": wishes[3][0], "stream": False})
    assert status == 200 and body["response"] == wishes[3][1]


def test_twenty_concurrent_requests_queue_and_all_succeed(base_url, wishes):
    def one(n):
        question, answer = wishes[n % len(wishes)]
        if n % 2:
            status, body = _raw(base_url, "POST", "/v1/chat/completions", {"model": MODEL, "messages": _ask(question)})
            return status, body["choices"][0]["message"]["content"] if status == 200 else body, answer
        status, body = _raw(base_url, "POST", "/api/chat", {"model": MODEL, "messages": _ask(question), "stream": False})
        return status, body["message"]["content"] if status == 200 else body, answer

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one, range(20)))
    elapsed = time.monotonic() - started
    assert [status for status, _, _ in results] == [200] * 20
    assert all(text == answer for _, text, answer in results)
    print(f"20 concurrent requests (max concurrency 1) answered in {elapsed:.1f}s")
