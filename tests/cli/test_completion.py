"""Shell completion: the code `tianji-ft completion bash` prints, loaded into a real bash, completes
verbs, config names, converter kinds and templates."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tianji_ft.cli import main

# Load the completion, then complete one line as bash does on Tab (COMP_WORDS, COMP_CWORD, the function).
BASH = r'''
eval "$(tianji-ft completion bash)"
COMP_LINE="$LINE"; COMP_POINT=${#LINE}
read -ra COMP_WORDS <<< "$LINE"
[[ "$LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
"$(complete -p tianji-ft | sed -E 's/.* -F ([^ ]+) .*/\1/')" tianji-ft "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
'''


def complete(line: str) -> list[str]:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "LINE": line}
    proc = subprocess.run(["bash", "--norc", "-c", BASH], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [word.strip() for word in proc.stdout.splitlines() if word.strip()]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize("line, expected", [
    ("tianji-ft tra", ["train"]),
    ("tianji-ft data convert med", ["medqa"]),
    ("tianji-ft train internlm2_chat_7b_qlora_wishes_e", ["internlm2_chat_7b_qlora_wishes_e3"]),
    ("tianji-ft chat MODEL --template llama", ["llama3_chat"]),
    ("tianji-ft merge --dt", ["--dtype"]),
])
def test_bash_completes_verbs_configs_kinds_templates_and_options(line, expected):
    assert complete(line) == expected


def test_zsh_code_names_the_command(capsys):
    assert main(["completion", "zsh"]) == 0
    code = capsys.readouterr().out
    assert code.startswith("#compdef tianji-ft")
