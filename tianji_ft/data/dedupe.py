"""Drop duplicate records: exact, and equal after normalising whitespace and punctuation.

Only a 16-byte digest per distinct record is kept in memory, so a file of
millions of records dedupes in one streaming pass. The first occurrence is
kept; later ones are rejected with the index of the record they repeat.
"""

from __future__ import annotations

import hashlib
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator

from tianji_ft.data.accounting import Rejected, Tally
from tianji_ft.core.jsonfast import dumps
from tianji_ft.data.records import process
from tianji_ft.data.reader import check_encoding, iter_records

_STRIP_TABLE: dict | None = None


def _strip_table() -> dict:
    # Built on first use (~20 ms): every whitespace and punctuation code point
    # of the Basic Multilingual Plane, where all CJK and ASCII punctuation lives.
    global _STRIP_TABLE
    if _STRIP_TABLE is None:
        _STRIP_TABLE = {c: None for c in range(0x10000)
                        if unicodedata.category(chr(c))[0] in "PZ" or chr(c).isspace()}
    return _STRIP_TABLE


def normalise(text: str) -> str:
    """Case-folded NFKC text without whitespace and punctuation."""
    return unicodedata.normalize("NFKC", text).casefold().translate(_strip_table())


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def exact_key(record) -> bytes:
    return _digest(dumps(record.get("conversation") if isinstance(record, dict) else record))


def normalised_key(record) -> bytes:
    turns = record.get("conversation") if isinstance(record, dict) else None
    if not isinstance(turns, list):
        return exact_key(record)
    parts = []
    for turn in turns:
        if isinstance(turn, dict):
            parts.extend(normalise(str(turn.get(k, ""))) for k in ("system", "input", "output"))
        else:
            parts.append(normalise(str(turn)))
    return _digest("\x1f".join(parts).encode("utf-8", "surrogatepass"))


def dedupe_records(rows: Iterable, *, normalised: bool = True) -> Iterator:
    """One result per record: the record, or ``Rejected`` naming the earlier copy."""
    exact: dict[bytes, int] = {}
    near: dict[bytes, int] = {}
    for index, record in enumerate(rows):
        key = exact_key(record)
        if key in exact:
            yield Rejected("exact duplicate", f"same as record {exact[key]}")
            continue
        exact[key] = index
        if normalised:
            nkey = normalised_key(record)
            if nkey in near:
                yield Rejected("duplicate after normalising whitespace/punctuation", f"same as record {near[nkey]}")
                continue
            near[nkey] = index
        yield record


def dedupe_file(path: str | Path, out: str | Path, *, normalised: bool = True, encoding: str = "utf-8",
                report: str | Path | None = None, quiet: bool = True) -> Tally:
    """Write the first copy of every record of ``path`` to ``out``.

    Like every converting command: outputs are checked against the input
    first, records with a lone surrogate are rejected, and a run that keeps
    nothing raises :class:`~tianji_ft.data.accounting.NoRecordKept`.
    """
    check_encoding(encoding)
    return process([Path(path)], lambda rows: dedupe_records(rows, normalised=normalised), out,
                   reader=lambda p: iter_records(p, encoding), report=report, label="dedupe", quiet=quiet)


