"""Schemathesis against the live server's /openapi.json, over a fake engine: for data that fits the schema and
data that does not, no 500, every status documented, every answer matching its schema, bad data refused.

Bounded: at most 30 examples per operation and mode, no shrinking, no example database (about 10 s in all).
"""

from __future__ import annotations

import collections
import json

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               response_headers_conformance, response_schema_conformance,
                                               status_code_conformance)

KEY = "fuzz-key"


@schemathesis.deserializer("application/x-ndjson")
def _ndjson(ctx, response):
    """Ollama's streamed answers: the lines, as the array /openapi.json describes."""
    return [json.loads(line) for line in response.content.split(b"\n") if line]


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
GETS = ["/", "/health", "/api/version", "/v1/models", "/api/tags", "/metrics"]
POSTS = ["/v1/chat/completions", "/api/chat", "/api/generate"]
BOUNDS = settings(deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate], database=None,
                  suppress_health_check=list(HealthCheck), report_multiple_bugs=False)


@pytest.fixture(scope="module")
def api_schema(make_engine):
    """The live server's schema (a fake engine with a 512-token context, a key, a 64 KiB body limit)."""
    from tianji_ft.serve.server import make_server

    engine = make_engine(context=512)
    srv = make_server(engine, "127.0.0.1", 0, names=["tianji"], api_keys=[KEY], max_body=64 << 10,
                      request_timeout=10, access_log=False).start()
    schema = schemathesis.openapi.from_url(srv.url + "/openapi.json")
    yield schema
    srv.stop()


def _steer(case, n: int):
    """Point two in three positive cases at the served model with their roles in order, so that they get past
    the checks a schema cannot express and reach generation (what the schema allows is left as generated)."""
    body = case.body
    if n != 2 and isinstance(body, dict):
        body["model"] = "tianji"
        messages = body.get("messages")
        if isinstance(messages, list):
            if not messages:
                messages.append({"role": "user", "content": "你好"})
            for i, message in enumerate(reversed(messages)):
                message["role"] = "user" if i % 2 == 0 else "assistant"
    return case


def test_every_route_is_in_the_schema(api_schema):
    paths = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert paths == {("GET", p) for p in GETS} | {("POST", p) for p in POSTS}


@pytest.mark.parametrize("method, path, mode, examples", [
    *[("GET", path, GenerationMode.POSITIVE, 3) for path in GETS],
    *[("POST", path, mode, 30) for path in POSTS for mode in GenerationMode],
])
def test_the_api_keeps_to_its_schema(api_schema, method, path, mode, examples):
    strategy = api_schema[path][method].as_strategy(generation_mode=mode)
    if mode is GenerationMode.POSITIVE:
        strategy = st.tuples(strategy, st.integers(0, 2)).map(lambda pair: _steer(*pair))
    checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])

    statuses = collections.Counter()

    @given(case=strategy)
    @settings(BOUNDS, max_examples=examples)
    def run(case):
        response = case.call_and_validate(headers={"Authorization": f"Bearer {KEY}"}, checks=checks, timeout=15)
        statuses[response.status_code] += 1

    run()
    print(method, path, mode.value, dict(statuses))
    if method == "POST" and mode is GenerationMode.POSITIVE:
        assert statuses[200] >= 5, statuses  # the fuzz reached generation, not only the error paths
    elif method == "POST":
        assert 200 not in statuses, statuses
