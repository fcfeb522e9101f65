"""Deterministic train/test split: same file, ratio and seed -> same bytes.

Streams in two passes (count, then write), so memory stays at one byte per
record. JSONL lines are copied as they are; that each is JSON is checked
alongside, in a forked child where there is fork. Records keep their input order inside each split; which records go
to the test split is a seeded random choice of exactly
``round(n * test_ratio)`` of them (at least one each side).
"""

from __future__ import annotations

import os
import random
import signal
import threading
from codecs import BOM_UTF8
from collections import deque
from itertools import compress
from pathlib import Path

from tianji_ft.data.accounting import Tally, write_report
from tianji_ft.core.jsonfast import fast_loads
from tianji_ft.data.reader import check_encoding, is_jsonl, iter_records, line_blocks, parse_lines
from tianji_ft.data.writer import Gather, RecordWriter
from tianji_ft.core.fsio import atomic_open
from tianji_ft.core.errors import UserError
from tianji_ft.core.outputs import Output, check_outputs
from tianji_ft.core.progress import Progress


def _check_ratio(test_ratio: float) -> None:
    if not 0 < test_ratio < 1:
        raise UserError(f"--test-ratio must be between 0 and 1 (exclusive), got {test_ratio}")


def choose_test_records(n: int, test_ratio: float, seed: int) -> bytearray:
    """A 0/1 flag per record: 1 for the test split."""
    _check_ratio(test_ratio)
    if n < 2:
        raise UserError(f"{n} record(s): a split needs at least 2")
    n_test = min(max(round(n * test_ratio), 1), n - 1)
    flags = bytearray(n)
    for i in random.Random(seed).sample(range(n), n_test):
        flags[i] = 1
    return flags


def split_file(path: str | Path, out_dir: str | Path, *, test_ratio: float = 0.3, seed: int = 42,
               encoding: str = "utf-8", report: str | Path | None = None,
               quiet: bool = True) -> tuple[Tally, Path, Path]:
    """Split ``path`` into ``out_dir/train.<ext>`` and ``out_dir/test.<ext>``.

    ``<ext>`` is the input's (.jsonl or .json); the outputs are UTF-8 whatever
    the input's ``encoding``. The outputs are the two files (``out_dir`` may
    hold the input): one that is, holds or lies inside the input or the other
    output is refused before anything is written. Returns the tally and both paths.
    ``quiet=False`` shows the progress of the writing pass on stderr.
    """
    path = Path(path)
    ext = path.suffix.lower() if path.suffix.lower() in (".json", ".jsonl") else ".jsonl"
    out_dir = Path(out_dir)
    train_path, test_path = out_dir / f"train{ext}", out_dir / f"test{ext}"
    codec = check_encoding(encoding)
    check_outputs([("input", path)], [Output(train_path, "train file (-o)"), Output(test_path, "test file (-o)"),
                                      Output(report, "--report")])
    if codec in ("utf-8", "utf-8-sig") and is_jsonl(path, encoding):
        with Progress(f"split {path.name}", os.path.getsize(path), unit="B", quiet=quiet) as progress:
            written = _split_lines(path, train_path, test_path, test_ratio, seed, progress)
        n = written
    else:
        n = sum(1 for _ in iter_records(path, encoding))
        flags = choose_test_records(n, test_ratio, seed)
        with RecordWriter(train_path) as train, RecordWriter(test_path) as test, \
                Progress(f"split {path.name}", n, unit="records", quiet=quiet) as progress:
            for index, record in iter_records(path, encoding):
                (test if flags[index] else train).write(record)
                progress.update()
            train.finish()  # both written out before either is renamed into place
            test.finish()
        written = train.count + test.count
    tally = Tally()
    tally.read, tally.written = n, written
    tally.check()
    write_report(report, tally)
    return tally, train_path, test_path


_FLIP = bytes.maketrans(b"\x00\x01", b"\x01\x00")


def _split_lines(path: Path, train_path: Path, test_path: Path, test_ratio: float, seed: int,
                 progress: Progress) -> int:
    # JSONL in, JSONL out: each line is copied as it is (its bytes, a block at a
    # time), never decoded into a record and re-encoded. That every line is JSON
    # is checked meanwhile, on another core where there is one: parsing costs
    # more than copying.
    _check_ratio(test_ratio)
    with _Check(path) as check:
        n = sum(len(lines) - _blank_lines(lineno, lines) for lineno, lines in line_blocks(path))
        to_test = choose_test_records(n, test_ratio, seed)
        to_train = to_test.translate(_FLIP)
        return _copy_lines(path, train_path, test_path, n, to_train, to_test, check, progress)


def _copy_lines(path: Path, train_path: Path, test_path: Path, n: int, to_train: bytes, to_test: bytes,
                check: "_Check", progress: Progress) -> int:
    written = 0
    with atomic_open(train_path, "wb") as train_fh, atomic_open(test_path, "wb") as test_fh, \
            Gather(train_fh) as train, Gather(test_fh) as test:
        for lineno, lines in line_blocks(path):
            progress.update(sum(map(len, lines)))
            lines = _record_lines(lineno, lines)
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
        check.result()  # a malformed line: no output either
    return written


def _blank_lines(lineno: int, lines: list[bytes]) -> int:
    if lineno == 1 and lines[0].startswith(BOM_UTF8):
        return not lines[0][3:].strip()
    return sum(map(bytes.isspace, lines))


def _record_lines(lineno: int, lines: list[bytes]) -> list[bytes]:
    """The lines that are not blank, a BOM dropped."""
    if lineno == 1 and lines[0].startswith(BOM_UTF8):
        lines = [lines[0][3:]]
    if any(map(bytes.isspace, lines)) or b"" in lines:
        lines = [line for line in lines if line and not line.isspace()]
    return lines


def check_lines(path: Path) -> None:
    """Raise the error of the first line of ``path`` that is neither blank nor JSON."""
    for lineno, lines in line_blocks(path):
        try:
            deque(map(fast_loads, lines), maxlen=0)  # only checks: one C loop
        except Exception:  # a blank line, a BOM, a big integer or an error: the careful reader decides
            error = parse_lines(path, lineno, lines)[1]
            if error is not None:
                raise error


class _Check:
    """``check_lines(path)`` in a forked child process while the caller goes
    on; ``result()`` waits for it and raises its error. Where there is no
    fork, other threads make forking unsafe or the file is small,
    ``result()`` checks in place."""

    ASIDE = 1 << 20  # smaller files are checked in place: a fork costs more than their parse

    def __init__(self, path: Path):
        self.path, self.pid, self.fd = path, None, None

    def __enter__(self) -> "_Check":
        if hasattr(os, "fork") and threading.active_count() == 1 and os.path.getsize(self.path) >= self.ASIDE:
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: report the error, if any, and leave at once
                status = 0
                try:
                    os.close(read_fd)
                    try:
                        check_lines(self.path)
                    except UserError as err:
                        os.write(write_fd, str(err).encode("utf-8", "replace"))
                except BaseException:
                    status = 1
                finally:
                    os._exit(status)
            os.close(write_fd)
            self.pid, self.fd = pid, read_fd
        return self

    def result(self) -> None:
        if self.pid is None:
            return check_lines(self.path)
        with open(self.fd, "rb") as fh:
            message = fh.read()
        pid, self.pid = self.pid, None
        status = os.waitpid(pid, 0)[1]
        if message:
            raise UserError(message.decode("utf-8", "replace"))
        if status:  # the child could not check: check here
            check_lines(self.path)

    def __exit__(self, *exc) -> bool:
        if self.pid is not None:  # left early: the verdict is not needed
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            os.close(self.fd)
            self.pid = None
        return False
