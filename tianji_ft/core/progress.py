"""Progress for long steps: an updating bar on a terminal, a status line every so often otherwise.

Merging a 7B model, exporting GGUF, evaluating hundreds of prompts or
converting millions of records would otherwise print nothing until they end.
Output goes to stderr, never into JSON on stdout; ``quiet`` silences it.
The synthesis client has its own (requests, tokens, cost): :mod:`tianji_ft.synth.progress`.
"""

from __future__ import annotations

import sys
import time

UNITS = {"B": (1 << 20, "MB"), "": (1, "")}


class Progress:
    """``with Progress("merge", total_bytes, unit="B") as p: p.update(n)``.

    On a terminal one line is redrawn in place (``\r``, at most ten times a second); elsewhere a
    status line is printed every ``interval`` seconds; ``quiet`` prints nothing.
    """

    def __init__(self, label: str, total: int | None, unit: str = "", stream=None, interval: float = 10.0,
                 quiet: bool = False, use_bar: bool | None = None, note=None):
        self.label, self.total, self.unit = label, total, unit
        self.note = note  # elapsed seconds -> more to say (e.g. tokens/s), or None
        self.stream = stream or sys.stderr
        self.interval, self.quiet = interval, quiet
        self.done = 0
        self._start = self._last = time.monotonic()
        if use_bar is None:
            use_bar = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = use_bar and not quiet
        self._drawn = 0
        if self.bar:
            self._draw()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.bar:
            if now - self._last >= 0.1 or (self.total and self.done >= self.total):
                self._last = now
                self._draw()
        elif not self.quiet and now - self._last >= self.interval:
            self._last = now
            print(self.status_line(), file=self.stream, flush=True)

    def _draw(self) -> None:
        line = self.status_line()
        if self.total:
            filled = int(20 * min(1.0, self.done / self.total))
            line = f"{line} [{'#' * filled}{'.' * (20 - filled)}]"
        self.stream.write("\r" + line.ljust(self._drawn))
        self.stream.flush()
        self._drawn = len(line)

    def status_line(self) -> str:
        divisor, shown = UNITS.get(self.unit, (1, self.unit))
        elapsed = max(time.monotonic() - self._start, 1e-9)
        amount = (lambda n: f"{n:,}") if divisor == 1 else (lambda n: f"{n / divisor:,.1f}")
        done = amount(self.done) + (f"/{amount(self.total)}" if self.total else "")
        line = f"{self.label}: {done} {shown or 'done'}, {self.done / divisor / elapsed:,.1f} {shown or 'items'}/s"
        if self.note is not None:
            line += f", {self.note(elapsed)}"
        if self.total:
            line += f", {100 * self.done / self.total:.0f}%"
            if self.done >= self.total / 100:  # an ETA from the first crumbs of work would be noise
                line += f", ETA {max(0.0, elapsed * (self.total - self.done) / self.done):.0f}s"
        return line

    def close(self) -> None:
        if self.bar and self._drawn:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
            self.bar = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
