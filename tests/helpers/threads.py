"""XTuner's preference dataset tokenizes through a multiprocessing queue under a tqdm bar: their threads
must end with the test that started them (a process with other threads does not fork cleanly, and
later tests fork, e.g. data split's check)."""

from __future__ import annotations

import contextlib
import gc
import threading


@contextlib.contextmanager
def no_threads_left(monkeypatch):
    import tqdm

    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)  # no tqdm monitor thread
    before = set(threading.enumerate())
    yield
    gc.collect()  # the queue's finaliser stops its feeder thread
    for thread in set(threading.enumerate()) - before:
        thread.join(10)
    assert set(threading.enumerate()) <= before
