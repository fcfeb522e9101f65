"""Live training progress: what ``train.log`` says, shown while it says it.

XTuner's runner (mmengine) writes an ``Iter(train) [i/N]  lr: ...  eta: ...
time: ...  loss: ...`` line every logging interval into ``train.log``, along
with the phases around it (the dataset build, the sample answers the
evaluation hook writes, checkpoints). A foreground ``tianji-ft train`` follows
the file: one updating line on a terminal, a plain line per event otherwise.
``tianji-ft status`` reads the last iteration line (:func:`last_progress`).
"""

from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path
from typing import Callable

ITER_LINE = re.compile(r"(?:Iter|Epoch)\(train\)\s*(?:\[\s*\d+\]\s*)?\[\s*(\d+)/(\d+)\]\s+(.*)")
FIELD = re.compile(r"([A-Za-z_][\w/]*):\s+(\S+)")
# Log lines that name a phase of the run, and how to say it.
PHASES = (
    ("dataset preparation", lambda line: line[line.index("dataset preparation"):]),
    ("dataset cache hit", lambda line: "dataset: loaded from the cache"),
    ("dataset cache miss", lambda line: "dataset: tokenized and packed"),
    ("before_train in EvaluateChatHook", lambda line: "sample answers before training"),
    ("after_train_iter in EvaluateChatHook", lambda line: "sample answers"),
    ("after_train in EvaluateChatHook", lambda line: "sample answers after training"),
    ("Checkpoints will be saved to", lambda line: "training started"),
    ("Saving checkpoint at", lambda line: line[line.index("Saving checkpoint at"):].replace("Saving", "saving")),
)


def parse_iter_line(line: str) -> dict | None:
    """``{"iter", "max_iters", "lr", "eta", "time", "loss", ...}`` of an mmengine training line, else None."""
    found = ITER_LINE.search(line)
    if not found:
        return None
    info: dict = {"iter": int(found.group(1)), "max_iters": int(found.group(2))}
    for key, value in FIELD.findall(found.group(3)):
        try:
            info[key] = float(value)
        except ValueError:
            info[key] = value  # eta: 0:01:02
    return info


def last_progress(log_path: str | Path, tail_bytes: int = 256 * 1024) -> dict | None:
    """The last iteration line of ``log_path``, parsed; None when there is none yet."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - tail_bytes))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        info = parse_iter_line(line)
        if info:
            return info
    return None


def describe(info: dict, tokens_per_iter: float | None = None) -> str:
    """``iter 40/100 (40%), loss 1.234, lr 2.0e-04, 3,456 tokens/s, ETA 0:05:12``."""
    parts = [f"iter {info['iter']}/{info['max_iters']} ({100 * info['iter'] / max(info['max_iters'], 1):.0f}%)"]
    if isinstance(info.get("loss"), float):
        parts.append(f"loss {info['loss']:.4f}")
    if isinstance(info.get("lr"), float):
        parts.append(f"lr {info['lr']:.1e}")
    if isinstance(info.get("tokens_per_sec"), float):
        parts.append(f"{info['tokens_per_sec']:,.0f} tokens/s")
    elif tokens_per_iter and isinstance(info.get("time"), float) and info["time"] > 0:
        parts.append(f"{tokens_per_iter / info['time']:,.0f} tokens/s")
    if isinstance(info.get("eta"), str):
        parts.append(f"ETA {info['eta']}")
    return ", ".join(parts)


def event_of(line: str) -> tuple[str, dict | None] | None:
    """What a log line means for the person watching: (text, iteration info or None), or None."""
    info = parse_iter_line(line)
    if info:
        return "", info
    for marker, say in PHASES:
        if marker in line:
            return say(line.rstrip()), None
    return None


class LiveProgress:
    """Follow ``log_path`` from its current end while the run writes it (a background thread).

    ``tokens_per_iter`` (called once, at the first iteration line) gives the
    tokens an iteration trains, for a tokens/s figure where the log has none.
    """

    def __init__(self, log_path: str | Path, stream=None, quiet: bool = False, poll_s: float = 0.5,
                 tokens_per_iter: Callable[[], float | None] | None = None, prefix: str = "[tianji-ft] "):
        self.path = Path(log_path)
        self.stream = stream or sys.stderr
        self.quiet, self.poll_s, self.prefix = quiet, poll_s, prefix
        self._tokens_source = tokens_per_iter
        self._tokens: float | None = None
        self._asked_tokens = False
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._drawn = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._offset = self.path.stat().st_size if self.path.is_file() else 0
        self.last: dict | None = None

    def __enter__(self) -> "LiveProgress":
        if not self.quiet:
            self._thread = threading.Thread(target=self._follow, name="train-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = 0

    def _follow(self) -> None:
        pending = b""
        while True:
            stopping = self._stop.is_set()  # read once more after the stop, for the last lines
            pending = self._read_new(pending)
            if stopping:
                return
            self._stop.wait(self.poll_s)

    def _read_new(self, pending: bytes) -> bytes:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except OSError:
            return pending
        self._offset += len(data)
        *lines, pending = (pending + data).split(b"\n")
        for raw in lines:
            event = event_of(raw.decode("utf-8", "replace"))
            if event:
                self.show(*event)
        return pending

    def _tokens_per_iter(self) -> float | None:
        if not self._asked_tokens and self._tokens_source is not None:
            self._asked_tokens = True
            try:
                self._tokens = self._tokens_source()
            except Exception:  # a figure for the eye: never let it stop the run's output
                self._tokens = None
        return self._tokens

    def show(self, text: str, info: dict | None) -> None:
        if info is not None:
            self.last = info
            text = describe(info, self._tokens_per_iter())
        if self.tty:
            line = f"{self.prefix}{text}"
            self.stream.write("\r" + line.ljust(self._drawn))
            self._drawn = len(line)
        else:
            self.stream.write(f"{self.prefix}{text}\n")
        self.stream.flush()
