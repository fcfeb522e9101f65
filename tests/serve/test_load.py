"""50 concurrent streams of which half disconnect, over a fake engine: the server stops what nobody reads,
keeps its slots, and afterwards answers, with its threads and bookkeeping back where they were."""

from __future__ import annotations

import collections
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from prometheus_client.parser import text_string_to_metric_families

MODEL_NAME = "tianji"
STREAMS = 50
SLOTS = 4


def _request(path: str, body: dict) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


def _stream(address, n: int) -> tuple[str, str]:
    """Stream one answer; odd ``n`` leave: half after the first piece, half while still waiting in the queue."""
    path = "/v1/chat/completions" if n % 4 < 2 else "/api/chat"
    body = {"model": MODEL_NAME, "stream": True, "messages": [{"role": "user", "content": f"wish {n:02d} " + "x" * 20}]}
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(_request(path, body))
        if n % 2:
            if n % 4 == 1:
                sock.settimeout(0.05)  # leave before anything comes back (most are still queued)
                try:
                    sock.recv(1)
                except socket.timeout:
                    pass
            else:
                sock.recv(64)  # the headers have started: generation has begun
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return path, "left"
        received = b""
        while not received.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head, _, body_bytes = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    text = _dechunk(body_bytes).decode()
    if path == "/api/chat":
        return path, "".join(json.loads(line)["message"]["content"] for line in text.splitlines())
    events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return path, "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]
                         if json.loads(e)["choices"])


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


def _gauges(client) -> dict:
    return {s.name: s.value for f in text_string_to_metric_families(client.get("/metrics").text) for s in f.samples
            if not s.labels}


def test_fifty_streams_half_of_them_leaving(start_server, make_engine):
    engine = make_engine(delay=0.01)
    srv = start_server(engine, max_concurrency=SLOTS, max_queue=STREAMS)
    state = srv.app.state.serve
    client = httpx.Client(base_url=srv.url, timeout=30)
    with ThreadPoolExecutor(SLOTS) as pool:  # warm up: every pump thread exists
        list(pool.map(lambda _: client.post("/api/chat", json={"model": MODEL_NAME, "stream": False, "messages": [
            {"role": "user", "content": "warm " + "x" * 40}]}), range(SLOTS)))
    threads_before = threading.active_count()
    calls_before = len(engine.calls)

    with ThreadPoolExecutor(STREAMS) as pool:
        results = list(pool.map(lambda n: _stream(srv.server_address[:2], n), range(STREAMS)))

    for n, (path, text) in enumerate(results):
        if n % 2 == 0:
            assert text.endswith(f"wish {n:02d} " + "x" * 20), (n, path, text)
        else:
            assert text == "left"

    deadline = time.monotonic() + 10
    while (engine.running or state.slots.busy or state.active) and time.monotonic() < deadline:
        time.sleep(0.05)
    generated = len(engine.calls) - calls_before
    assert engine.running == 0 and engine.most_running <= SLOTS
    finished = engine.finished - SLOTS
    assert finished >= STREAMS // 2  # every stream read to its end finished
    # A stream that left was stopped, unless (on a loaded machine) its short answer was already complete
    # when the server saw it leave: every leaver is one or the other, and most were stopped.
    assert engine.stopped + (finished - STREAMS // 2) == generated - STREAMS // 2
    assert engine.stopped >= STREAMS // 4
    assert (state.slots.busy, state.slots.waiting, len(state.active)) == (0, 0, 0)

    # afterwards: health, metrics, a normal request; threads back where they were
    assert client.get("/health").json()["status"] == "ok"
    gauges = _gauges(client)
    assert (gauges["tianji_queue_depth"], gauges["tianji_generations_running"]) == (0, 0)
    assert gauges["tianji_requests_in_flight"] == 1  # the /metrics request itself
    stopped = [s.value for f in text_string_to_metric_families(client.get("/metrics").text) for s in f.samples
               if s.name == "tianji_generations_stopped_total" and s.labels == {"reason": "client_gone"}]
    # every generation stopped early was counted; so were slots given up before their pump called the engine
    assert engine.stopped <= stopped[0] <= STREAMS // 2
    statuses = collections.Counter()
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "tianji_requests_total" and sample.labels["method"] == "POST":
                statuses[sample.labels["status"]] += sample.value
    # those who left before their answer started: 499 (nginx's "client closed request"); mid-stream ones had
    # their 200 already; never a server error
    assert set(statuses) == {"200", "499"} and sum(statuses.values()) == STREAMS + SLOTS
    assert STREAMS // 2 + SLOTS <= statuses["200"] < STREAMS + SLOTS
    answer = client.post("/v1/chat/completions", json={"model": MODEL_NAME, "messages": [
        {"role": "user", "content": "after"}]})
    assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"].endswith(":after")
    client.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > threads_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= threads_before
