"""Fixtures for the output-safety tests: the tiny Llama, a PEFT adapter, tree snapshots, mounts."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from helpers.runs import make_adapter

@pytest.fixture(scope="session")
def small_adapter(tiny_llama3, tmp_path_factory) -> Path:
    """A PEFT LoRA adapter (r=2, q/v only, random B) for the tiny Llama-3, built once per session."""
    import torch

    torch.set_num_threads(1)
    return make_adapter(tiny_llama3, tmp_path_factory.mktemp("core_adapters") / "lora",
                                          r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"])


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: files by sha256, folders, symlinks by target (so additions, removals,
    changes and leftover temporary folders all show)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                found[rel] = "link -> " + os.readlink(path)
            elif path.is_dir():
                found[rel] = "dir"
            else:
                found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def assert_one_line_refusal(code: int, err: str, *names, exit_code: int = 2) -> str:
    """The CLI refused: ``exit_code``, one ``tianji-ft: error:`` line on stderr naming every one of ``names``."""
    line = err.strip()
    assert code == exit_code, err
    assert "Traceback" not in err, err
    assert line.startswith("tianji-ft: error: "), err
    assert "\n" not in line, err
    for name in names:
        assert str(name) in line, f"{name} not named in: {line}"
    return line


class Mount:
    """``mount -t tmpfs`` on a folder (needs root or CAP_SYS_ADMIN); the test skips where it cannot."""

    def __init__(self, where: Path):
        self.where = where
        self.mounted = False

    def tmpfs(self, size: str, *options: str) -> Path:
        self.where.mkdir(parents=True, exist_ok=True)
        opts = ",".join((f"size={size}", "mode=0777", *options))
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(self.where)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (mount -t tmpfs -o {opts}: "
                        f"{(proc.stderr or proc.stdout).strip() or f'exit {proc.returncode}'}); "
                        "run as root or with CAP_SYS_ADMIN to test a full or read-only disk")
        self.mounted = True
        return self.where

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.where)], check=True)
            self.mounted = False


@pytest.fixture
def mount(tmp_path):
    """A :class:`Mount` on ``tmp_path/挂载 点``, always unmounted afterwards."""
    m = Mount(tmp_path / "挂载 点")
    try:
        yield m
    finally:
        m.unmount()


@pytest.fixture(scope="session")
def tree():
    """:func:`snapshot`: ``tree(root)`` maps every entry under ``root`` to its sha256 / "dir" / link target."""
    return snapshot


@pytest.fixture(scope="session")
def refused():
    """:func:`assert_one_line_refusal`: ``refused(code, err, *names)``."""
    return assert_one_line_refusal
