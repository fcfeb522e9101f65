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


@contextlib.contextmanager
def hushed(verbose: bool) -> Iterator[None]:
    """While the block runs: library loggers at ERROR, library warnings ignored (all as they were after)."""
    if verbose:
        yield
        return
    levels = {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    set_env = "TRANSFORMERS_VERBOSITY" not in os.environ  # read by transformers when it is first imported
    if set_env:
        os.environ["TRANSFORMERS_VERBOSITY"] = SET_HERE["TRANSFORMERS_VERBOSITY"] = "error"
    try:
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            for category in (FutureWarning, DeprecationWarning, UserWarning):
                warnings.filterwarnings("ignore", category=category)
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if set_env:
            os.environ.pop("TRANSFORMERS_VERBOSITY", None)
            SET_HERE.pop("TRANSFORMERS_VERBOSITY", None)
