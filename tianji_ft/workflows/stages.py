"""Numbered stages with one status line each: the runner the pipeline and the demo share."""

from __future__ import annotations

import sys
import time
from typing import Callable

from tianji_ft.core.errors import StepFailed, UserError


class Stages:
    """``[n/total] name    summary (time)`` per stage; a failure prints its line and raises
    :class:`StepFailed` naming the stage."""

    def __init__(self, names: list[str], out=sys.stdout):
        self.names, self.out = list(names), out

    def label(self, name: str) -> str:
        return f"[{self.names.index(name) + 1}/{len(self.names)}] {name:<8}"

    def say(self, name: str, text: str) -> None:
        print(f"{self.label(name)} {text}", file=self.out, flush=True)

    def run(self, name: str, fn: Callable[[], str]) -> str:
        start = time.monotonic()
        try:
            summary = fn()
        except (StepFailed, UserError) as err:
            self.say(name, f"FAILED after {time.monotonic() - start:.1f}s: {err}")
            if isinstance(err, StepFailed):
                raise
            raise StepFailed(name, err.exit_code or 1, str(err)) from None
        self.say(name, f"{summary} ({time.monotonic() - start:.1f}s)")
        return summary
