"""Atomic writes: readers never see a half-written file or directory."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator:
    """Open a temporary file beside ``path``; rename it over ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        kwargs = {} if "b" in mode else {"encoding": encoding, "newline": "\n"}
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    # mkstemp/mkdtemp create private (0600/0700) entries; finished outputs
    # get the permissions a plain open()/mkdir() would have given them.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> None:
    """Write ``obj`` as UTF-8 JSON (Chinese kept readable), atomically."""
    with atomic_open(path) as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=indent)
        fh.write("\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, kind: str, overwrite: bool = False) -> Iterator[Path]:
    """Build a ``kind`` output folder under a temporary name; rename it to ``path`` at the end.

    An existing ``path`` is replaced only once the new one is complete, so a
    crash or a full disk never leaves a partial output that looks finished;
    and only when it is a ``kind`` output of ours or ``overwrite`` is set
    (callers check first with :func:`tianji_ft.core.outputs.check_outputs`;
    this is the last line of defence).
    """
    from tianji_ft.core.outputs import Output, check_outputs, mark, resolved

    path = resolved(path)  # through a symlink: the folder it names is the output, the link stays
    check_outputs({}, [Output(path, kind=kind)], overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        mark(tmp, kind)
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
