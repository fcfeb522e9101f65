"""``tianji-ft configs list | show | copy | diff`` through the CLI entry point."""

from __future__ import annotations

import pytest

from tianji_ft.cli import main
from tianji_ft.configs import registry, table

WISHES = "internlm2_chat_7b_qlora_wishes_e3"
WISHES_DPO = "internlm2_chat_7b_qlora_wishes_dpo_e1"


def test_list(capsys):
    assert main(["configs", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["NAME", "VERSION"]
    assert sorted(line.split()[0] for line in lines[1:]) == sorted(table.WORKFLOWS)
    row = next(line for line in lines if line.startswith(WISHES + " "))
    assert row.split()[1:] == [table.WORKFLOWS[WISHES]["version"], "internlm/internlm2-chat-7b", "internlm2_chat", "qlora", "conversation"]
    dpo = next(line for line in lines if line.startswith(WISHES_DPO + " "))
    assert dpo.split()[2:] == ["internlm/internlm2-chat-7b", "internlm2_chat", "qlora+dpo", "preference"]


def test_show(capsys):
    assert main(["configs", "show", WISHES]) == 0
    out = capsys.readouterr().out
    assert "template:    internlm2_chat" in out
    assert "Shanghai_AI_Laboratory/internlm2-chat-7b (modelscope)" in out
    assert "  - 祝领导春节快乐，严肃风格" in out
    assert "--eval-freq" in out and "TIANJI_EVAL_FREQ" in out
    assert main(["configs", "show", WISHES, "--file"]) == 0
    assert capsys.readouterr().out == registry.resolve_config(WISHES).read_text(encoding="utf-8")


def test_copy_then_diff_shows_only_the_edit(tmp_path, capsys):
    dest = tmp_path / "my_wishes.py"
    assert main(["configs", "copy", WISHES, str(dest)]) == 0
    assert str(dest) in capsys.readouterr().out
    meta = registry.config_meta(dest)
    assert meta["name"] == "my_wishes" and meta["copied_from"] == f"{WISHES} {table.WORKFLOWS[WISHES]['version']}"
    assert meta["template"] == "internlm2_chat"

    dest.write_text(dest.read_text(encoding="utf-8").replace('"TIANJI_LR", "0.0002"', '"TIANJI_LR", "0.0001"'),
                    encoding="utf-8")
    assert main(["configs", "diff", WISHES, str(dest)]) == 0
    out = capsys.readouterr().out
    assert "default TIANJI_LR: 0.0002 -> 0.0001" in out
    assert "meta name: internlm2_chat_7b_qlora_wishes_e3 -> my_wishes" in out
    assert '-lr = float(_env("TIANJI_LR", "0.0002"))' in out and '+lr = float(_env("TIANJI_LR", "0.0001"))' in out
    changed = [line for line in out.splitlines() if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))]
    assert len(changed) == 5  # the lr line, and the name line replaced by name + copied_from


def test_copy_refuses_to_overwrite_without_force(tmp_path, capsys):
    dest = tmp_path / "mine.py"
    dest.write_text("# my edits\n", encoding="utf-8")
    assert main(["configs", "copy", WISHES, str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tianji-ft: error: ") and "--force" in err and err.count("\n") == 1
    assert dest.read_text(encoding="utf-8") == "# my edits\n"
    assert main(["configs", "copy", WISHES, str(dest), "--force"]) == 0
    assert registry.config_meta(dest)["name"] == "mine"


def test_copy_into_a_folder_keeps_the_name(tmp_path):
    assert main(["configs", "copy", WISHES, str(tmp_path)]) == 0
    assert registry.config_meta(tmp_path / f"{WISHES}.py")["name"] == WISHES


def test_diff_of_two_pack_configs(capsys):
    assert main(["configs", "diff", WISHES, "internlm2_chat_7b_full_wishes_e1"]) == 0
    out = capsys.readouterr().out
    assert "meta deepspeed: zero2 -> zero3" in out and "default TIANJI_LR: 0.0002 -> 4e-05" in out
    assert main(["configs", "diff", WISHES, WISHES]) == 0
    assert "are the same" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["configs", "show", "nope"], ["configs", "copy", "nope", "x.py"],
                                  ["configs", "diff", "nope", WISHES], ["models", "download", "nope"]])
def test_unknown_name_is_one_line_and_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("tianji-ft: error: unknown config 'nope'") and err.count("\n") == 1


def test_help_has_a_copyable_example(capsys):
    with pytest.raises(SystemExit):
        main(["configs", "copy", "--help"])
    assert "example:\n  tianji-ft configs copy " in capsys.readouterr().out


def test_configs_list_json_has_every_config_with_its_version(capsys):
    import json

    from tianji_ft.cli import main
    from tianji_ft.configs.registry import list_configs

    assert main(["configs", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list_configs()
    assert all(r["version"] == table.WORKFLOWS[r["name"]]["version"] for r in rows)
