"""The one output-safety rule, applied by every command before it writes anything.

A user's base model may be their only copy of 15 GB, so before a command
writes it checks, with every path resolved (symlinks, ``..``, ``~``):

- no output is, contains, or lies inside an input (data file, base model,
  adapter, work dir, checkpoint) or another output of the same command
  (``-o``, ``--report``, the rejects file);
- an output that exists is a regular file or a folder (never a device, a
  FIFO or a socket);
- an output folder that exists and is not empty was made by the same kind of
  command (it holds :data:`MARKER`), or ``--overwrite`` was given;
  ``--overwrite`` never lifts the first rule.

A refusal is one :class:`UserError` line naming both paths (exit 2), raised
before anything is touched. Folders a command makes get the marker, so a
rerun may replace them.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from tianji_ft.core.errors import UserError
from tianji_ft.core.lock import LOCK_NAME

MARKER = ".tianji_ft_output"
# Our own bookkeeping: a folder holding only these is empty as far as the user is concerned.
OWN_FILES = frozenset((MARKER, LOCK_NAME))
EXIT_REFUSED = 2


@dataclass(frozen=True)
class Output:
    """One thing a command writes.

    ``kind`` is set for a folder the command owns as a whole (it may replace
    it, and marks it with that kind); ``None`` for a single file, or for a
    folder the command writes named files into (``folder=True``).
    """

    path: str | os.PathLike
    label: str = "output"
    kind: str | None = None
    folder: bool = False

    @property
    def is_folder(self) -> bool:
        return self.folder or self.kind is not None


def resolved(path: str | os.PathLike) -> Path:
    """The path with ``~``, symlinks and ``..`` resolved (it need not exist)."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _relation(out: Path, other: Path) -> str | None:
    if out == other:
        return "is"
    if other in out.parents:
        return "is inside"
    if out in other.parents:
        return "contains"
    return None


def check_outputs(inputs: Mapping[str, str | os.PathLike | None] | Iterable[tuple[str, str | os.PathLike | None]],
                  outputs: Iterable[Output], *, overwrite: bool = False) -> None:
    """Refuse, in one line and before any write, outputs that could destroy an input or each other.

    ``inputs`` maps a label ("base model", "data file") to a path; ``None``
    paths are skipped so callers can pass optional inputs as they are.
    """
    pairs = inputs.items() if isinstance(inputs, Mapping) else inputs
    # An input that is not there cannot be lost (a hub id, say), and must not be mistaken for a path.
    ins = [(label, resolved(p)) for label, p in pairs if p not in (None, "") and os.path.lexists(p)]
    outs = [o for o in outputs if o.path not in (None, "")]
    real_outs = [(o, resolved(o.path)) for o in outs]
    for out, real in real_outs:
        for label, src in ins:
            rel = _relation(real, src)
            if rel:
                raise UserError(f"{out.label} {out.path} {rel} the {label} {src}; choose an output outside "
                                f"every input (nothing was written)", EXIT_REFUSED)
    for i, (out, real) in enumerate(real_outs):
        for other, other_real in real_outs[i + 1:]:
            rel = _relation(real, other_real)
            if rel:
                raise UserError(f"{out.label} {out.path} {rel} {other.label} {other.path}; give them different "
                                f"places (nothing was written)", EXIT_REFUSED)
    for out, real in real_outs:
        _check_existing(out, real, overwrite)


def _check_existing(out: Output, real: Path, overwrite: bool) -> None:
    try:
        st = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):
        _check_parent(out, real)
        return
    except OSError as err:
        raise UserError(f"{out.label} {out.path}: {err.strerror}", EXIT_REFUSED) from None
    if stat.S_ISDIR(st.st_mode):
        if not out.is_folder:
            raise UserError(f"{out.label} {out.path} is a folder; give a file name", EXIT_REFUSED)
        if overwrite or not any(e.name not in OWN_FILES for e in os.scandir(real)) or made_here(real, out.kind):
            return
        made = marker_kind(real)
        why = f"it holds a {made} output" if made else "tianji-ft did not make it"
        raise UserError(f"{out.label} {out.path} is a folder that is not empty and {why}; choose a new folder "
                        f"or pass --overwrite to replace it", EXIT_REFUSED)
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{out.label} {out.path} is not a regular file or folder (a device, pipe or socket); "
                        f"give a file or folder path", EXIT_REFUSED)
    if out.is_folder:
        raise UserError(f"{out.label} {out.path} is a file; give a folder", EXIT_REFUSED)


def _check_parent(out: Output, real: Path) -> None:
    for parent in real.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{out.label} {out.path}: {parent} is a file, not a folder", EXIT_REFUSED)
            return


def marker_kind(folder: str | os.PathLike) -> str | None:
    """The kind of output that made ``folder``, or None when tianji-ft did not make it."""
    try:
        return json.loads((Path(folder) / MARKER).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def made_here(folder: str | os.PathLike, kind: str | None) -> bool:
    """Whether ``folder`` was made by a command that writes ``kind`` (any kind when ``kind`` is None)."""
    made = marker_kind(folder)
    return made is not None and (kind is None or made == kind)


def mark(folder: str | os.PathLike, kind: str) -> None:
    """Record that ``folder`` is a ``kind`` output of tianji-ft (a rerun may replace it)."""
    path = Path(folder) / MARKER
    if marker_kind(folder) != kind:
        path.write_text(json.dumps({"kind": kind}) + "\n", encoding="utf-8")
