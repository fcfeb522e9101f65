"""Admission, prompt counting and cancellable generation for the server.

- :class:`PromptCounter` counts a prompt's tokens before anything waits or
  generates, so an over-long request is a 400 at once.
- :class:`Slots` holds the ``max_concurrency`` generation slots and a bounded
  queue in front of them: a full queue is a 429, a wait past the request's
  deadline a 503, both with ``Retry-After``; a client that leaves while
  queued just leaves the queue.
- :class:`Generation` runs one ``engine.stream(...)`` on a pump thread and
  hands its pieces to the event loop. :meth:`Generation.stop` (a client
  that disconnected, a timeout) makes the pump close the engine's stream at
  the next piece, which stops generation at the next token
  (:class:`tianji_ft.chat.engine.TextStream` closes on ``close()``); the
  slot is free once the pump has returned.

The server itself only awaits; every blocking call runs on the threads here,
whose number is fixed: ``max_concurrency`` pumps and one counter.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tianji_ft.serve.protocol import ApiError, Job

CONTEXT_ATTRS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def context_length(engine) -> int | None:
    """The model's context in tokens (its config's ``max_position_embeddings``), or None when it does not say."""
    config = getattr(getattr(engine, "model", None), "config", None)
    for attr in CONTEXT_ATTRS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


class PromptCounter:
    """Prompt tokens, on the server's own copy of the tokenizer and its own thread.

    The copy keeps counting off the engine's tokenizer (which its generation
    threads use); one thread means the copy is never used twice at once.
    """

    def __init__(self, engine):
        self.engine = engine
        tokenizer = getattr(engine, "tokenizer", None)
        try:
            self.tokenizer = copy.deepcopy(tokenizer)
        except Exception:  # a tokenizer that cannot be copied: share it, one call at a time
            self.tokenizer = tokenizer
        self.context = context_length(engine)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tianji-serve-count")

    def _count(self, messages: list[dict]) -> int:
        prompt = self.engine.render(messages)
        return len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    async def count(self, messages: list[dict]) -> int:
        return await asyncio.wrap_future(self._pool.submit(self._count, messages))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Slots:
    """``size`` generation slots with at most ``max_queue`` requests waiting for one (first come, first served).

    Used from the event loop only.
    """

    def __init__(self, size: int, max_queue: int, on_change=None):
        self.size, self.max_queue = size, max_queue
        self.busy = 0
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._on_change = on_change or (lambda busy, waiting: None)
        self._durations: collections.deque[float] = collections.deque(maxlen=32)

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _changed(self) -> None:
        self._on_change(self.busy, len(self._waiters))

    def retry_after(self) -> int:
        """Seconds until a slot is likely free for one more request: recent answer times, the queue ahead."""
        typical = sum(self._durations) / len(self._durations) if self._durations else 1.0
        return max(1, min(600, math.ceil(typical * (len(self._waiters) + 1) / self.size)))

    def record(self, seconds: float) -> None:
        self._durations.append(seconds)

    async def acquire(self, timeout: float) -> None:
        if self.busy < self.size and not self._waiters:
            self.busy += 1
            self._changed()
            return
        if len(self._waiters) >= self.max_queue:
            raise ApiError(429, f"the server is busy: {self.busy} answers are being generated and {len(self._waiters)} "
                           "requests are waiting, the most it queues; retry later", code="queue_full",
                           headers={"Retry-After": str(self.retry_after())})
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._changed()
        try:
            await asyncio.wait_for(waiter, max(timeout, 0.001))
        except BaseException as err:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as we gave up: pass it on
            else:
                self._forget(waiter)
            if isinstance(err, asyncio.TimeoutError):
                raise ApiError(503, "the server is busy: no generation slot came free within the request timeout; "
                               "retry later", code="queue_timeout",
                               headers={"Retry-After": str(self.retry_after())}) from None
            raise

    def _forget(self, waiter) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass
        self._changed()

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next in line
                self._changed()
                return
        self.busy -= 1
        self._changed()


class GenerationTimeout(Exception):
    pass


class Generation:
    """One answer generated on a pump thread; iterate :meth:`pieces` on the event loop."""

    def __init__(self, engine, job: Job, pool: ThreadPoolExecutor, slots: Slots, on_done=None):
        self.engine, self.job, self._pool, self._slots = engine, job, pool, slots
        self.reply = None
        self.stopped = False  # stopped before the end (client gone, timeout)
        self._stop = threading.Event()
        self._queue: asyncio.Queue | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_done = on_done
        self._started = 0.0

    async def start(self, timeout: float) -> None:
        """Wait for a slot (429/503 past the queue limit or the timeout), then start generating."""
        await self._slots.acquire(timeout)
        self._loop, self._queue, self._started = asyncio.get_running_loop(), asyncio.Queue(), time.monotonic()
        try:
            future = self._pool.submit(self._pump)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(self._pumped)

    def stop(self) -> None:
        """Stop generating at the next token; safe from any thread, any number of times."""
        if self._queue is not None and self.reply is None:
            self.stopped = True
        self._stop.set()

    async def pieces(self, deadline: float):
        """Text pieces as they come, then ``reply`` is set; :class:`GenerationTimeout` past ``deadline``."""
        # One timer for the whole answer, rather than a timeout around every piece (a task each).
        timer = self._loop.call_later(max(deadline - time.monotonic(), 0.0), self._queue.put_nowait, ("timeout", None))
        try:
            while True:
                kind, value = await self._queue.get()
                if kind == "piece":
                    yield value
                elif kind == "done":
                    self.reply = value
                    return
                elif kind == "timeout":
                    self.stop()
                    raise GenerationTimeout()
                else:
                    self.stop()
                    raise value
        finally:
            timer.cancel()

    # --- the pump thread ---------------------------------------------------------------

    def _put(self, item) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (server stopped): nobody is listening
            self._stop.set()

    def _pump(self) -> None:
        texts = None
        try:
            if self._stop.is_set():
                return
            pieces = self.engine.stream(self.job.messages, self.job.params)
            texts = iter(pieces)
            for text in texts:
                if self._stop.is_set():
                    return
                self._put(("piece", text))
            self._put(("done", pieces.reply))
        except BaseException as err:  # surfaced on the event loop
            self._put(("error", err))
        finally:
            close = getattr(texts, "close", None)
            if close is not None:
                close()  # a TextStream closed early stops generating at the next token

    def _pumped(self, _future) -> None:
        def done():
            self._slots.record(time.monotonic() - self._started)
            self._slots.release()
            if self._on_done is not None:
                self._on_done(self)

        try:
            self._loop.call_soon_threadsafe(done)
        except RuntimeError:
            pass
