"""Numbered stages with one status line each: the runner the pipeline and the demo share."""

from __future__ import annotations

import sys
import time
from typing import Callable

from tianji_ft.core.errors import StepFailed, UserError


class Stages:
    """``[n/total] name    summary (time)`` per stage; a failure prints its line and raises
    :class:`StepFailed` naming the stage. ``results`` keeps each stage's outcome (for ``--json``)."""

    def __init__(self, names: list[str], out=sys.stdout):
        self.names, self.out = list(names), out
        self.results: list[dict] = []

    def label(self, name: str) -> str:
        return f"[{self.names.index(name) + 1}/{len(self.names)}] {name:<8}"

    def say(self, name: str, text: str, status: str | None = None, seconds: float | None = None) -> None:
        """One line for stage ``name``; with ``status`` (ran, skipped, not run, failed) it is its outcome."""
        print(f"{self.label(name)} {text}", file=self.out, flush=True)
        if status:
            self.results.append({"stage": name, "status": status, "summary": text,
                                 "seconds": None if seconds is None else round(seconds, 1)})

    def run(self, name: str, fn: Callable[[], str]) -> str:
        start = time.monotonic()
        try:
            summary = fn()
        except (StepFailed, UserError) as err:
            seconds = time.monotonic() - start
            self.say(name, f"FAILED after {seconds:.1f}s: {err}")
            self.results.append({"stage": name, "status": "failed", "summary": str(err), "seconds": round(seconds, 1)})
            if isinstance(err, StepFailed):
                raise
            raise StepFailed(name, err.exit_code or 1, str(err)) from None
        seconds = time.monotonic() - start
        print(f"{self.label(name)} {summary} ({seconds:.1f}s)", file=self.out, flush=True)
        self.results.append({"stage": name, "status": "ran", "summary": summary, "seconds": round(seconds, 1)})
        return summary
