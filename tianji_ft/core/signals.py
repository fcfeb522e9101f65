"""SIGTERM and SIGHUP end a command the way Ctrl-C does.

Python turns SIGINT into :class:`KeyboardInterrupt`, so every ``finally`` and
``except BaseException`` (atomic writes removing their temporary files, a run
recording how it ended) runs. SIGTERM (``timeout``, ``kill``, a scheduler)
and SIGHUP (a closed terminal) would instead end the process on the spot and
leave hidden ``.OUT.*.tmp`` files behind; :func:`install` makes them raise
:class:`Interrupted` in the main thread instead.
"""

from __future__ import annotations

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


def _raise(signum, frame):
    raise Interrupted(signum)


def install() -> None:
    """Make SIGTERM and SIGHUP raise :class:`Interrupted` (main thread only; a no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in HANDLED:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup's SIGHUP stays ignored
            signal.signal(signum, _raise)
