"""Writers of record files: atomic, in large blocks, the encoding done on a second thread."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tianji_ft.core.jsonfast import dumps, dumps_line, dumps_lines
from tianji_ft.core.errors import UserError
from tianji_ft.core.fsio import atomic_open
from tianji_ft.data.schema import JSON_SUFFIXES

# ----------------------------------------------------------------- writing

def check_output_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in JSON_SUFFIXES:
        raise UserError(f"{path}: output must end in .jsonl (one record a line) or .json (an array)")
    return path


class Gather:
    """Writes to ``fh`` gathered into blocks of a MiB, which a background
    thread writes while the caller goes on converting (a write system call
    releases the GIL, and copying into the page cache costs about as much
    CPU as the JSON). Few large writes cost the kernel less than many small.

    Use as a context manager: on a clean exit everything is written; an
    error in the thread is raised in the caller at the next block or the end.
    """

    SIZE = 1 << 20  # larger blocks measured no faster, and cost memory

    def __init__(self, fh):
        self.fh = fh
        self._parts: list[bytes] = []
        self._size = 0
        self._queue = None
        self._thread = None
        self._error = None

    def __enter__(self) -> "Gather":
        return self

    def write(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)
        if self._size >= self.SIZE:
            self._hand_over()

    def _hand_over(self) -> None:
        if self._error is not None:
            raise self._error
        if self._thread is None:  # small outputs never start one
            import queue
            import threading

            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._run, name="tianji-ft writer", daemon=True)
            self._thread.start()
        self._queue.join()  # one block at a time in the thread: memory stays the same however long the run
        self._queue.put(self._parts)
        self._parts, self._size = [], 0

    def _run(self) -> None:
        while (parts := self._queue.get()) is not None:
            if self._error is None:
                try:
                    _write_all(self.fh, parts)
                except BaseException as err:  # raised again in the caller
                    self._error = err
                parts.clear()
            self._queue.task_done()

    def __exit__(self, *exc) -> bool:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if exc[0] is None:
            if self._error is not None:
                raise self._error
            _write_all(self.fh, self._parts)
        self._parts = []
        return False


def _write_all(fh, parts: list[bytes]) -> None:
    """``parts`` into ``fh``, in one system call and without a joined copy where the platform allows."""
    if 1 < len(parts) <= 1024 and hasattr(os, "writev"):  # 1024: IOV_MAX on Linux
        fh.flush()
        done = os.writev(fh.fileno(), parts)
        if done == sum(map(len, parts)):
            return
        parts = [b"".join(parts)[done:]]  # a short write: the rest the usual way
    fh.write(b"".join(parts))


class RecordWriter:
    """Write records to ``.jsonl`` (one a line) or ``.json`` (an array, one
    record a line), atomically: the file appears complete or not at all.

    Use as a context manager; an exception inside leaves ``path`` untouched.
    :meth:`finish` writes everything out (so a full disk shows before any
    file of a set is renamed into place); :meth:`discard` drops the output.
    """

    _BATCH = 256  # lines joined at a time: a write call per line costs more than the JSON

    def __init__(self, path: str | Path):
        self.path = check_output_path(path)
        self.array = self.path.suffix.lower() == ".json"
        self._ctx = atomic_open(self.path, "wb")
        self._out = None
        self._fh = None
        self._pending: list[bytes] = []
        self._flushed = 0
        self._finished = False
        self._discarded = False

    @property
    def count(self) -> int:
        """Records written so far."""
        return self._flushed + len(self._pending)

    def __enter__(self) -> "RecordWriter":
        self._fh = self._ctx.__enter__()
        self._out = Gather(self._fh)
        if self.array:
            self._out.write(b"[")
        else:
            self.write = self._line_writer()  # the hot path: no per-record branching
        return self

    def _line_writer(self):
        pending, add, batch = self._pending, self._pending.append, self._BATCH

        def write(record: Any) -> None:
            add(dumps_line(record))
            if len(pending) >= batch:
                self._flush()

        return write

    def _flush(self) -> None:
        if self._pending:
            self._out.write(b"".join(self._pending))
            self._flushed += len(self._pending)
            self._pending.clear()

    def write_many(self, records: list) -> None:
        """Write ``records`` in order (for JSONL, serialised in one C loop)."""
        if not records:
            return
        if self.array:
            self._out.write((b",\n" if self._flushed else b"\n") + b",\n".join(map(dumps, records)))
        else:
            self._flush()
            self._out.write(dumps_lines(records))
        self._flushed += len(records)

    def write(self, record: Any) -> None:
        self._out.write((b",\n" if self._flushed else b"\n") + dumps(record))
        self._flushed += 1

    def finish(self) -> None:
        """Write all records out to the temporary file and sync it; the rename waits for the exit."""
        if self._finished:
            return
        self._flush()
        if self.array:
            self._out.write(b"\n]\n" if self.count else b"]\n")
        self._out.__exit__(None, None, None)
        self._finished = True
        if not self._discarded:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def discard(self) -> None:
        """Write nothing: at the exit the temporary file goes, and so does an
        earlier ``path`` (so no stale output outlives a run that kept nothing)."""
        self._discarded = True

    def __exit__(self, *exc) -> bool:
        if exc[0] is None:
            try:
                self.finish()
            except BaseException as err:  # e.g. a full disk: the file is not replaced
                self._ctx.__exit__(type(err), err, err.__traceback__)
                raise
            if self._discarded:
                self._ctx.__exit__(_Discarded, _Discarded(), None)  # removes the temporary file
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                return False
        elif not self._finished:
            self._out.__exit__(*exc)
        return bool(self._ctx.__exit__(*exc))


class _Discarded(Exception):
    """Thrown into an atomic write to drop it."""


def write_records(path: str | Path, records) -> int:
    """Write an iterable of records to ``path``; return how many."""
    with RecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    return writer.count
