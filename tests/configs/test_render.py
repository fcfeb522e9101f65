"""The committed configs are exactly what the template and table render."""

from __future__ import annotations

import ast
import shutil

from tianji_ft.configs import render, table


def _copy_pack(src, dst):
    dst.mkdir()
    for path in src.glob("*.py"):
        shutil.copy(path, dst / path.name)
    shutil.copy(src / "CHANGELOG.md", dst / "CHANGELOG.md")
    return dst


def test_committed_configs_match_the_render(configs_dir, capsys):
    assert render.main(["--check", "--out", str(configs_dir)]) == 0


def test_check_fails_on_an_edited_file(configs_dir, tmp_path, capsys):
    pack = _copy_pack(configs_dir, tmp_path / "pack")
    target = pack / "internlm2_chat_7b_qlora_wishes_e3.py"
    target.write_text(target.read_text(encoding="utf-8").replace('"TIANJI_LR", "0.0002"', '"TIANJI_LR", "0.001"'),
                      encoding="utf-8")
    assert render.main(["--check", "--out", str(pack)]) == 1
    err = capsys.readouterr().err
    assert "internlm2_chat_7b_qlora_wishes_e3.py: differs" in err
    assert "python -m tianji_ft.configs.render" in err
    # Re-rendering repairs it, and only that file is rewritten.
    assert render.write(pack) == [target]
    assert render.check(pack) == []


def test_check_reports_missing_and_stale_files(configs_dir, tmp_path):
    pack = _copy_pack(configs_dir, tmp_path / "pack")
    (pack / "internlm_chat_7b_qlora_oasst1_e3.py").unlink()
    (pack / "renamed_away.py").write_text(render.render_config("internlm_chat_7b_qlora_oasst1_e3"), encoding="utf-8")
    (pack / "my_own.py").write_text("x = 1\n", encoding="utf-8")  # a user's file is not ours to judge
    problems = "\n".join(render.check(pack))
    assert "internlm_chat_7b_qlora_oasst1_e3.py: missing" in problems
    assert "renamed_away.py: generated but no longer in the table" in problems
    assert "my_own.py" not in problems


def test_check_requires_a_changelog_line_for_each_version(configs_dir, tmp_path, monkeypatch):
    pack = _copy_pack(configs_dir, tmp_path / "pack")
    bumped = dict(table.WORKFLOWS["llama3_8b_instruct_qlora_chinese_e1"], version="9.9.9")
    monkeypatch.setitem(table.WORKFLOWS, "llama3_8b_instruct_qlora_chinese_e1", bumped)
    render.write(pack)
    assert render.check(pack) == [
        f"{pack / 'CHANGELOG.md'}: no line for `llama3_8b_instruct_qlora_chinese_e1` 9.9.9 "
        "(a version bump needs a changelog line)"
    ]


def test_rendered_files_are_flat_and_carry_their_metadata():
    for name in table.WORKFLOWS:
        text = render.render_config(name)
        tree = ast.parse(text)
        assert "_base_" not in text and "read_base" not in text
        assert text.startswith(f"# {name} (version {table.WORKFLOWS[name]['version']})\n{render.GENERATED_MARK}")
        names = [t.id for s in tree.body if isinstance(s, ast.Assign) for t in s.targets if isinstance(t, ast.Name)]
        assert names.count("tianji_meta") == 1
        # _env is bound once and deleted before any dict is built from the settings.
        deletes = [s.lineno for s in tree.body if isinstance(s, ast.Delete)]
        tokenizer = next(s.lineno for s in tree.body if isinstance(s, ast.Assign) and s.targets[0].id == "tokenizer")
        assert len(deletes) == 1 and deletes[0] < tokenizer


def test_long_strings_render_as_readable_literals():
    text = table.MSAGENT_SYSTEM
    source = render.py_str(text)
    assert source.startswith("(\n") and ast.literal_eval(source) == text
    assert ast.literal_eval(render.py_str('引号 "x" 和 \\ 反斜杠')) == '引号 "x" 和 \\ 反斜杠'
