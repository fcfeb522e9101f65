"""An append-only JSONL journal of finished requests, safe against SIGKILL.

Each entry is written with one ``write`` and fsync'd before the request
counts as saved. A kill in the middle of a write leaves a torn last line
without its newline; loading detects it, cuts it off, and the item is simply
requested again (its answer was never saved, so nothing is paid twice).
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
from pathlib import Path

from tianji_ft.core.errors import UserError


class Journal:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fh = None

    def load(self, repair: bool = True) -> list[dict]:
        """Read every complete entry; with ``repair``, fix a torn tail so appends start on a fresh line."""
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        body, sep, tail = raw.rpartition(b"\n")
        if not sep:
            body, tail = b"", raw
        entries, bad = [], 0
        for line in body.split(b"\n") if body else []:
            entry = _parse(line)
            if entry is None:
                bad += 1
            else:
                entries.append(entry)
        if tail:
            entry = _parse(tail)
            if entry is not None:  # complete entry, only its newline was lost
                entries.append(entry)
                if repair:
                    with open(self.path, "ab") as fh:
                        fh.write(b"\n")
            elif repair:
                with open(self.path, "r+b") as fh:
                    fh.truncate(len(raw) - len(tail))
        if bad:
            print(f"tianji-ft: warning: {self.path}: {bad} unreadable line(s) ignored; their items will be requested again", file=sys.stderr)
        return entries

    def append(self, entry: dict) -> None:
        data = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "ab", buffering=0)
            self._fh.write(data)
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def _parse(line: bytes):
    if not line.strip():
        return None
    try:
        entry = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return entry if isinstance(entry, dict) and "id" in entry and "status" in entry else None


class DirLock:
    """An exclusive lock on an output folder, so two runs never pay for the same item."""

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / ".synth.lock"
        self._fd = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"another run is writing to {self.path.parent}; wait for it to finish or choose another -o") from None
        self._fd = fd
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
