"""Run a one-result-per-record transform over files, accounting for every record.

``process`` is the shared engine of ``convert``, ``clean`` and ``dedupe``:
it checks the outputs against the inputs (one refusal, before anything is
read or written), streams rows from the sources, feeds them to the
transform (rows holding a lone surrogate are rejected first), writes kept
records to OUT and rejected ones (with source file, index and reason) to
``OUT.rejects.jsonl``, both atomically, and never touches the inputs. A run
that keeps no record writes no OUT and raises ``NoRecordKept`` (exit 3).
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from tianji_ft.data.accounting import (RejectSink, Rejected, Tally, outputs_of, rejects_path, report_kept,
                                       screened, settle)
from tianji_ft.data.registry import get_converter
from tianji_ft.data.reader import check_encoding, iter_records
from tianji_ft.data.schema import show
from tianji_ft.data.writer import check_output_path, RecordWriter
from tianji_ft.data.sources import batched, expand_sources, read_batches
from tianji_ft.core.errors import UserError
from tianji_ft.core.progress import Progress
from tianji_ft.core.outputs import check_outputs

_CHUNK = 64  # results taken from the transform at a time: few enough to stay in the CPU cache

Reader = Callable[[Path], Iterable[tuple[int, Any]]]
BatchReader = Callable[[Path], Iterable[tuple[int, list]]]
Transform = Callable[[Iterator], Iterator]


def check_fields(source: Path, row: Any, fields: Iterable[str], hint: str = "") -> None:
    """Stop early when a file's first row lacks the fields the converter needs."""
    if not isinstance(row, dict):
        return
    missing = [f for f in fields if f not in row]
    if missing:
        present = ", ".join(map(show, row)) or "none"
        raise UserError(f"{source}: missing column(s) {', '.join(missing)}; columns present: {present}"
                        + (f"; {hint}" if hint else ""))


def process(sources: list[Path], transform: Transform, out: str | Path, *, reader: Reader = iter_records,
            batch_reader: BatchReader | None = None, fields: Iterable[str] = (), hint: str = "",
            tally: Tally | None = None, report: str | Path | None = None, quiet: bool = True,
            label: str = "convert") -> Tally:
    """Apply ``transform`` (one result per row, in order) to the rows of ``sources``.

    ``reader`` gives a file's ``(index, row)`` pairs; ``batch_reader``, if
    given, its ``(index of the first row, rows)`` batches instead (faster).
    ``quiet=False`` reports records done on stderr while it works, as ``label`` (the command).
    Raises :class:`NoRecordKept` when no record is written.
    """
    out = check_output_path(out)
    rejects = rejects_path(out)
    check_outputs([("input", source) for source in sources], outputs_of(out, report))
    tally = tally if tally is not None else Tally()
    fields = tuple(fields)
    # Batches read but not wholly answered, as [source, first index, rows, rows answered]:
    # results are matched to rows by position, so nothing is kept per row.
    origins: deque = deque()
    read = 0

    def batches() -> Iterator[list]:
        nonlocal read
        for source in sources:
            first = True
            for start, rows in (batch_reader(source) if batch_reader else batched(reader(source))):
                if not rows:
                    continue
                if first:
                    check_fields(source, rows[0], fields, hint)
                    first = False
                origins.append([source, start, rows, 0])
                read += len(rows)
                yield rows

    def locate(pos: int) -> tuple:
        """Source, index and row of the unanswered row ``pos`` places ahead."""
        for source, start, rows, done in origins:
            if pos < len(rows) - done:
                return source, start + done + pos, rows[done + pos]
            pos -= len(rows) - done
        raise AssertionError("the transform yielded more results than it read rows")

    def answered(n: int) -> None:
        while n:
            if not origins:
                raise AssertionError("the transform yielded more results than it read rows")
            batch = origins[0]
            take = min(n, len(batch[2]) - batch[3])
            batch[3] += take
            n -= take
            if batch[3] == len(batch[2]):
                origins.popleft()

    results = screened(batches(), transform)
    with RecordWriter(out) as writer, RejectSink(rejects) as sink, \
            Progress(f"{label} {out.name}", None, unit="records", quiet=quiet) as progress:
        while chunk := list(islice(results, _CHUNK)):
            kinds = list(map(type, chunk))
            if Rejected in kinds:  # log the rejects; write the records around them
                kept, begin = [], 0
                for pos in _positions(kinds, Rejected):
                    kept += chunk[begin:pos]
                    begin = pos + 1
                    source, index, row = locate(pos)
                    tally.reject(chunk[pos].reason)
                    sink.add(source, index, chunk[pos].reason, row, chunk[pos].detail)
                kept += chunk[begin:]
                writer.write_many(kept)
            else:
                writer.write_many(chunk)
            answered(len(chunk))
            progress.update(len(chunk))
        if origins:
            raise AssertionError("the transform yielded fewer results than it read rows")
        tally.read = read
        settle(writer, sink, tally)
    report_kept(report, tally, out, rejects)
    return tally


def _positions(items: list, value) -> Iterator[int]:
    """Where ``value`` is in ``items`` (the search runs in C)."""
    pos = -1
    try:
        while True:
            pos = items.index(value, pos + 1)
            yield pos
    except ValueError:
        return


def convert_files(kind: str, sources: Iterable[str | Path], out: str | Path, *, options: dict | None = None,
                  encoding: str = "utf-8", sheet: str | None = None, report: str | Path | None = None,
                  quiet: bool = True) -> Tally:
    """Convert ``sources`` (files or folders) with converter ``kind`` into ``out``.

    ``options`` are the converter's keyword options (e.g. ``{"system": "..."}``).
    Returns the :class:`Tally`; ``report`` also writes it as JSON. Refuses
    (:class:`UserError`, before anything is written) outputs that are, hold
    or lie inside an input or each other; raises :class:`NoRecordKept`
    (exit code 3) when every record is rejected.
    """
    conv = get_converter(kind)
    options = dict(options or {})
    unknown = sorted(set(options) - set(conv.defaults()))
    if unknown:
        allowed = ", ".join(conv.defaults()) or "none"
        raise UserError(f"option(s) {', '.join(unknown)} do not apply to '{kind}' (its options: {allowed})")
    check_encoding(encoding)
    out = check_output_path(out)
    files = expand_sources(sources, exclude=[p for p in (out, rejects_path(out), report) if p is not None])
    tally = Tally()
    if conv.takes_notes():
        options["notes"] = tally.notes
    return process(files, lambda rows: conv.func(rows, **options), out,
                   batch_reader=lambda path: read_batches(path, encoding, sheet),
                   fields=conv.required_fields(options), hint=conv.hint, tally=tally, report=report, quiet=quiet)
