"""``tianji-ft --help`` and the commands that load no model stay fast: no torch/xtuner at import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tianji_ft.cli import build_parser

HEAVY = ("torch", "transformers", "xtuner", "mmengine", "deepspeed", "peft", "datasets", "pandas")


def imported_heavy_modules(argv: list[str]) -> set[str]:
    code = (
        "import sys\nfrom tianji_ft.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip(), out.stderr[-2000:]
    return set(eval(out.stdout.strip().splitlines()[-1]))


def verbs() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    return sorted(sub.choices)


def test_top_level_help_imports_nothing_heavy():
    assert imported_heavy_modules(["--help"]) == set()


@pytest.mark.parametrize("verb", verbs())
def test_each_verb_help_imports_nothing_heavy_and_shows_an_example(verb, capsys):
    assert imported_heavy_modules([verb, "--help"]) == set()
    with pytest.raises(SystemExit):
        build_parser().parse_args([verb, "--help"])
    assert "example:" in capsys.readouterr().out


def test_core_verbs_exist():
    assert {"train", "doctor", "demo", "logs", "status"} <= set(verbs())
