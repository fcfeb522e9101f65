"""Progress on a terminal (a real pseudo-terminal here): merge, GGUF export; nothing with --quiet or into a pipe."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers.terminal import run_in_a_terminal


@pytest.fixture
def internlm2_tiny_merged_dir(tmp_path):
    """The tiny InternLM2 with a run manifest, as merge leaves a model folder."""
    import json
    import shutil

    from tianji_ft.models.tiny import ensure_tiny_model

    model = tmp_path / "internlm2"
    shutil.copytree(ensure_tiny_model("internlm2"), model)
    (model / "tianji_run.json").write_text(json.dumps({"template": "internlm2_chat"}), encoding="utf-8")
    return model


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


def test_export_shows_its_progress_on_a_terminal(internlm2_tiny_merged_dir, tmp_path):
    rc, shown = run_in_a_terminal(["export", "gguf", str(internlm2_tiny_merged_dir), "-o", str(tmp_path / "g")])
    assert rc == 0, shown
    assert "\rgguf " in shown and "100%" in shown and "llama-cli -m" in shown
