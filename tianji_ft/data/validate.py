"""Schema check of converted files: every problem as ``file:record: message``."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from tianji_ft.data.schema import iter_records, record_problems
from tianji_ft.core.errors import UserError


def validate_file(path: str | Path, encoding: str = "utf-8") -> Iterator[str]:
    """Yield ``file:record: message`` for each problem (``record`` counts from 0).

    A file that cannot be read at all (malformed JSON, wrong encoding, empty)
    yields that one error, in the same one-line form.
    """
    try:
        for index, record in iter_records(path, encoding):
            for problem in record_problems(record):
                yield f"{path}:{index}: {problem}"
    except UserError as err:
        yield str(err)


def validate_files(paths: Iterable[str | Path], encoding: str = "utf-8") -> Iterator[str]:
    for path in paths:
        yield from validate_file(path, encoding)
