"""Deterministic train/test split: same file, ratio and seed -> same bytes.

Streams in two passes (count, then write), so memory stays at one byte per
record. Records keep their input order inside each split; which records go
to the test split is a seeded random choice of exactly
``round(n * test_ratio)`` of them (at least one each side).
"""

from __future__ import annotations

import random
from pathlib import Path

from tianji_ft.data.accounting import Tally, refuse_overwrite, write_report
from tianji_ft.data.schema import RecordWriter, is_jsonl, iter_jsonl_lines, iter_records
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


def _split_lines(path: Path, train_path: Path, test_path: Path, test_ratio: float, seed: int) -> int:
    # JSONL in, JSONL out: each line is checked to be JSON and copied as it is.
    with open(path, "rb") as fh:
        n = sum(1 for line in fh if line.strip())
    flags = choose_test_records(n, test_ratio, seed)
    written = 0
    with atomic_open(train_path, "wb") as train, atomic_open(test_path, "wb") as test:
        put = (train.write, test.write)
        for index, line in iter_jsonl_lines(path):
            put[flags[index]](line)
            written += 1
    if written != n:  # the file changed between the two passes
        raise UserError(f"{path}: changed while being split; run again")
    return written
