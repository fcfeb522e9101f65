"""One run per work dir: a lock that names its holder and dies with it.

``fcntl.flock`` is released by the kernel when the holding process ends,
however it ends (SIGKILL, a crash, a reboot), so a stale lock can never block
``--resume auto``. The lock file also records the holder (pid, host, start
time) so a refused second run can say who holds it, and a run that takes over
from a holder that is gone says so.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from tianji_ft.core.errors import UserError

LOCK_NAME = ".tianji_ft.lock"
# Work dirs this process holds, with how many nested holders: the pipeline holds
# its work dir and the training stage inside it takes the same lock again.
_HELD: dict[str, int] = {}


def _describe(holder: dict) -> str:
    return f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"


def _busy(work_dir: Path, holder: dict) -> UserError:
    return UserError(f"{work_dir} is in use by another {holder.get('what', 'run')} ({_describe(holder)}); "
                     f"wait for it, stop it, or use another --work-dir")


class WorkDirLock:
    """``with WorkDirLock(work_dir): ...`` holds the work dir for one run, or raises :class:`UserError`."""

    def __init__(self, work_dir: str | os.PathLike, what: str = "run", warn=print):
        self.path = Path(work_dir) / LOCK_NAME
        self.what = what
        self.warn = warn
        self._fd: int | None = None

    def acquire(self) -> "WorkDirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = os.path.realpath(self.path)
        if key in _HELD:
            _HELD[key] += 1
            self._fd = -1
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read(fd)
            os.close(fd)
            raise _busy(self.path.parent, holder) from None
        previous = self._read(fd)
        if previous.get("pid"):
            self.warn(f"[tianji-ft] taking over {self.path.parent} from a {previous.get('what', 'run')} "
                      f"that is gone ({_describe(previous)})")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what,
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        self._fd = fd
        _HELD[key] = 1
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        key = os.path.realpath(self.path)
        _HELD[key] -= 1
        if _HELD[key]:
            self._fd = None
            return
        del _HELD[key]
        # Empty the record first: a holder recorded in an unlocked file means "died holding it".
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        except ValueError:
            return {}

    def __enter__(self) -> "WorkDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_free(work_dir: str | os.PathLike) -> None:
    """Raise the same one line as :meth:`WorkDirLock.acquire` when ``work_dir`` is busy; take nothing."""
    path = Path(work_dir) / LOCK_NAME
    if not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(path.parent, WorkDirLock._read(fd)) from None
    finally:
        os.close(fd)
