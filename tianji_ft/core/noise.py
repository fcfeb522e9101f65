"""Third-party warnings and logs stay out of the user's way unless ``-v`` asks for them.

Deprecation notices from transformers, bitsandbytes' CPU-kernel hints and
Python warnings from libraries say nothing a user of ``tianji-ft`` can act on.
They are hidden while a command runs in the CLI's own process; training
children are not touched, so their log files keep everything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Iterator

# Variables set here for this process only; the launcher removes them from a child's environment.
SET_HERE: dict[str, str] = {}
LIBRARY_LOGGERS = ("bitsandbytes", "datasets", "deepspeed", "torch", "peft", "accelerate", "httpx")
# Loggers that set their own level when their library is imported (DeepSpeed's LoggerFactory does):
# a filter, which that leaves alone, keeps them quiet.
SELF_LEVELLING_LOGGERS = ("DeepSpeed",)
_hushed = False


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def quiet_mmengine() -> None:
    """While hushed, mmengine's current logger (made on first use, INFO to the terminal) says only errors.

    Called where this process uses XTuner or mmengine outside a training run (a dry run, a plan)."""
    if not _hushed:
        return
    import logging as _logging

    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    for handler in logger.handlers:
        if not isinstance(handler, _logging.FileHandler):
            handler.setLevel(_logging.ERROR)


@contextlib.contextmanager
def hushed(verbose: bool) -> Iterator[None]:
    """While the block runs: library loggers at ERROR, library warnings ignored (all as they were after)."""
    if verbose:
        yield
        return
    global _hushed
    levels = {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    errors_only = _ErrorsOnly()
    set_env = "TRANSFORMERS_VERBOSITY" not in os.environ  # read by transformers when it is first imported
    if set_env:
        os.environ["TRANSFORMERS_VERBOSITY"] = SET_HERE["TRANSFORMERS_VERBOSITY"] = "error"
    try:
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        for name in SELF_LEVELLING_LOGGERS:
            logging.getLogger(name).addFilter(errors_only)
        _hushed = True
        with warnings.catch_warnings():
            for category in (FutureWarning, DeprecationWarning, UserWarning):
                warnings.filterwarnings("ignore", category=category)
            yield
    finally:
        _hushed = False
        for name in SELF_LEVELLING_LOGGERS:
            logging.getLogger(name).removeFilter(errors_only)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if set_env:
            os.environ.pop("TRANSFORMERS_VERBOSITY", None)
            SET_HERE.pop("TRANSFORMERS_VERBOSITY", None)
