"""Schema check of converted files: every problem as ``file:record: message``.

A file holds conversation records or preference records; which, its records
say (:func:`tianji_ft.data.preference.sniff`), and each record is checked by
that format's one validator.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from tianji_ft.data.preference import mixed_error, record_kind, sniff, validator
from tianji_ft.data.reader import check_encoding, iter_records
from tianji_ft.data.schema import show
from tianji_ft.core.errors import UserError


def validate_file(path: str | Path, encoding: str = "utf-8") -> Iterator[str]:
    """Yield ``file:record: message`` for each problem (``record`` counts from 0).

    A file that cannot be read at all (malformed JSON, wrong encoding, empty)
    yields that one error, in the same one-line form. Text with a lone
    surrogate is a problem (the same rule that makes convert, dedupe and
    clean reject the record). Every line is printable: control characters
    and surrogates in the data are shown as escapes. A record of the other
    format than the file's is one line, and the file's last.
    """
    try:
        file_kind, first = sniff(path, encoding)
        problems = validator(file_kind)
        for index, record in iter_records(path, encoding):
            kind = record_kind(record)
            if kind is not None and kind != file_kind:
                raise mixed_error(path, index, kind, file_kind, first)
            for problem in problems(record):
                yield show(f"{path}:{index}: {problem}")
    except UserError as err:
        yield show(str(err))


def validate_files(paths: Iterable[str | Path], encoding: str = "utf-8") -> Iterator[str]:
    """:func:`validate_file` for each of ``paths``; an unknown ``encoding`` is a :class:`UserError` at once."""
    check_encoding(encoding)
    return _validate_all(paths, encoding)


def _validate_all(paths: Iterable[str | Path], encoding: str) -> Iterator[str]:
    for path in paths:
        yield from validate_file(path, encoding)
