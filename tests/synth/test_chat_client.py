import random
import threading
import time

import pytest

from tianji_ft.synth.chat_client import (
    ChatClient, RequestFailed, RetryPolicy, Stopped, backoff_delay, parse_retry_after, redact,
)

PROMPT = "对象称谓是：大舅，祝福场景是：春节。"
FAST = RetryPolicy(max_attempts=4, backoff_base=0.01, backoff_max=0.05)


def client_for(server, key, timeout=5.0, policy=FAST, stop=None):
    return ChatClient(server.url, "fake-model", key, timeout=timeout, policy=policy, stop_event=stop)


def test_parse_retry_after_forms():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_backoff_doubles_with_jitter_and_is_capped():
    policy = RetryPolicy(backoff_base=1.0, backoff_max=5.0)
    rng = random.Random(0)
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)):
        delays = [backoff_delay(attempt, policy, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


def test_redact():
    assert redact("Bearer sk-1 and sk-1", "sk-1") == "Bearer *** and ***"
    assert redact("text", "") == "text"


def test_happy_reply_and_usage(fake_llm, api_key):
    reply = client_for(fake_llm, api_key).complete("system", PROMPT)
    assert reply.text.startswith('"祝大舅春节') and reply.attempts == 1
    assert (reply.tokens_in, reply.tokens_out) == (100, 20)
    assert fake_llm.auth_headers == {f"Bearer {api_key}"}


@pytest.mark.parametrize("fault", ["500", "drop", ("slow", 2.0)], ids=["500", "dropped", "timeout"])
def test_transient_faults_are_retried(fake_llm, api_key, fault):
    fake_llm.behaviour = lambda prompt, n: fault if n == 1 else "ok"
    reply = client_for(fake_llm, api_key, timeout=0.8).complete("system", PROMPT)
    assert reply.attempts == 2 and fake_llm.counts[PROMPT] == 2


def test_429_waits_for_retry_after(fake_llm, api_key):
    fake_llm.behaviour = lambda prompt, n: ("429", "1") if n == 1 else "ok"
    reply = client_for(fake_llm, api_key).complete("system", PROMPT)
    first, second = fake_llm.times[PROMPT]
    assert reply.attempts == 2 and second - first >= 0.95


def test_a_retry_after_too_long_fails_instead_of_blocking(fake_llm, api_key):
    fake_llm.behaviour = lambda prompt, n: ("429", "3600")
    with pytest.raises(RequestFailed, match="asked to wait 3600 s"):
        client_for(fake_llm, api_key).complete("system", PROMPT)
    assert fake_llm.counts[PROMPT] == 1


def test_persistent_500_fails_with_reason_after_max_attempts(fake_llm, api_key):
    fake_llm.behaviour = lambda prompt, n: "500"
    with pytest.raises(RequestFailed) as info:
        client_for(fake_llm, api_key).complete("system", PROMPT)
    assert fake_llm.counts[PROMPT] == 4 and info.value.attempts == 4 and not info.value.fatal
    assert "HTTP 500" in info.value.reason and "after 4 attempts" in info.value.reason


def test_client_errors_are_not_retried_and_the_key_is_redacted(fake_llm, api_key):
    fake_llm.behaviour = lambda prompt, n: "echo_key_400"
    with pytest.raises(RequestFailed) as info:
        client_for(fake_llm, api_key).complete("system", PROMPT)
    assert fake_llm.counts[PROMPT] == 1
    assert "HTTP 400" in info.value.reason and "Bearer ***" in info.value.reason and api_key not in info.value.reason


def test_bad_key_is_fatal(fake_llm, api_key):
    fake_llm.behaviour = lambda prompt, n: "401"
    with pytest.raises(RequestFailed) as info:
        client_for(fake_llm, api_key).complete("system", PROMPT)
    assert info.value.fatal and fake_llm.counts[PROMPT] == 1


def test_stopping_interrupts_a_backoff_wait(fake_llm, api_key):
    fake_llm.behaviour = lambda prompt, n: ("429", "30")
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Stopped):
        client_for(fake_llm, api_key, stop=stop).complete("system", PROMPT)
    assert time.monotonic() - started < 5
