"""Deterministic train/test split: same file, ratio and seed -> same bytes.

Streams in two passes (count, then write), so memory stays at one byte per
record. Records keep their input order inside each split; which records go
to the test split is a seeded random choice of exactly
``round(n * test_ratio)`` of them (at least one each side).
"""

from __future__ import annotations

import random
from codecs import BOM_UTF8
from collections import deque
from itertools import compress
from pathlib import Path

from tianji_ft.data.accounting import Tally, refuse_overwrite, write_report
from tianji_ft.data.jsonfast import fast_loads
from tianji_ft.data.schema import Gather, RecordWriter, is_jsonl, iter_records, line_blocks, parse_lines
from tianji_ft.utils.fsio import atomic_open
from tianji_ft.utils.errors import UserError


def choose_test_records(n: int, test_ratio: float, seed: int) -> bytearray:
    """A 0/1 flag per record: 1 for the test split."""
    if not 0 < test_ratio < 1:
        raise UserError(f"--test-ratio must be between 0 and 1 (exclusive), got {test_ratio}")
    if n < 2:
        raise UserError(f"{n} record(s): a split needs at least 2")
    n_test = min(max(round(n * test_ratio), 1), n - 1)
    flags = bytearray(n)
    for i in random.Random(seed).sample(range(n), n_test):
        flags[i] = 1
    return flags


def split_file(path: str | Path, out_dir: str | Path, *, test_ratio: float = 0.3, seed: int = 42,
               encoding: str = "utf-8", report: str | Path | None = None) -> tuple[Tally, Path, Path]:
    """Split ``path`` into ``out_dir/train.<ext>`` and ``out_dir/test.<ext>``.

    ``<ext>`` is the input's (.jsonl or .json). Returns the tally and both paths.
    """
    path = Path(path)
    ext = path.suffix.lower() if path.suffix.lower() in (".json", ".jsonl") else ".jsonl"
    out_dir = Path(out_dir)
    train_path, test_path = out_dir / f"train{ext}", out_dir / f"test{ext}"
    refuse_overwrite([path], train_path, test_path)
    if is_jsonl(path) and encoding.lower().replace("-", "").replace("_", "") == "utf8":
        written = _split_lines(path, train_path, test_path, test_ratio, seed)
        n = written
    else:
        n = sum(1 for _ in iter_records(path, encoding))
        flags = choose_test_records(n, test_ratio, seed)
        with RecordWriter(train_path) as train, RecordWriter(test_path) as test:
            for index, record in iter_records(path, encoding):
                (test if flags[index] else train).write(record)
        written = train.count + test.count
    tally = Tally()
    tally.read, tally.written = n, written
    tally.check()
    write_report(report, tally)
    return tally, train_path, test_path


_FLIP = bytes.maketrans(b"\x00\x01", b"\x01\x00")


def _split_lines(path: Path, train_path: Path, test_path: Path, test_ratio: float, seed: int) -> int:
    # JSONL in, JSONL out: each line is checked to be JSON and copied as it is
    # (its bytes, a block at a time), never decoded into records and re-encoded.
    n = sum(len(lines) - _blank_lines(lineno, lines) for lineno, lines in line_blocks(path))
    to_test = choose_test_records(n, test_ratio, seed)
    to_train = to_test.translate(_FLIP)
    written = 0
    with atomic_open(train_path, "wb") as train_fh, atomic_open(test_path, "wb") as test_fh, \
            Gather(train_fh) as train, Gather(test_fh) as test:
        for lineno, lines in line_blocks(path):
            try:
                deque(map(fast_loads, lines), maxlen=0)  # only checks: one C loop
            except Exception:
                lines = _checked_lines(path, lineno, lines)
            if not lines:
                continue
            end = written + len(lines)
            if end > n:
                break
            if not lines[-1].endswith(b"\n"):  # the file's last line
                lines[-1] += b"\n"
            train.write(b"".join(compress(lines, to_train[written:end])))
            test.write(b"".join(compress(lines, to_test[written:end])))
            written = end
        if written != n:  # the file changed between the two passes: no output
            raise UserError(f"{path}: changed while being split; run again")
    return written


def _blank_lines(lineno: int, lines: list[bytes]) -> int:
    if lineno == 1 and lines[0].startswith(BOM_UTF8):
        return not lines[0][3:].strip()
    return sum(map(bytes.isspace, lines))


def _checked_lines(path: Path, lineno: int, lines: list[bytes]) -> list[bytes]:
    """The lines holding records (BOM dropped); the first malformed one stops with its error."""
    kept, start = [], 0
    while start < len(lines):
        parsed: list = []
        try:
            parsed.extend(map(fast_loads, lines[start:]))
            kept += lines[start:]
            break
        except Exception:  # a blank line, a BOM, a big integer or an error: that line alone
            bad = start + len(parsed)  # extend kept the values before it
        kept += lines[start:bad]
        raw = lines[bad]
        raw = raw[3:] if lineno + bad == 1 and raw.startswith(BOM_UTF8) else raw
        if raw and not raw.isspace():
            error = parse_lines(path, lineno + bad, [raw])[1]  # the stdlib's verdict, worded with line and column
            if error is not None:
                raise error
            kept.append(raw)
        start = bad + 1
    return kept
