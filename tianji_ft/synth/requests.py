"""Paid requests sent concurrently, each outcome journaled the moment it is known.

``synth wishes``, the judge and ``synth pairs``' remote candidates all send a
list of requests to an endpoint the same way: a thread pool, every answer or
failure written to the journal (fsync'd) before it counts, so a rerun after
SIGKILL asks only what has no saved answer; a reply that cannot be read is
recorded as a failure, never dropped; a fatal error (a wrong key, an unknown
model) stops the rest; Ctrl-C stops sending and keeps what finished.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Callable, Iterable

from tianji_ft.synth.chat_client import RequestFailed, Stopped, redact


class Sender:
    """``Sender(journal, key, ...).send(tasks, ask, base)``; ``stop`` is the event a ChatClient should watch,
    ``fatal`` the reasons of fatal failures."""

    def __init__(self, journal, key: str, *, concurrency: int, thread_name: str, progress=None,
                 attempts_field: str = "attempts"):
        self.journal, self.key = journal, key
        self.concurrency, self.thread_name = concurrency, thread_name
        self.progress, self.attempts_field = progress, attempts_field
        self.stop = threading.Event()
        self.fatal: list[str] = []

    def _outcome(self, task, ask: Callable, base: Callable) -> dict | None:
        if self.stop.is_set():
            return None
        head = base(task)
        try:
            entry = {**head, **ask(task)}
        except Stopped:
            return None
        except RequestFailed as exc:
            entry = {**head, "status": "failed", "reason": exc.reason, self.attempts_field: exc.attempts}
            if exc.fatal:
                self.fatal.append(exc.reason)
                self.stop.set()
        except Exception as exc:  # an unreadable reply is recorded, never dropped
            entry = {**head, "status": "failed", "reason": redact(f"{type(exc).__name__}: {exc}"[:300], self.key),
                     self.attempts_field: 1}
        entry["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.journal.append(entry)  # saved before it counts
        if self.progress is not None:
            self.progress.record(entry["status"] == "ok", entry.get("tokens_in", 0), entry.get("tokens_out", 0))
        return entry

    def send(self, tasks: Iterable, ask: Callable[[object], dict], base: Callable[[object], dict],
             on_entry: Callable[[object, dict], None]) -> None:
        """``ask(task)`` returns the entry's own fields (``status`` ok or failed, tokens...), ``base(task)`` the
        fields that name it (``id``...); ``on_entry(task, entry)`` hears of each journaled entry, in the
        caller's thread, also of those that finish while an interrupt stops the rest."""
        tasks = list(tasks)
        heard: set[int] = set()
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=self.thread_name) as pool:
            futures = {pool.submit(self._outcome, task, ask, base): n for n, task in enumerate(tasks)}
            try:
                for future in as_completed(futures):
                    entry = future.result()
                    heard.add(futures[future])
                    if entry is not None:
                        on_entry(tasks[futures[future]], entry)
            except BaseException:
                self.stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
                for future, n in futures.items():  # keep what finished while stopping
                    if n not in heard and future.done() and not future.cancelled() and future.exception() is None \
                            and future.result() is not None:
                        on_entry(tasks[n], future.result())
                raise
