"""The one way paid requests are sent: every outcome journaled, unreadable replies recorded, a fatal error stops."""

from __future__ import annotations

import threading
import time

import pytest

from tianji_ft.synth.chat_client import RequestFailed
from tianji_ft.synth.journal import Journal
from tianji_ft.synth.requests import Sender

KEY = "sk-秘密-0123456789"


def test_every_outcome_is_journaled_and_heard(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    sender = Sender(journal, KEY, concurrency=3, thread_name="t")

    def ask(n):
        if n == 2:
            raise ValueError(f"reply not JSON; header Authorization: Bearer {KEY}")
        if n == 4:
            raise RequestFailed("HTTP 500 (after 3 attempts)", 3)
        return {"status": "ok", "text": f"祝福{n}"}

    heard = {}
    sender.send(range(6), ask, lambda n: {"id": f"item{n}"}, lambda n, entry: heard.setdefault(n, entry))
    journal.close()
    saved = {e["id"]: e for e in journal.load()}
    assert set(heard) == set(range(6)) and set(saved) == {f"item{n}" for n in range(6)}
    assert saved["item2"]["status"] == "failed" and KEY not in saved["item2"]["reason"]  # the key never reaches a file
    assert saved["item4"] == {**saved["item4"], "status": "failed", "reason": "HTTP 500 (after 3 attempts)",
                              "attempts": 3}
    assert saved["item0"]["text"] == "祝福0" and sender.fatal == []


def test_a_fatal_failure_stops_what_was_not_sent_yet(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    sender = Sender(journal, KEY, concurrency=1, thread_name="t")
    asked = []

    def ask(n):
        asked.append(n)
        if n == 1:
            raise RequestFailed("HTTP 401: invalid key", 1, True)
        return {"status": "ok"}

    sender.send(range(5), ask, lambda n: {"id": n}, lambda n, entry: None)
    assert asked == [0, 1] and sender.fatal == ["HTTP 401: invalid key"] and sender.stop.is_set()


def test_an_interrupt_keeps_what_finished_and_sends_no_more(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    sender = Sender(journal, KEY, concurrency=2, thread_name="t")
    second_done = threading.Event()

    def ask(n):
        if n == 1:
            second_done.set()
        if n >= 2:
            time.sleep(0.2)  # the rest take a while: the interrupt comes while they are queued
        return {"status": "ok"}

    heard = []

    def hear(n, entry):
        heard.append(n)
        if len(heard) == 1:
            second_done.wait(5)
            raise KeyboardInterrupt  # Ctrl-C while the results come in

    with pytest.raises(KeyboardInterrupt):
        sender.send(range(20), ask, lambda n: {"id": n}, hear)
    journal.close()
    saved = {e["id"] for e in journal.load()}
    assert set(heard) <= saved and len(saved) < 20 and sender.stop.is_set()
