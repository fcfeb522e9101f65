"""Every input record is either written or rejected, and each reject says why.

``Tally`` keeps the counts (``read == written + rejected``), ``RejectSink``
writes the rejected records to ``OUT.rejects.jsonl`` with their source file,
index and reason, and ``write_report`` writes the ``--report`` JSON.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from pathlib import Path
from typing import Any

from tianji_ft.data.jsonfast import dumps_line
from tianji_ft.data.schema import Gather
from tianji_ft.core.errors import UserError
from tianji_ft.core.fsio import atomic_open, write_json


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

    def add(self, source: Any, index: int, reason: str, record: Any = None, detail: str = "", **extra) -> None:
        self.count += 1
        if self.path is None:
            return
        if self._fh is None:
            self._ctx = atomic_open(self.path, "wb")
            self._fh = Gather(self._ctx.__enter__())  # a few large writes, not one per reject
        entry = {"source": str(source), "index": index, "reason": reason}
        if detail:
            entry["detail"] = detail
        entry.update(extra)
        entry["record"] = record
        self._fh.write(dumps_line(entry))

    def __enter__(self) -> "RejectSink":
        return self

    def __exit__(self, *exc) -> bool:
        if self._ctx is not None:
            try:
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


def refuse_overwrite(inputs, *outputs) -> None:
    """Stop before an output would replace one of the inputs."""
    resolved = {Path(p).resolve() for p in inputs}
    for out in outputs:
        if out is not None and Path(out).resolve() in resolved:
            raise UserError(f"{out}: would overwrite an input file; choose another output path")
