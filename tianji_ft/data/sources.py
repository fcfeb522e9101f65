"""Raw input rows from JSON, JSONL, CSV and XLSX files.

``read_rows`` yields ``(index, row)``; ``index`` counts the file's records
from 0. ``read_batches`` yields the same rows a batch at a time. Spreadsheet cells are read as text: no NaN guessing (pandas turns
the answers ``n/a`` and ``NA`` into NaN), and a number in a text column
becomes its text rather than a crash. Wholly empty spreadsheet rows hold no
data and are skipped (a row of blanks is a record, and gets rejected).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
from functools import partial
from itertools import chain, islice
from pathlib import Path
from typing import Any, Iterable, Iterator

from tianji_ft.data.reader import check_encoding, encoding_error, is_jsonl, iter_records, jsonl_batches
from tianji_ft.core.errors import UserError

TABLE_SUFFIXES = (".csv", ".tsv", ".xlsx", ".xlsm", ".xls")
INPUT_SUFFIXES = (".jsonl", ".json") + TABLE_SUFFIXES


def as_text(value: Any) -> str:
    """Any cell or JSON value as text (None -> '', 3.0 -> '3').

    Converters do not pass it JSON arrays or objects: a nested value where
    text is expected rejects the record instead (see
    :func:`tianji_ft.data.converters.text_of`)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value:  # NaN from a numeric source means "no value"
            return ""
        return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
    if isinstance(value, (_dt.date, _dt.time, _dt.datetime)):
        return value.isoformat()
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def expand_sources(paths: Iterable[str | Path], exclude: Iterable[str | Path] = ()) -> list[Path]:
    """Files named, plus the data files inside named folders (sorted, recursive).

    Files in ``exclude`` (the outputs of this run) and ``*.rejects.jsonl``
    files found in folders are left out, so re-running into the same folder
    never reads its own output.
    """
    skip = {Path(p).resolve() for p in exclude}
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in INPUT_SUFFIXES
                           and not f.name.endswith(".rejects.jsonl") and not f.name.startswith("."))
            found = [f for f in found if f.resolve() not in skip]
            if not found:
                raise UserError(f"{p}: folder has no .json, .jsonl, .csv or .xlsx files")
            out.extend(found)
        elif not p.exists():
            raise UserError(f"{p}: no such file or folder")
        else:
            out.append(p)
    return out


def read_rows(path: str | Path, encoding: str = "utf-8", sheet: str | None = None) -> Iterator[tuple[int, Any]]:
    """``(index, row)`` from any supported file; rows of tables are dicts of text."""
    batches = read_batches(path, encoding, sheet)
    return (pair for start, rows in batches for pair in enumerate(rows, start))


def read_batches(path: str | Path, encoding: str = "utf-8", sheet: str | None = None
                 ) -> Iterator[tuple[int, list]]:
    """``(index of the first row, rows)`` from any supported file, a batch at a
    time; the first row comes alone (callers check its fields)."""
    path = Path(path)
    suffix = path.suffix.lower()
    check_encoding(encoding)
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, encoding, "\t" if suffix == ".tsv" else ",")
    if suffix in (".xlsx", ".xlsm", ".xls"):
        return _read_sheet(path, sheet)
    if suffix in (".json", ".jsonl"):
        if is_jsonl(path, encoding):
            return jsonl_batches(path, encoding)
        return batched(iter_records(path, encoding))
    raise UserError(f"{path}: unsupported file type '{suffix}'; use .jsonl, .json, .csv or .xlsx")


def batched(pairs: Iterable[tuple[int, Any]], size: int = 64) -> Iterator[tuple[int, list]]:
    """``(index, row)`` pairs as batches of rows with consecutive indices."""
    pairs = iter(pairs)
    chunk = list(islice(pairs, 1))
    while chunk:
        start = chunk[0][0]
        rows = [row for _, row in chunk]
        if chunk[-1][0] - start == len(chunk) - 1:
            yield start, rows
        else:  # a gap in the indices: one batch per row
            yield from ((index, [row]) for index, row in chunk)
        chunk = list(islice(pairs, size))


def _header(cells: list) -> list[str]:
    names, seen = [], set()
    for i, cell in enumerate(cells):
        name = as_text(cell).strip() or f"column{i + 1}"
        while name in seen:  # keep both of two same-named columns
            name += "_"
        seen.add(name)
        names.append(name)
    return names


_TEXT_ONLY = frozenset((str,))
_ROWS = 64  # table rows turned into dicts at a time: few enough to stay in the CPU cache


def _table_batches(path: Path, rows: Iterator[list]) -> Iterator[tuple[int, list[dict]]]:
    rows = iter(rows)
    header = None
    for cells in rows:  # the first non-empty row is the header
        if any(as_text(c).strip() for c in cells):
            header = _header(cells)
            break
    if header is None:
        raise UserError(f"{path}: the file is empty; expected a header row, then data rows")
    index = 0
    make = _dict_maker(header)
    while chunk := list(islice(rows, _ROWS if index else 1)):
        if ({len(header)} == set(map(len, chunk))
                and _TEXT_ONLY.issuperset(map(type, chain.from_iterable(chunk))) and all(map(any, chunk))):
            batch = list(map(make, chunk))  # the usual table: all text, full width, no empty row
        else:
            width = len(header)
            batch = [row for row in map(partial(_table_row, header), chunk) if row is not None]
            if len(header) != width:  # a longer row named more columns
                make = _dict_maker(header)
        if batch:
            yield index, batch
            index += len(batch)
    if index == 0:
        raise UserError(f"{path}: no data rows under the header ({', '.join(header)})")


def _dict_maker(header: list[str]):
    """A function from a row's cells to its dict. A dict display compiled for
    this header builds a row twice as fast as ``dict(zip(header, cells))``."""
    body = ", ".join(f"{name!r}: cells[{i}]" for i, name in enumerate(header))
    return eval(f"lambda cells: {{{body}}}", {})


def _table_row(header: list[str], cells: list) -> dict | None:
    texts = [c if c.__class__ is str else as_text(c) for c in cells]
    if not any(texts):  # a wholly empty row holds no data
        return None
    width = len(header)
    if len(texts) > width:
        header.extend(f"column{i + 1}" for i in range(width, len(texts)))
    elif len(texts) < width:
        texts.extend([""] * (width - len(texts)))
    return dict(zip(header, texts))


def _read_csv(path: Path, encoding: str, delimiter: str) -> Iterator[tuple[int, list[dict]]]:
    csv.field_size_limit(1 << 30)  # long answers exceed the 128 KiB default
    enc = "utf-8-sig" if check_encoding(encoding) == "utf-8" else encoding
    try:
        with open(path, encoding=enc, newline="") as fh:
            yield from _table_batches(path, csv.reader(fh, delimiter=delimiter))
    except UnicodeError:
        raise encoding_error(path, encoding) from None
    except csv.Error as err:
        raise UserError(f"{path}: malformed CSV: {err}") from None


def _read_sheet(path: Path, sheet: str | None) -> Iterator[tuple[int, list[dict]]]:
    try:
        rows = _calamine_rows(path, sheet)
    except ImportError:
        rows = _openpyxl_rows(path, sheet)
    yield from _table_batches(path, rows)


def _calamine_rows(path: Path, sheet: str | None) -> Iterator[list]:
    from python_calamine import CalamineWorkbook  # ~4x faster than openpyxl

    try:
        book = CalamineWorkbook.from_path(str(path))
    except Exception as err:  # calamine raises its own types for broken files
        raise UserError(f"{path}: cannot read the spreadsheet: {err}") from None
    if sheet is None:
        return iter(book.get_sheet_by_index(0).iter_rows())
    if sheet not in book.sheet_names:
        raise UserError(f"{path}: no sheet '{sheet}'; sheets: {', '.join(book.sheet_names)}")
    return iter(book.get_sheet_by_name(sheet).iter_rows())


def _openpyxl_rows(path: Path, sheet: str | None) -> Iterator[list]:
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as err:
        raise UserError(f"{path}: cannot read the spreadsheet: {err}") from None
    if sheet is not None and sheet not in book.sheetnames:
        raise UserError(f"{path}: no sheet '{sheet}'; sheets: {', '.join(book.sheetnames)}")
    ws = book[sheet] if sheet is not None else book.worksheets[0]
    return (list(r) for r in ws.iter_rows(values_only=True))
