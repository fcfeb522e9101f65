"""SIGTERM/SIGHUP as interrupts in the command's process, and nowhere else."""

from __future__ import annotations

import multiprocessing
import signal
import time

from tianji_ft.cli import main
from tianji_ft.core import signals


def _sleep():
    time.sleep(60)


def test_a_forked_worker_dies_of_sigterm_as_pools_expect():
    # datasets' map pool (XTuner's packing) forks workers and terminates them with SIGTERM;
    # a worker that raised instead of dying hung the pool in its queue locks.
    previous = signals.install()
    try:
        worker = multiprocessing.get_context("fork").Process(target=_sleep)
        worker.start()
        time.sleep(0.2)
        worker.terminate()
        worker.join(timeout=10)
        assert worker.exitcode == -signal.SIGTERM
    finally:
        signals.restore(previous)


def test_the_command_itself_gets_interrupted_and_leaves_no_handler_behind(capsys):
    before = signal.getsignal(signal.SIGTERM)
    previous = signals.install()
    try:
        signal.raise_signal(signal.SIGTERM)
    except signals.Interrupted as err:
        assert signals.exit_code(err) == 143 and signals.signal_name(err) == "SIGTERM"
    else:
        raise AssertionError("SIGTERM did not interrupt")
    finally:
        signals.restore(previous)
    assert main(["data", "kinds"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before
