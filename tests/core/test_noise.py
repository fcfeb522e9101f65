"""Library noise is hushed in the CLI's process only: training children and the user's own settings keep theirs."""

from __future__ import annotations

import logging
import os
import warnings

from tianji_ft.core import noise
from tianji_ft.xtuner.runner import launch_env


def test_hushed_hides_library_logs_and_warnings_then_puts_everything_back(monkeypatch):
    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    before = logging.getLogger("bitsandbytes").level
    with noise.hushed(False):
        assert os.environ["TRANSFORMERS_VERBOSITY"] == "error"
        assert logging.getLogger("bitsandbytes").level == logging.ERROR
        with warnings.catch_warnings(record=True) as caught:
            warnings.warn("a library's deprecation", FutureWarning)
        assert caught == []
        assert "TRANSFORMERS_VERBOSITY" not in launch_env()  # a training child logs everything
    assert "TRANSFORMERS_VERBOSITY" not in os.environ and logging.getLogger("bitsandbytes").level == before


def test_the_users_own_verbosity_is_kept_for_children(monkeypatch):
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "error")
    with noise.hushed(False):
        assert launch_env()["TRANSFORMERS_VERBOSITY"] == "error"


def test_verbose_changes_nothing(monkeypatch):
    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    with noise.hushed(True):
        assert "TRANSFORMERS_VERBOSITY" not in os.environ
