"""The HTTP API over a fake engine (no model): routes, every status code, auth, limits, metrics, logs, CORS.

Each test starts its own uvicorn server on 127.0.0.1 and talks to it with
real clients (httpx, http.client, a raw socket where the request must be
malformed on purpose).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tianji_ft.chat.engine import GenerationParams
from tianji_ft.serve.server import MAX_BODY

MODEL_NAME = "tianji"  # the --name every test server gets (conftest.start_server)
USER = [{"role": "user", "content": "祝福"}]
CHAT = {"model": MODEL_NAME, "messages": USER, "stream": False}


def _openai_error(response, status):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def _ollama_error(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    return body["error"]


def _raw_socket(srv, data: bytes, timeout: float = 5) -> bytes:
    """Send ``data`` as is on a fresh connection; everything the server answers before closing or going quiet."""
    host, port = srv.server_address[:2]
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and not b"chunked" in b"".join(chunks).lower():
                    head, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
                    length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:")]
                    if length and len(rest) >= length[0]:
                        break
        except socket.timeout:
            pass
    return b"".join(chunks)


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def _metrics(client) -> dict:
    """{(name, frozenset(labels)): value} of /metrics."""
    text = client.get("/metrics").text
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


# --- routes -------------------------------------------------------------------------


def test_every_route_answers_in_its_api_shape(start_server):
    srv = start_server()
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        assert client.get("/health").json() == {"status": "ok", "models": ["fake", MODEL_NAME]}
        assert client.get("/").status_code == 200
        assert client.get("/api/version").json()["version"]
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["fake", MODEL_NAME]
        assert [m["name"] for m in client.get("/api/tags").json()["models"]] == ["fake", MODEL_NAME]

        reply = client.post("/v1/chat/completions", json=CHAT).json()
        assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["content"] == "1:祝福"
        assert reply["usage"] == {"prompt_tokens": 8, "completion_tokens": 4, "total_tokens": 12}

        events = client.post("/v1/chat/completions", json={**CHAT, "stream": True,
                                                           "stream_options": {"include_usage": True}})
        assert events.headers["content-type"].startswith("text/event-stream")
        data = [line[6:] for line in events.text.splitlines() if line.startswith("data: ")]
        assert data[-1] == "[DONE]"
        chunks = [json.loads(d) for d in data[:-1]]
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "2:祝福"
        assert chunks[-1]["usage"]["completion_tokens"] == 4

        answer = client.post("/api/chat", json=CHAT).json()
        assert answer["message"] == {"role": "assistant", "content": "3:祝福"} and answer["done"]
        lines = client.post("/api/generate", json={"model": MODEL_NAME, "prompt": "你好"}).text.splitlines()
        objects = [json.loads(line) for line in lines]
        assert "".join(o["response"] for o in objects) == "4:你好" and objects[-1]["done_reason"] == "stop"
        docs = client.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        assert set(client.get("/openapi.json").json()["paths"]) >= {"/v1/chat/completions", "/api/chat",
                                                                    "/api/generate", "/metrics", "/health"}


# --- status codes ----------------------------------------------------------------------


def _both(body: dict, ollama: dict | None = None):
    """(the OpenAI body, the Ollama body) as bytes; Ollama's sampling fields live under options."""
    return json.dumps(body).encode(), json.dumps(body if ollama is None else ollama).encode()


@pytest.mark.parametrize("bodies, status, words", [
    ((b'{"model": "tianji", "messages": [',) * 2, 400, "malformed JSON"),
    ((b"",) * 2, 400, "empty"),
    ((b"[]",) * 2, 400, "must be an object"),
    (_both({"model": MODEL_NAME, "messages": []}), 400, "non-empty"),
    (_both({"model": MODEL_NAME, "messages": [{"role": "assistant", "content": "x"}]}), 400, "must follow a user"),
    (_both({"model": "gpt-4o", "messages": USER}), 404, "not found"),
    (_both({"model": MODEL_NAME}), 422, "messages is required"),
    (_both({"model": MODEL_NAME, "messages": USER, "seed": 2**70},
           {"model": MODEL_NAME, "messages": USER, "options": {"seed": 2**70}}), 422, "seed must be"),
    (_both({"model": MODEL_NAME, "messages": USER, "temperature": "hot"},
           {"model": MODEL_NAME, "messages": USER, "options": {"temperature": "hot"}}), 422, "temperature must be"),
])
def test_bad_requests_get_their_status_in_both_shapes(start_server, bodies, status, words):
    srv = start_server()
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        error = _openai_error(client.post("/v1/chat/completions", content=bodies[0]), status)
        assert words in error["message"]
        assert words in _ollama_error(client.post("/api/chat", content=bodies[1]), status)


def test_huge_seeds_within_torch_range_are_accepted(start_server):
    srv = start_server()
    for seed in (2**64 - 1, -(2**63)):
        response = httpx.post(srv.url + "/v1/chat/completions", json={**CHAT, "seed": seed}, timeout=10)
        assert response.status_code == 200


def test_unknown_routes_and_methods(start_server):
    srv = start_server()
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        assert _openai_error(client.get("/v2/anything"), 404)["code"] == "not_found"
        assert "not allowed" in _ollama_error(client.get("/api/chat"), 405)
        assert client.get("/api/chat").headers["allow"] == "POST"
        _openai_error(client.delete("/v1/chat/completions"), 405)


def test_a_body_just_over_the_limit_is_413_and_one_at_the_limit_is_read(start_server):
    srv = start_server(max_body=4096)
    fits = json.dumps({**CHAT, "pad": ""}).encode()
    at_limit = fits[:-2] + b" " * (4096 - len(fits)) + fits[-2:]
    assert len(at_limit) == 4096
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        assert client.post("/v1/chat/completions", content=at_limit).status_code == 200
        over = at_limit[:-2] + b" " + at_limit[-2:]
        error = _openai_error(client.post("/v1/chat/completions", content=over), 413)
        assert "4097 bytes" in error["message"] and "4096" in error["message"]
        assert "limit" in _ollama_error(client.post("/api/chat", content=over), 413)
        # chunked, so no Content-Length to refuse it by: counted as it arrives
        chunked = client.post("/api/chat", content=iter([over[:3000], over[3000:]]))
        assert "limit" in _ollama_error(chunked, 413)
        assert client.get("/health").status_code == 200


def test_default_body_limit_is_one_mib(start_server):
    srv = start_server()
    body = json.dumps({**CHAT, "pad": "x" * MAX_BODY}).encode()[: MAX_BODY + 1]
    assert len(body) == MAX_BODY + 1
    assert _ollama_error(httpx.post(srv.url + "/api/chat", content=body, timeout=30), 413)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/json; charset=utf-8", "multipart/form-data; boundary=x",
                                          "image/png"])
def test_any_content_type_is_read_as_json(start_server, content_type):
    # curl -d (the Ollama tutorial) sends application/x-www-form-urlencoded
    srv = start_server()
    headers = {"content-type": content_type} if content_type else {}
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        request = client.build_request("POST", "/api/chat", content=json.dumps(CHAT).encode(), headers=headers)
        if content_type is None:
            request.headers.pop("content-type", None)
        assert client.send(request).json()["message"]["content"].endswith("祝福")
        form = client.post("/api/chat", data={"model": MODEL_NAME})  # a real form body is not JSON
        assert "malformed JSON" in _ollama_error(form, 400)


@pytest.mark.parametrize("length_header, status", [
    (b"Content-Length: -5\r\n", 400),
    (b"Content-Length: abc\r\n", 400),
    (b"Content-Length: 5\r\nContent-Length: 6\r\n", 400),
    (b"", 411),
])
def test_bad_or_missing_content_length(start_server, length_header, status):
    srv = start_server()
    raw = _raw_socket(srv, b"POST /api/chat HTTP/1.1\r\nHost: x\r\n" + length_header + b"\r\n{}")
    assert _status(raw) == status, raw[:200]
    assert httpx.post(srv.url + "/api/chat", json=CHAT, timeout=10).status_code == 200


def test_a_body_shorter_than_its_content_length_times_out_with_408(start_server):
    srv = start_server(request_timeout=0.5)
    started = time.monotonic()
    raw = _raw_socket(srv, b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{", timeout=10)
    assert _status(raw) == 408 and time.monotonic() - started < 5
    assert httpx.get(srv.url + "/health", timeout=10).status_code == 200


def test_a_chunked_body_is_accepted(start_server):
    srv = start_server()
    body = json.dumps(CHAT).encode()
    reply = httpx.post(srv.url + "/v1/chat/completions", content=iter([body[:10], body[10:]]), timeout=10)
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] == "1:祝福"


# --- limits from the model -----------------------------------------------------------------


def test_over_long_prompts_and_huge_max_tokens_are_400_before_any_generation(start_server, make_engine):
    engine = make_engine(context=64)
    srv = start_server(engine)
    long = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "祝" * 100}]}
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        error = _openai_error(client.post("/v1/chat/completions", json=long), 400)
        assert error["code"] == "context_length_exceeded" and "106 tokens" in error["message"]
        assert "64 tokens" in error["message"]
        assert "64 tokens" in _ollama_error(client.post("/api/generate", json={"model": MODEL_NAME,
                                                                              "prompt": "祝" * 100}), 400)
        error = _openai_error(client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 10**9}), 400)
        assert "1000000000" in error["message"] and "64" in error["message"] and error["param"] == "max_tokens"
        assert engine.calls == []  # refused before generating anything
        # the default is capped at what the context leaves: 64 - 8 prompt tokens
        assert engine_params(client, engine, CHAT).max_new_tokens == 56
        assert engine_params(client, engine, {**CHAT, "max_tokens": 56}).max_new_tokens == 56
        _openai_error(client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 57}), 400)
        options = {"num_predict": 10**12}
        client.post("/api/chat", json={**CHAT, "options": options})
        assert engine.calls[-1][1].max_new_tokens == 56


def engine_params(client, engine, body) -> GenerationParams:
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    return engine.calls[-1][1]


def test_the_server_default_is_used_when_the_context_has_room(start_server, make_engine):
    engine = make_engine(context=100_000)
    srv = start_server(engine, defaults=GenerationParams(max_new_tokens=33))
    assert engine_params(httpx.Client(base_url=srv.url, timeout=10), engine, CHAT).max_new_tokens == 33


# --- queue, timeouts, disconnects ------------------------------------------------------------


def _in_thread(fn, *args):
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("value", fn(*args)), daemon=True)
    thread.start()
    return thread, out


def _wait_until(condition, timeout=10):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_a_full_queue_is_429_and_a_long_wait_503_both_with_retry_after(start_server, make_engine):
    engine = make_engine()
    engine.gate.clear()  # generation holds until the gate opens
    srv = start_server(engine, max_concurrency=1, max_queue=1, request_timeout=2.5)
    post = lambda path: httpx.post(srv.url + path, json=CHAT, timeout=10)  # noqa: E731
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        first, first_out = _in_thread(post, "/v1/chat/completions")
        _wait_until(lambda: engine.running == 1)
        second, second_out = _in_thread(post, "/api/chat")
        _wait_until(lambda: _metrics(client)[("tianji_queue_depth", frozenset())] == 1)
        full = client.post("/v1/chat/completions", json=CHAT)
        error = _openai_error(full, 429)
        assert error["code"] == "queue_full" and int(full.headers["retry-after"]) >= 1
        full = client.post("/api/chat", json=CHAT)
        assert "busy" in _ollama_error(full, 429) and int(full.headers["retry-after"]) >= 1
        second.join(10)
        queued = second_out["value"]
        assert "busy" in _ollama_error(queued, 503) and int(queued.headers["retry-after"]) >= 1
        first.join(10)
        timed_out = first_out["value"]
        assert _openai_error(timed_out, 503)["code"] == "timeout" and timed_out.headers["retry-after"]
        engine.gate.set()
        _wait_until(lambda: engine.running == 0)
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
        assert engine.stopped == 1  # the timed-out generation was stopped, not run to its end


def test_a_stream_past_the_timeout_ends_with_an_error_event(start_server, make_engine):
    engine = make_engine(delay=0.1)
    srv = start_server(engine, request_timeout=0.5)
    body = {**CHAT, "stream": True, "messages": [{"role": "user", "content": "x" * 30}]}
    events = httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=10)
    assert events.status_code == 200
    data = [line[6:] for line in events.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]" and json.loads(data[-2])["error"]["code"] == "timeout"
    lines = httpx.post(srv.url + "/api/chat", json={**body}, timeout=10).text.splitlines()
    assert "request timeout" in json.loads(lines[-1])["error"]
    _wait_until(lambda: engine.running == 0)
    assert engine.stopped == 2 and engine.finished == 0


def test_a_client_that_leaves_a_plain_request_stops_its_generation_and_frees_the_slot(start_server, make_engine):
    engine = make_engine(delay=0.05)
    srv = start_server(engine, max_concurrency=1)
    slow = {**CHAT, "messages": [{"role": "user", "content": "x" * 200}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(srv.url + "/v1/chat/completions", json=slow, timeout=0.3)
    _wait_until(lambda: engine.stopped == 1, timeout=5)
    started = time.monotonic()
    assert httpx.post(srv.url + "/v1/chat/completions", json=CHAT, timeout=10).status_code == 200
    assert time.monotonic() - started < 2  # not behind the abandoned 10 s answer
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        metrics = _metrics(client)
    assert metrics[("tianji_generations_stopped_total", frozenset({("reason", "client_gone")}))] == 1


def test_one_generation_per_slot(start_server, make_engine):
    engine = make_engine(delay=0.01)
    srv = start_server(engine, max_concurrency=3)
    threads, outs = [], []
    for _ in range(9):
        thread, out = _in_thread(lambda: httpx.post(srv.url + "/api/chat", json=CHAT, timeout=30))
        threads.append(thread)
        outs.append(out)
    for thread in threads:
        thread.join(30)
    assert [out["value"].status_code for out in outs] == [200] * 9
    assert engine.most_running == 3


# --- errors inside ---------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [RuntimeError, OSError, ConnectionResetError])
def test_an_engine_failure_is_a_500_with_one_log_line_and_no_body(start_server, caplog, make_engine, failure):
    engine = make_engine(fail=failure)
    srv = start_server(engine)
    secret = "生日快乐-secret-words"
    body = {**CHAT, "messages": [{"role": "user", "content": secret}]}
    caplog.set_level(logging.INFO, logger="tianji_ft.serve")
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        failed = client.post("/v1/chat/completions", json=body)
        error = _openai_error(failed, 500)
        request_id = failed.headers["x-request-id"]
        assert request_id in error["message"] and secret not in failed.text
        stream = client.post("/api/chat", json={**body, "stream": True})
        assert stream.status_code == 200 and "internal error" in json.loads(stream.text.splitlines()[-1])["error"]
        assert client.get("/health").status_code == 200
    errors = [r for r in caplog.records if r.name == "tianji_ft.serve" and r.levelno >= logging.ERROR]
    assert len(errors) == 2
    assert request_id in errors[0].getMessage() and failure.__name__ in errors[0].getMessage()
    assert all("\n" not in r.getMessage() and secret not in r.getMessage() and not r.exc_info for r in errors)


# --- keys --------------------------------------------------------------------------------------


def test_api_keys(start_server, caplog):
    caplog.set_level(logging.INFO, logger="tianji_ft.serve")
    srv = start_server(api_keys=["key-one", "key-two"], access_log=True)
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        assert client.get("/health").status_code == 200  # open
        assert client.get("/api/version").status_code == 200
        missing = client.post("/v1/chat/completions", json=CHAT)
        assert _openai_error(missing, 401)["code"] == "invalid_api_key"
        assert missing.headers["www-authenticate"] == "Bearer"
        for header in ("Bearer key-three", "Bearer key-one2", "Basic a2V5LW9uZQ==", "key-one", "Bearer"):
            _openai_error(client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": header}), 401)
        _ollama_error(client.post("/api/chat", json=CHAT, headers={"Authorization": "Bearer nope"}), 401)
        for route in ("/v1/models", "/api/tags", "/metrics"):
            assert client.get(route).status_code == 401
        for key in ("key-one", "key-two"):
            ok = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code == 200
        assert client.get("/metrics", headers={"Authorization": "bearer key-two"}).status_code == 200
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "POST /v1/chat/completions 401" in logged and "POST /v1/chat/completions 200" in logged
    assert "key-one" not in logged and "key-two" not in logged and "key-three" not in logged


def test_the_sdks_send_keys(start_server):
    import ollama
    import openai

    srv = start_server(api_keys=["sk-local"])
    good = openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-local", max_retries=0, timeout=10)
    assert good.chat.completions.create(model=MODEL_NAME, messages=USER).choices[0].message.content == "1:祝福"
    bad = openai.OpenAI(base_url=srv.url + "/v1", api_key="sk-wrong", max_retries=0, timeout=10)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=MODEL_NAME, messages=USER)
    client = ollama.Client(host=srv.url, headers={"Authorization": "Bearer sk-local"}, timeout=10)
    assert client.chat(model=MODEL_NAME, messages=USER).message.content == "2:祝福"
    with pytest.raises(ollama.ResponseError) as info:
        ollama.Client(host=srv.url, timeout=10).chat(model=MODEL_NAME, messages=USER)
    assert info.value.status_code == 401


def test_keys_from_flags_and_the_environment():
    from tianji_ft.serve.auth import KeyCheck, keys_from, parse_keys

    assert parse_keys(["a,b", " c ", "a", ""]) == ("a", "b", "c")
    assert keys_from([], {"TIANJI_API_KEY": "x, y"}) == ("x", "y")
    assert keys_from(["z"], {"TIANJI_API_KEY": "x"}) == ("z",)
    assert keys_from([], {}) == ()
    check = KeyCheck(["a", "b"])
    assert check.accepts("Bearer b") and check.accepts("bearer  a") and not check.accepts("Bearer c")
    assert not check.accepts(None) and KeyCheck([]).accepts(None)


@pytest.mark.parametrize("host, keys, no_auth, refused", [
    ("127.0.0.1", (), False, False),
    ("localhost", (), False, False),
    ("::1", (), False, False),
    ("127.0.0.2", (), False, False),
    ("0.0.0.0", (), False, True),
    ("192.168.1.5", (), False, True),
    ("::", (), False, True),
    ("myhost", (), False, True),
    ("0.0.0.0", ("k",), False, False),
    ("0.0.0.0", (), True, False),
    ("127.0.0.1", ("k",), True, True),  # contradictory
])
def test_a_non_loopback_host_needs_a_key_or_no_auth(host, keys, no_auth, refused):
    from tianji_ft.core.errors import UserError
    from tianji_ft.serve.auth import check_exposure

    if refused:
        with pytest.raises(UserError) as info:
            check_exposure(host, keys, no_auth)
        assert "\n" not in str(info.value)
    else:
        check_exposure(host, keys, no_auth)


# --- metrics, access log, CORS ------------------------------------------------------------------


def test_metrics_count_requests_tokens_and_time_to_first_token(start_server):
    srv = start_server()
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        client.post("/v1/chat/completions", json=CHAT)
        client.post("/api/chat", json={**CHAT, "stream": True})
        client.post("/v1/chat/completions", json={"model": "nope", "messages": USER})
        client.get("/nowhere")
        metrics = _metrics(client)
    requests = lambda route, status: metrics[("tianji_requests_total", frozenset(  # noqa: E731
        {("route", route), ("method", "POST" if route != "unmatched" else "GET"), ("status", status)}))]
    assert requests("/v1/chat/completions", "200") == 1 and requests("/v1/chat/completions", "404") == 1
    assert requests("/api/chat", "200") == 1 and requests("unmatched", "404") == 1
    assert metrics[("tianji_prompt_tokens_total", frozenset())] == 16
    assert metrics[("tianji_generated_tokens_total", frozenset())] == 8
    assert metrics[("tianji_time_to_first_token_seconds_count", frozenset())] == 2
    assert metrics[("tianji_queue_depth", frozenset())] == 0
    assert metrics[("tianji_generations_running", frozenset())] == 0
    assert metrics[("tianji_requests_in_flight", frozenset())] == 1  # this /metrics request
    assert metrics[("process_resident_memory_bytes", frozenset())] > 0


def test_one_access_line_per_request(start_server, caplog):
    caplog.set_level(logging.INFO, logger="tianji_ft.serve.access")
    srv = start_server(access_log=True)
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        client.post("/v1/chat/completions", json=CHAT)
        client.post("/api/generate", json={"model": MODEL_NAME, "prompt": "hi"})
        client.get("/health")
        client.post("/v1/chat/completions", json={"model": MODEL_NAME})
    lines = [r.getMessage() for r in caplog.records if r.name == "tianji_ft.serve.access"]
    assert len(lines) == 4
    assert "POST /v1/chat/completions 200 prompt=8 completion=4 " in lines[0] and lines[0].split()[-2].endswith("ms")
    assert "POST /api/generate 200 prompt=8 completion=4 " in lines[1]
    assert "GET /health 200 " in lines[2] and "POST /v1/chat/completions 422 " in lines[3]


def test_cors_is_off_unless_an_origin_is_given(start_server):
    origin = {"Origin": "http://localhost:5173"}
    plain = start_server()
    assert "access-control-allow-origin" not in httpx.get(plain.url + "/health", headers=origin).headers
    srv = start_server(cors_origins=["http://localhost:5173"], api_keys=["k"])
    preflight = httpx.options(srv.url + "/v1/chat/completions", headers={
        **origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:5173"
    answer = httpx.post(srv.url + "/v1/chat/completions", json=CHAT, headers={**origin, "Authorization": "Bearer k"})
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "http://localhost:5173"
    other = httpx.get(srv.url + "/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_streams_survive_unicode_line_separators(start_server):
    # httpx's iter_lines (the ollama client's stream reader) splits at U+0085, U+2028 and U+2029, too
    import ollama
    import openai

    srv = start_server()
    text = "祝\x85你\u2028生日\u2029快乐\x1c!"
    parts = list(ollama.Client(host=srv.url, timeout=10).chat(
        model=MODEL_NAME, messages=[{"role": "user", "content": text}], stream=True))
    assert "".join(p.message.content for p in parts) == "1:" + text
    chunks = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=10).chat.completions.create(
        model=MODEL_NAME, messages=[{"role": "user", "content": text}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "2:" + text
