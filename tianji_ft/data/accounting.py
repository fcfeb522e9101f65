"""Every input record is either written or rejected, and each reject says why.

``Tally`` keeps the counts (``read == written + rejected``), ``RejectSink``
writes the rejected records to ``OUT.rejects.jsonl`` with their source file,
index and reason, and ``write_report`` writes the ``--report`` JSON.

Rules every writing command shares:

- :func:`outputs_of` lists what a command writes (OUT, its rejects file,
  ``--report``) for :func:`tianji_ft.core.outputs.check_outputs`, called once
  before anything is read or written;
- a record holding a lone surrogate (a ``\\ud800`` escape without its pair:
  not Unicode) is rejected with the reason ``lone surrogate`` before any
  converter sees it (:func:`screened`);
- a run that keeps no record writes no output file and raises
  :class:`NoRecordKept` (exit code 3) after writing the rejects file and the
  report, so the user sees why.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter, deque
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from tianji_ft.core.jsonfast import dumps_line, encodes
from tianji_ft.data.schema import lone_surrogate, surrogate_problem
from tianji_ft.data.writer import Gather
from tianji_ft.core.errors import UserError
from tianji_ft.core.fsio import atomic_open, write_json
from tianji_ft.core.outputs import Output

EXIT_NO_RECORD = 3  # the run kept no record: nothing to train on
SURROGATE_REASON = "lone surrogate"


class Rejected:
    """A converter's verdict that one input record cannot be used, and why.

    ``reason`` is a short fixed phrase (it is counted in the report);
    ``detail`` is free text for the rejects file.
    """

    __slots__ = ("reason", "detail")

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail

    def __repr__(self) -> str:
        return f"Rejected({self.reason!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Rejected) and (self.reason, self.detail) == (other.reason, other.detail)


class Reject(Exception):
    """Raised inside a per-record function; becomes a :class:`Rejected`."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class Tally:
    """Counts of one run. ``notes`` counts changes made to records that were
    still written (e.g. a trailing unanswered turn dropped)."""

    def __init__(self):
        self.read = 0
        self.written = 0
        self.rejected = 0
        self.reasons: Counter = Counter()
        self.notes: Counter = Counter()

    def reject(self, reason: str, n: int = 1) -> None:
        self.rejected += n
        self.reasons[reason] += n

    def as_dict(self) -> dict:
        report = {"read": self.read, "written": self.written, "rejected": self.rejected,
                  "reasons": dict(self.reasons.most_common())}
        if self.notes:
            report["notes"] = dict(self.notes.most_common())
        return report

    def line(self) -> str:
        text = f"read {self.read}, written {self.written}, rejected {self.rejected}"
        if self.reasons:
            text += " (" + ", ".join(f"{r}: {n}" for r, n in self.reasons.most_common()) + ")"
        if self.notes:
            text += "; " + ", ".join(f"{r}: {n}" for r, n in self.notes.most_common())
        return text

    def check(self) -> None:
        if self.read != self.written + self.rejected:  # a bug, not a user error
            raise AssertionError(f"record accounting is off: {self.line()}")


def rejects_path(out: str | Path) -> Path:
    """``data/train.jsonl`` -> ``data/train.rejects.jsonl``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.rejects.jsonl")


class RejectSink:
    """Collects rejected records into ``path`` (written atomically at the end).

    If nothing was rejected, no file is written and a stale one from an
    earlier run is removed, so the file on disk always matches the report.
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self.count = 0
        self._ctx = None
        self._fh = None
        self._file = None
        self._finished = False

    def add(self, source: Any, index: int, reason: str, record: Any = None, detail: str = "", **extra) -> None:
        self.count += 1
        if self.path is None:
            return
        if self._fh is None:
            self._ctx = atomic_open(self.path, "wb")
            self._file = self._ctx.__enter__()
            self._fh = Gather(self._file)  # a few large writes, not one per reject
        entry = {"source": str(source), "index": index, "reason": reason}
        if detail:
            entry["detail"] = detail
        entry.update(extra)
        entry["record"] = record
        self._fh.write(dumps_line(entry))

    def __enter__(self) -> "RejectSink":
        return self

    def finish(self) -> None:
        """Write everything out to the temporary file and sync it; the rename waits for the exit."""
        if self._ctx is not None and not self._finished:
            self._fh.__exit__(None, None, None)
            self._finished = True
            self._file.flush()
            os.fsync(self._file.fileno())

    def __exit__(self, *exc) -> bool:
        if self._ctx is not None:
            try:
                if exc[0] is None:
                    self.finish()
                elif not self._finished:
                    self._fh.__exit__(*exc)
            except BaseException as err:  # the file is not replaced
                self._ctx.__exit__(type(err), err, err.__traceback__)
                raise
            return bool(self._ctx.__exit__(*exc))
        if exc[0] is None and self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        return False


def write_report(path: str | Path | None, tally: Tally) -> None:
    if path is not None:
        write_json(path, tally.as_dict())


def settle(writer, sink, tally: Tally) -> None:
    """Inside the writers' ``with``: count what was written, check every row is accounted for,
    drop an empty output, and have both files written out before either is renamed into place."""
    tally.written = writer.count
    tally.check()
    if not tally.written:
        writer.discard()
    writer.finish()
    sink.finish()


def report_kept(report: str | Path | None, tally: Tally, out: str | Path, rejects: str | Path | None) -> None:
    """After the writers closed: the ``--report``, then :class:`NoRecordKept` when nothing was kept."""
    write_report(report, tally)
    if not tally.written:
        raise NoRecordKept(out, tally, rejects)


def outputs_of(out: str | Path, report: str | Path | None = None) -> list[Output]:
    """What a converting command writes: OUT, its rejects file, and ``--report``."""
    return [Output(out, "-o"), Output(rejects_path(out), "rejects file"), Output(report, "--report")]


class NoRecordKept(UserError):
    """Every record was rejected (or there were none): there is nothing to train on.

    Raised after the rejects file and the report are written; no output file
    is (an earlier one at that path is removed, so it cannot pass for this
    run's). ``tally`` holds the counts.
    """

    def __init__(self, out: str | Path, tally: Tally, rejects: str | Path | None = None):
        why = f"; the reasons are in {rejects}" if rejects is not None and Path(rejects).exists() else ""
        super().__init__(f"{out}: no record kept ({tally.line()}){why}; no output file was written", EXIT_NO_RECORD)
        self.tally = tally


def surrogate_reject(row: Any) -> Rejected | None:
    """A :class:`Rejected` for a row holding a lone surrogate; None for one that is all Unicode."""
    found = lone_surrogate(row)
    return Rejected(SURROGATE_REASON, surrogate_problem(*found)) if found else None


def screened(batches: Iterable[list], transform: Callable[[Iterator], Iterator]) -> Iterator:
    """``transform`` over the rows of ``batches`` (lists of rows), one result
    per row in order; a row holding a lone surrogate never reaches it and
    gets a ``Rejected("lone surrogate")`` in its place.

    One check covers a whole batch in the usual case (orjson serialises it:
    no surrogate in it), so the rows still stream through at full speed.
    """
    runs: deque = deque()  # per stretch of rows read: how many went to the transform, or a Rejected

    def passed() -> Iterator:
        for rows in batches:
            if encodes(rows):
                runs.append(len(rows))
                yield from rows
                continue
            for row in rows:
                verdict = surrogate_reject(row)
                if verdict is None:
                    runs.append(1)
                    yield row
                else:
                    runs.append(verdict)

    results = iter(transform(passed()))
    while True:
        if not runs:  # take a result: the transform reads at least the row it answers
            try:
                first = next(results)
            except StopIteration:  # rows rejected after the transform's last one
                while runs and runs[0].__class__ is not int:
                    yield runs.popleft()
                return
            while runs and runs[0].__class__ is not int:  # rows rejected before that one
                yield runs.popleft()
            if not runs:
                raise AssertionError("the transform yielded more results than it read rows")
            yield first
            if runs[0] == 1:
                runs.popleft()
            else:
                runs[0] -= 1
            continue
        head = runs.popleft()
        if head.__class__ is int:
            yield from islice(results, head)  # a transform that stops short is caught by the caller's count
        else:
            yield head
