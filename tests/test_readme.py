"""The README as a newcomer reads it: every `tianji-ft` command in it parses as written, and the blocks
marked runnable (the first five minutes, the data tools) run as written on the shipped samples."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from tianji_ft.cli import build_parser
from tianji_ft.core.paths import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"(<!-- runnable -->\n)?```(\w*)\n(.*?)```", re.S)


def blocks(runnable_only: bool = False) -> list[str]:
    return [body for marker, lang, body in BLOCK.findall(README)
            if lang == "bash" and (marker or not runnable_only)]


def commands(block: str) -> list[list[str]]:
    """Each `tianji-ft ...` command of a shell block, continuation lines joined, comments dropped."""
    found = []
    for line in block.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token not in ("&&", ";", "||", "|"):
                words.append(token)
                continue
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value before the command
                words = words[1:]
            if words and words[0] == "tianji-ft":
                found.append(words[1:])
            words = []
    return found


def test_the_readme_has_runnable_blocks_and_tianji_ft_commands():
    assert len(blocks(runnable_only=True)) >= 2
    assert sum(len(commands(b)) for b in blocks()) >= 40


@pytest.mark.parametrize("argv", [c for b in blocks() for c in commands(b)], ids=lambda argv: " ".join(argv)[:60])
def test_every_command_in_the_readme_parses(argv, capsys):
    try:
        build_parser().parse_args(argv)
    except SystemExit as stop:  # --help exits 0; a wrong verb, flag or choice exits 2
        assert stop.code == 0, capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("block", blocks(runnable_only=True), ids=lambda b: commands(b)[0][0])
def test_runnable_blocks_run_as_written(block, tmp_path):
    (tmp_path / "data").symlink_to(PROJECT_ROOT / "data")  # as in the checkout; outputs land in tmp_path
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if "train" in block:  # the first five minutes end with a model, its evaluation and its Ollama files
        run = tmp_path / "work_dirs" / "internlm2_chat_7b_qlora_wishes_e3-tiny"
        assert (run / "merged" / "config.json").is_file() and (run / "eval" / "report.md").is_file()
        assert (run / "ollama" / "Modelfile").is_file()
        assert "next: cd work_dirs/internlm2_chat_7b_qlora_wishes_e3-tiny/ollama" in proc.stdout


def test_every_file_the_readme_links_to_exists():
    links = re.findall(r"\]\(([^)#:]+)\)", README)
    assert links and [link for link in links if not (PROJECT_ROOT / link).exists()] == []
