"""Drop duplicate records: exact, and equal after normalising whitespace and punctuation.

Only a 16-byte digest per distinct record is kept in memory, so a file of
millions of records dedupes in one streaming pass. The first occurrence is
kept; later ones are rejected with the index of the record they repeat.

In a file of preference records a duplicate is the same prompt, chosen and
rejected answers. Pairs that only share the prompt are kept (several pairs per
prompt are how preference sets are made) and counted as a note, as are pairs
that repeat an earlier one with chosen and rejected swapped (they pull the
model both ways: look at them).
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

from tianji_ft.data.accounting import Rejected, Tally
from tianji_ft.core.jsonfast import dumps
from tianji_ft.data.preference import PREFERENCE, mixed_error, record_kind, sniff
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


def preference_key(record) -> bytes:
    """Exact key of a preference record: its prompt, chosen and rejected messages."""
    if not isinstance(record, dict):
        return exact_key(record)
    return _digest(dumps([record.get(k) for k in ("prompt", "chosen", "rejected")]))


def _messages_text(messages) -> str | None:
    if not isinstance(messages, list):
        return None
    return "\x1e".join(f"{m.get('role')}\x1f{normalise(str(m.get('content', '')))}" if isinstance(m, dict)
                       else normalise(str(m)) for m in messages)


def normalised_preference_key(record, swapped: bool = False) -> bytes:
    """Normalised key of a preference record (``swapped``: with chosen and rejected exchanged)."""
    fields = ("prompt", "rejected", "chosen") if swapped else ("prompt", "chosen", "rejected")
    parts = [_messages_text(record.get(k)) for k in fields] if isinstance(record, dict) else [None]
    if None in parts:
        return preference_key(record)
    return _digest("\x1d".join(parts).encode("utf-8", "surrogatepass"))


def prompt_key(record) -> bytes | None:
    text = _messages_text(record.get("prompt")) if isinstance(record, dict) else None
    return None if text is None else _digest(text.encode("utf-8", "surrogatepass"))


def dedupe_records(rows: Iterable, *, normalised: bool = True, kind: str = "conversation",
                   notes: Counter | None = None) -> Iterator:
    """One result per record: the record, or ``Rejected`` naming the earlier copy.

    ``kind`` is the file's format; for ``"preference"``, pairs sharing a prompt
    with an earlier pair, or swapping its answers, are kept and counted in ``notes``.
    """
    if kind == PREFERENCE:
        yield from _dedupe_pairs(rows, normalised, notes if notes is not None else Counter())
        return
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


SAME_PROMPT = "pair for a prompt seen before (kept)"
SWAPPED = "pair repeating an earlier one with chosen and rejected swapped (kept)"


def _dedupe_pairs(rows: Iterable, normalised: bool, notes: Counter) -> Iterator:
    exact: dict[bytes, int] = {}
    near: dict[bytes, int] = {}
    prompts: set[bytes] = set()
    for index, record in enumerate(rows):
        key = preference_key(record)
        if key in exact:
            yield Rejected("exact duplicate", f"same as record {exact[key]}")
            continue
        exact[key] = index
        nkey = normalised_preference_key(record)
        if normalised and nkey in near:
            yield Rejected("duplicate after normalising whitespace/punctuation", f"same as record {near[nkey]}")
            continue
        swapped = normalised_preference_key(record, swapped=True)
        if swapped != nkey and swapped in near:
            notes[SWAPPED] += 1
        near.setdefault(nkey, index)
        pkey = prompt_key(record)
        if pkey is not None:
            if pkey in prompts:
                notes[SAME_PROMPT] += 1
            prompts.add(pkey)
        yield record


def dedupe_file(path: str | Path, out: str | Path, *, normalised: bool = True, encoding: str = "utf-8",
                report: str | Path | None = None, quiet: bool = True) -> Tally:
    """Write the first copy of every record of ``path`` to ``out``.

    Like every converting command: outputs are checked against the input
    first, records with a lone surrogate are rejected, and a run that keeps
    nothing raises :class:`~tianji_ft.data.accounting.NoRecordKept`. A file
    of preference records is deduped as pairs; one mixing both formats is
    refused, and nothing is written.
    """
    check_encoding(encoding)
    path = Path(path)
    tally = Tally()
    found: list = []  # the file's format and the record that shows it, read once the outputs are checked

    def file_kind() -> list:
        if not found:
            found.extend(sniff(path, encoding))
        return found

    def read(source: Path) -> Iterator:
        for index, record in iter_records(source, encoding):
            kind = record_kind(record)
            if kind is not None and kind != file_kind()[0]:
                raise mixed_error(source, index, kind, *file_kind())
            yield index, record

    return process([path], lambda rows: dedupe_records(rows, normalised=normalised, kind=file_kind()[0],
                                                       notes=tally.notes),
                   out, reader=read, report=report, label="dedupe", quiet=quiet, tally=tally)


