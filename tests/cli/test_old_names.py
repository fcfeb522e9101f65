"""Renamed options keep working under their old names, with one note naming the new one."""

from __future__ import annotations

from tianji_ft.cli import build_parser


def test_old_names_parse_to_the_same_value_with_a_note(capsys):
    new = build_parser().parse_args(["synth", "wishes", "--api-model", "deepseek-chat", "-o", "out"])
    assert capsys.readouterr().err == ""
    old = build_parser().parse_args(["synth", "wishes", "--model", "deepseek-chat", "--out", "out"])
    err = capsys.readouterr().err
    assert (old.model, old.out) == (new.model, new.out) == ("deepseek-chat", new.out)
    assert "--model is the old name of --api-model" in err and "--out is the old name of --output" in err
    build_parser().parse_args(["models", "download", "internlm2-chat-7b", "--out", "m"])
    assert "--out is the old name of --output" in capsys.readouterr().err
