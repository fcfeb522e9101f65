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


def test_no_verb_prints_help_in_workflow_order(capsys):
    from tianji_ft.cli import main

    assert main([]) == 0
    out = capsys.readouterr().out
    verbs = out.split("positional arguments:")[1].splitlines()[2:]
    listed = [line.split()[0] for line in verbs if line.startswith("    ") and not line.startswith("     ")]
    assert listed.index("data") < listed.index("train") < listed.index("merge") < listed.index("chat") < listed.index("pipeline")
    assert "weights:" in out and "convert, merge, export" in out


@pytest.mark.parametrize("typo, suggestion", [("trian", "train"), ("mereg", "merge"), ("exprot", "export")])
def test_a_mistyped_verb_gets_a_did_you_mean(typo, suggestion, capsys):
    from tianji_ft.cli import main

    assert main([typo]) == 2
    assert capsys.readouterr().err.strip() == f"tianji-ft: error: unknown verb '{typo}'; did you mean '{suggestion}'?"


def test_every_option_and_positional_of_every_verb_has_help():
    import argparse

    from tianji_ft.cli import build_parser

    missing = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
            elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)) and not action.help:
                missing.append(f"{' '.join(path)} {action.option_strings or action.dest}")

    walk(build_parser(), ["tianji-ft"])
    assert missing == []


@pytest.mark.parametrize("verb, use", [("chat", "chat"), ("eval", "eval"), ("serve", "serve")])
def test_sampling_defaults_come_from_the_one_table(verb, use):
    from tianji_ft.cli import build_parser
    from tianji_ft.core.sampling import DEFAULTS

    args = build_parser().parse_args([verb, "model", *(["--prompts", "p.txt"] if verb == "eval" else [])])
    for key in ("temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens"):
        assert getattr(args, key) == DEFAULTS[use][key], (verb, key)
    assert DEFAULTS["eval"]["temperature"] == 0.0  # eval is greedy: scores compare across runs


def test_one_vocabulary_with_the_old_names_still_accepted():
    from tianji_ft.cli import build_parser

    parser = build_parser()
    for argv in (["synth", "wishes", "-o", "d", "--api-model", "m"], ["synth", "wishes", "--out", "d", "--model", "m"],
                 ["synth", "wishes", "--output", "d", "--api-model", "m"]):
        args = parser.parse_args(argv)
        assert str(args.out) == "d" and args.model == "m", argv
    for flag in ("-o", "--output", "--out"):
        assert parser.parse_args(["models", "download", "x", flag, "d"]).out == "d"
