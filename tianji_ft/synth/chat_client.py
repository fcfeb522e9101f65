"""One chat completion from any OpenAI-compatible server, with retries.

Works with DeepSeek, Zhipu's OpenAI-compatible endpoint, vLLM, lmdeploy,
Ollama and ``tianji-ft serve``: only ``base_url``, ``model`` and the key differ.
The SDK's own retries are off so that every attempt is counted here, backoff
is shared by all threads after a 429, and a failure ends with its reason.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    backoff_base: float = 1.0  # seconds before the 2nd attempt; doubles each time
    backoff_max: float = 60.0
    retry_after_max: float = 300.0  # longest server-requested pause we honour


@dataclass(frozen=True)
class Completion:
    text: str
    tokens_in: int
    tokens_out: int
    attempts: int


class RequestFailed(Exception):
    """The request did not succeed; ``fatal`` means no other request will either (bad key, unknown model)."""

    def __init__(self, reason: str, attempts: int, fatal: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts
        self.fatal = fatal


class Stopped(Exception):
    """The run is stopping; the request was not finished and nothing was saved."""


def redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def parse_retry_after(headers) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Full-jitter exponential backoff after failed attempt number ``attempt`` (1-based)."""
    ceiling = min(policy.backoff_max, policy.backoff_base * 2 ** (attempt - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


class ChatClient:
    def __init__(self, base_url: str, model: str, api_key: str, timeout: float = 60.0,
                 policy: RetryPolicy = RetryPolicy(), temperature: float | None = 1.0,
                 max_tokens: int | None = None, stop_event: threading.Event | None = None):
        import openai  # imported here so `import tianji_ft.synth` stays light

        self._openai = openai
        self.model = model
        self.policy = policy
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._key = api_key
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)
        self._stop = stop_event or threading.Event()
        self._rng = random.Random()
        self._pause_lock = threading.Lock()
        self._paused_until = 0.0  # after a 429 every thread waits, not just the one that got it

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self._stop.wait(seconds):
            raise Stopped()

    def _wait_for_pause(self) -> None:
        while True:
            with self._pause_lock:
                left = self._paused_until - time.monotonic()
            if left <= 0:
                return
            self._sleep(left)

    def _pause_all(self, seconds: float) -> None:
        with self._pause_lock:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def _classify(self, err) -> tuple[bool, bool, float | None, str]:
        """(retryable, fatal, retry_after, reason) for an exception from the SDK."""
        o = self._openai
        if isinstance(err, o.APITimeoutError):
            return True, False, None, "timed out"
        if isinstance(err, o.APIConnectionError):
            cause = err.__cause__ or err.__context__
            return True, False, None, f"connection failed ({type(cause).__name__ if cause else 'no detail'})"
        if isinstance(err, o.APIStatusError):
            status = err.status_code
            reason = f"HTTP {status}: {str(err)[:300]}"
            if status == 429 or status == 408 or status >= 500:
                return True, False, parse_retry_after(err.response.headers), reason
            return False, status in (401, 403, 404), None, reason
        return False, False, None, f"{type(err).__name__}: {str(err)[:300]}"

    def complete(self, system: str, user: str) -> Completion:
        return self.complete_messages([{"role": "system", "content": system}, {"role": "user", "content": user}])

    def complete_messages(self, messages: list[dict]) -> Completion:
        """The reply to a whole conversation (OpenAI chat messages ending with the user turn)."""
        kwargs = {"temperature": self.temperature} if self.temperature is not None else {}
        if self.max_tokens:
            kwargs["max_tokens"] = self.max_tokens
        for attempt in range(1, self.policy.max_attempts + 1):
            self._wait_for_pause()
            try:
                resp = self._client.chat.completions.create(model=self.model, messages=messages, **kwargs)
            except self._openai.OpenAIError as err:
                retryable, fatal, retry_after, reason = self._classify(err)
                reason = redact(reason, self._key)
                if not retryable or attempt == self.policy.max_attempts:
                    raise RequestFailed(f"{reason} (after {attempt} attempt{'s' if attempt > 1 else ''})", attempt, fatal) from None
                if retry_after is not None and retry_after > self.policy.retry_after_max:
                    raise RequestFailed(f"{reason}; server asked to wait {retry_after:.0f} s, over the {self.policy.retry_after_max:.0f} s limit", attempt) from None
                delay = backoff_delay(attempt, self.policy, self._rng)
                if retry_after is not None:
                    delay = max(delay, retry_after)
                    self._pause_all(retry_after)
                self._sleep(delay)
                continue
            choice = resp.choices[0] if resp.choices else None
            text = (choice.message.content if choice and choice.message else None) or ""
            usage = resp.usage
            return Completion(text, getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0, attempt)
        raise AssertionError("unreachable")  # the loop always returns or raises
