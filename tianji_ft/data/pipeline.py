"""Run a one-result-per-record transform over files, accounting for every record.

``process`` is the shared engine of ``convert``, ``clean`` and ``dedupe``:
it streams rows from the sources, feeds them to the transform, writes kept
records to OUT and rejected ones (with source file, index and reason) to
``OUT.rejects.jsonl``, both atomically, and never touches the inputs.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from tianji_ft.data.accounting import RejectSink, Rejected, Tally, refuse_overwrite, rejects_path, write_report
from tianji_ft.data.registry import get_converter
from tianji_ft.data.schema import RecordWriter, check_output_path, iter_records
from tianji_ft.data.sources import expand_sources, read_rows
from tianji_ft.utils.errors import UserError

Reader = Callable[[Path], Iterable[tuple[int, Any]]]
Transform = Callable[[Iterator], Iterator]


def check_fields(source: Path, row: Any, fields: Iterable[str], hint: str = "") -> None:
    """Stop early when a file's first row lacks the fields the converter needs."""
    if not isinstance(row, dict):
        return
    missing = [f for f in fields if f not in row]
    if missing:
        present = ", ".join(map(str, row)) or "none"
        raise UserError(f"{source}: missing column(s) {', '.join(missing)}; columns present: {present}"
                        + (f"; {hint}" if hint else ""))


def process(sources: list[Path], transform: Transform, out: str | Path, *, reader: Reader = iter_records,
            fields: Iterable[str] = (), hint: str = "", tally: Tally | None = None,
            report: str | Path | None = None) -> Tally:
    """Apply ``transform`` (one result per row, in order) to the rows of ``sources``."""
    out = check_output_path(out)
    rejects = rejects_path(out)
    refuse_overwrite(sources, out, rejects)
    tally = tally if tally is not None else Tally()
    fields = tuple(fields)
    origins: deque = deque()  # (source, index, row) of rows read but not yet answered
    read = 0

    def rows() -> Iterator:
        nonlocal read
        push = origins.append
        for source in sources:
            first = True
            for index, row in reader(source):
                if first:
                    check_fields(source, row, fields, hint)
                    first = False
                push((source, index, row))
                read += 1
                yield row

    with RecordWriter(out) as writer, RejectSink(rejects) as sink:
        write, pop = writer.write, origins.popleft
        for result in transform(rows()):
            if result.__class__ is Rejected:
                source, index, row = pop()
                tally.reject(result.reason)
                sink.add(source, index, result.reason, row, result.detail)
            else:
                pop()
                write(result)
        if origins:
            raise AssertionError("the transform yielded fewer results than it read rows")
    tally.read = read
    tally.written = writer.count
    tally.check()
    write_report(report, tally)
    return tally


def convert_files(kind: str, sources: Iterable[str | Path], out: str | Path, *, options: dict | None = None,
                  encoding: str = "utf-8", sheet: str | None = None, report: str | Path | None = None) -> Tally:
    """Convert ``sources`` (files or folders) with converter ``kind`` into ``out``.

    ``options`` are the converter's keyword options (e.g. ``{"system": "..."}``).
    Returns the :class:`Tally`; ``report`` also writes it as JSON.
    """
    conv = get_converter(kind)
    options = dict(options or {})
    unknown = sorted(set(options) - set(conv.defaults()))
    if unknown:
        allowed = ", ".join(conv.defaults()) or "none"
        raise UserError(f"option(s) {', '.join(unknown)} do not apply to '{kind}' (its options: {allowed})")
    out = check_output_path(out)
    files = expand_sources(sources, exclude=[out, rejects_path(out)])
    tally = Tally()
    if conv.takes_notes():
        options["notes"] = tally.notes
    return process(files, lambda rows: conv.func(rows, **options), out,
                   reader=lambda path: read_rows(path, encoding, sheet),
                   fields=conv.required_fields(options), hint=conv.hint, tally=tally, report=report)
