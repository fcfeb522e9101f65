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


def _caught(logger: logging.Logger) -> list[str]:
    seen: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    logger.addHandler(Catch())
    return seen


def test_a_logger_that_sets_its_own_level_on_import_is_still_hushed():
    ds = logging.getLogger("DeepSpeed")
    seen = _caught(ds)
    with noise.hushed(False):
        ds.setLevel(logging.INFO)  # what DeepSpeed's LoggerFactory does when it is imported
        ds.warning("Setting accelerator to CPU")
        ds.error("a real failure")
    ds.warning("after the command")
    assert seen == ["a real failure", "after the command"]


def test_mmengine_s_current_logger_says_only_errors_while_hushed(capsys):
    import uuid

    from mmengine.logging import MMLogger, print_log

    # a logger of its own, made now, is the current one and writes to this test's captured stdout
    logger = MMLogger.get_instance(f"noise-test-{uuid.uuid4().hex}")
    assert MMLogger.get_current_instance() is logger
    with noise.hushed(False):
        noise.quiet_mmengine()
        print_log("dataset cache hit, loaded 8 rows", logger="current")
        print_log("the build failed", logger="current", level=logging.ERROR)
    shown = capsys.readouterr()
    assert "dataset cache hit" not in shown.out + shown.err and "the build failed" in shown.out + shown.err
    fresh = MMLogger.get_instance(f"noise-test-{uuid.uuid4().hex}")
    levels = [h.level for h in fresh.handlers]
    noise.quiet_mmengine()  # not hushed: a no-op
    assert [h.level for h in fresh.handlers] == levels
