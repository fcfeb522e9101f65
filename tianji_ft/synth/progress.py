"""Progress on stderr: a tqdm bar on a terminal, a periodic status line otherwise."""

from __future__ import annotations

import sys
import threading
import time


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """Counts requests done and failed, tokens and cost; thread-safe."""

    def __init__(self, total: int, price_in: float = 0.0, price_out: float = 0.0,
                 stream=None, interval: float = 10.0, use_bar: bool | None = None):
        self.total = total
        self.price_in = price_in
        self.price_out = price_out
        self.stream = stream or sys.stderr
        self.interval = interval
        self.done = self.failed = self.tokens_in = self.tokens_out = 0
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last_line = self._start
        if use_bar is None:
            use_bar = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._bar = None
        if use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, file=self.stream, unit="req", dynamic_ncols=True)

    @property
    def cost(self) -> float:
        # Prices are per million tokens, as DeepSeek and Zhipu quote them.
        return (self.tokens_in * self.price_in + self.tokens_out * self.price_out) / 1e6

    def _stats(self) -> str:
        text = f"done {self.done}, failed {self.failed}, tokens in {self.tokens_in:,} out {self.tokens_out:,}"
        if self.price_in or self.price_out:
            text += f", cost {self.cost:.4f}"
        return text

    def status_line(self) -> str:
        finished = self.done + self.failed
        elapsed = time.monotonic() - self._start
        eta = elapsed / finished * (self.total - finished) if finished else None
        line = f"synth: {finished}/{self.total} requests, {self._stats()}, elapsed {format_duration(elapsed)}"
        return line + (f", ETA {format_duration(eta)}" if eta is not None else "")

    def record(self, ok: bool, tokens_in: int = 0, tokens_out: int = 0) -> None:
        with self._lock:
            if ok:
                self.done += 1
            else:
                self.failed += 1
            self.tokens_in += tokens_in
            self.tokens_out += tokens_out
            if self._bar is not None:
                self._bar.set_postfix_str(self._stats(), refresh=False)
                self._bar.update(1)
            elif time.monotonic() - self._last_line >= self.interval:
                self._last_line = time.monotonic()
                print(self.status_line(), file=self.stream, flush=True)

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
