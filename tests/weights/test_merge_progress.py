"""Merge shows its progress: a bar on a terminal (a real pseudo-terminal here), nothing with --quiet."""

from __future__ import annotations

import os
import pty
import subprocess
import sys


def run_in_a_terminal(args: list[str]) -> tuple[int, str]:
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "tianji_ft", *args], stdin=follower, stdout=follower,
                            stderr=follower, close_fds=True)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    return proc.wait(timeout=120), b"".join(chunks).decode("utf-8", "replace")


def test_merge_draws_a_bar_on_a_terminal_and_is_quiet_when_asked(tiny_llama3, llama3_adapter, tmp_path):
    rc, shown = run_in_a_terminal(["merge", str(tiny_llama3), str(llama3_adapter), "-o", str(tmp_path / "a")])
    assert rc == 0, shown
    assert "\rmerge:" in shown and "100%" in shown and "MB" in shown  # one line, redrawn in place
    assert f"merged -> {tmp_path / 'a'}" in shown
    rc, shown = run_in_a_terminal(["merge", str(tiny_llama3), str(llama3_adapter), "-o", str(tmp_path / "b"),
                                   "--quiet"])
    assert rc == 0 and "merge:" not in shown and "merged ->" in shown


def test_merge_prints_no_bar_into_a_pipe(tiny_llama3, llama3_adapter, tmp_path):
    done = subprocess.run([sys.executable, "-m", "tianji_ft", "merge", str(tiny_llama3), str(llama3_adapter),
                           "-o", str(tmp_path / "c")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "\r" not in done.stderr and "merge:" not in done.stderr
