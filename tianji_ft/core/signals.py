"""SIGTERM and SIGHUP end a command the way Ctrl-C does.

Python turns SIGINT into :class:`KeyboardInterrupt`, so every ``finally`` and
``except BaseException`` (atomic writes removing their temporary files, a run
recording how it ended) runs. SIGTERM (``timeout``, ``kill``, a scheduler)
and SIGHUP (a closed terminal) would instead end the process on the spot and
leave hidden ``.OUT.*.tmp`` files behind; :func:`install` makes them raise
:class:`Interrupted` in the main thread instead.
"""

from __future__ import annotations

import os
import signal
import threading

HANDLED = (signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """The command was stopped by ``signum``; the exit code is 128 + signum, as a shell reports it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signal_name(exc: BaseException) -> str:
    """``SIGTERM`` for an :class:`Interrupted`, ``SIGINT`` for a plain KeyboardInterrupt."""
    return signal.Signals(getattr(exc, "signum", signal.SIGINT)).name


def exit_code(exc: BaseException) -> int:
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


_installed_in: int | None = None


def _raise(signum, frame):
    if os.getpid() != _installed_in:
        # A forked worker (datasets' map pool, XTuner's packing) inherited the handler: it must
        # die of the signal as it expects, not raise inside the pool's queue code and hang it.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Interrupted(signum)


def install() -> dict:
    """Make SIGTERM and SIGHUP raise :class:`Interrupted` in this process's main thread.

    Returns the previous handlers for :func:`restore` (a no-op off the main thread).
    """
    global _installed_in
    if threading.current_thread() is not threading.main_thread():
        return {}
    _installed_in = os.getpid()
    previous = {}
    for signum in HANDLED:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup's SIGHUP stays ignored
            previous[signum] = signal.signal(signum, _raise)
    return previous


def restore(previous: dict) -> None:
    """Put back the handlers :func:`install` replaced (a command run in-process leaves none behind)."""
    for signum, handler in previous.items():
        signal.signal(signum, handler)
