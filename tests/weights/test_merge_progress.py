"""Merge shows its progress: a bar on a terminal (a real pseudo-terminal here), nothing with --quiet."""

from __future__ import annotations

import subprocess
import sys

from helpers.terminal import run_in_a_terminal


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
