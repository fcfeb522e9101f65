"""The one output-safety rule (check_outputs) and atomic output folders (atomic_dir)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tianji_ft.core.errors import UserError
from tianji_ft.core.fsio import atomic_dir
from tianji_ft.core.outputs import MARKER, Output, check_outputs, made_here, marker_kind, mark


@pytest.fixture
def ws(tmp_path) -> Path:
    """A workspace with Chinese and spaces in its names: a base model, an adapter, a data file."""
    root = tmp_path / "天机 工作区"
    base = root / "models" / "基座 模型"
    base.mkdir(parents=True)
    (base / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}', encoding="utf-8")
    (base / "model.safetensors").write_bytes(b"\0" * 64)
    adapter = root / "work_dirs" / "祝福 run" / "hf_adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}", encoding="utf-8")
    (root / "work_dirs" / "祝福 run" / "iter_8.pth").write_bytes(b"checkpoint")
    data = root / "数据" / "测试 集.jsonl"
    data.parent.mkdir()
    data.write_text('{"conversation": [{"input": "你好", "output": "您好"}]}\n', encoding="utf-8")
    return root


def inputs_of(ws: Path) -> dict:
    return {"base model": ws / "models" / "基座 模型", "adapter": ws / "work_dirs" / "祝福 run" / "hf_adapter",
            "data file": ws / "数据" / "测试 集.jsonl"}


def refusal(outputs, inputs=(), overwrite=False) -> str:
    with pytest.raises(UserError) as err:
        check_outputs(inputs, outputs, overwrite=overwrite)
    message = str(err.value)
    assert err.value.exit_code == 2
    assert "\n" not in message
    return message


# --- an output on an input ------------------------------------------------------------------------
@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("label, where, relation", [
    ("base model", lambda i: i["base model"], "is the base model"),
    ("base model", lambda i: i["base model"] / "merged", "is inside the base model"),
    ("base model", lambda i: i["base model"].parent, "contains the base model"),
    ("adapter", lambda i: i["adapter"], "is the adapter"),
    ("adapter", lambda i: i["adapter"] / "sub" / "深 层", "is inside the adapter"),
    ("adapter", lambda i: i["adapter"].parent, "contains the adapter"),  # the run folder that holds it
    ("data file", lambda i: i["data file"], "is the data file"),
    ("data file", lambda i: i["data file"] / "out", "is inside the data file"),
    ("data file", lambda i: i["data file"].parent, "contains the data file"),
], ids=["is-base", "inside-base", "parent-of-base", "is-adapter", "inside-adapter", "parent-of-adapter",
        "is-data", "inside-data", "parent-of-data"])
def test_an_output_on_an_input_is_refused_naming_both(ws, label, where, relation, overwrite):
    inputs = inputs_of(ws)
    before = sorted(p for p in ws.rglob("*"))
    out = where(inputs)
    message = refusal([Output(out, "-o", kind="model")], inputs, overwrite=overwrite)
    assert f"-o {out} {relation} {inputs[label]}" in message
    assert "nothing was written" in message
    assert sorted(p for p in ws.rglob("*")) == before


def test_the_workspace_root_is_refused_for_the_first_input_it_holds(ws):
    message = refusal([Output(ws, "-o", kind="model")], inputs_of(ws))
    assert f"{ws} contains the base model" in message


def test_a_symlink_to_an_input_is_the_input(ws):
    inputs = inputs_of(ws)
    link = ws / "链接 to adapter"
    link.symlink_to(inputs["adapter"], target_is_directory=True)
    message = refusal([Output(link, "-o", kind="model")], inputs)
    assert f"-o {link} is the adapter {inputs['adapter']}" in message
    message = refusal([Output(link / "merged", "-o", kind="model")], inputs)
    assert "is inside the adapter" in message
    # and the other way round: the input given through a link, the output as the real path
    linked_inputs = {"adapter": link}
    message = refusal([Output(inputs["adapter"].parent, "-o", kind="model")], linked_inputs)
    assert f"contains the adapter {inputs['adapter']}" in message


def test_a_symlinked_parent_folder_is_followed(ws, tmp_path):
    inputs = inputs_of(ws)
    alias = tmp_path / "别名 models"
    alias.symlink_to(ws / "models", target_is_directory=True)
    message = refusal([Output(alias / "基座 模型", "-o", kind="model")], inputs)
    assert "is the base model" in message and str(alias / "基座 模型") in message


def test_dot_dot_is_resolved(ws):
    inputs = inputs_of(ws)
    out = f"{inputs['adapter']}/../hf_adapter"
    assert f"-o {out} is the adapter" in refusal([Output(out, "-o", kind="model")], inputs)
    out = f"{inputs['adapter']}/sub/../.."  # the run folder, spelled through the adapter
    assert "contains the adapter" in refusal([Output(out, "-o", kind="model")], inputs)
    out = f"{ws}/elsewhere/../models/基座 模型/../基座 模型/merged"
    assert "is inside the base model" in refusal([Output(out, "-o", kind="model")], inputs)


def test_dot_dot_after_a_symlink_goes_up_from_the_link_target(ws, tmp_path):
    # realpath semantics: link/.. is the parent of the link's target, not the folder holding the link
    inputs = inputs_of(ws)
    link = tmp_path / "到 adapter"
    link.symlink_to(inputs["adapter"], target_is_directory=True)
    message = refusal([Output(f"{link}/..", "-o", kind="model")], inputs)
    assert "contains the adapter" in message


def test_tilde_is_expanded(ws, monkeypatch):
    monkeypatch.setenv("HOME", str(ws))
    message = refusal([Output("~/models", "-o", kind="model")], inputs_of(ws))
    assert "-o ~/models contains the base model" in message


def test_inputs_as_pairs_and_missing_inputs_are_skipped(ws, tmp_path):
    inputs = inputs_of(ws)
    pairs = [("checkpoint", ws / "work_dirs" / "祝福 run" / "iter_8.pth"), ("compared model", None),
             ("adapter", "")]
    message = refusal([Output(ws / "work_dirs", "-o", kind="adapter")], pairs)
    assert "contains the checkpoint" in message
    check_outputs({"adapter": None, "compared model": ""}, [Output(tmp_path / "new", "-o", kind="model")])
    check_outputs(inputs, [Output(None, "--report"), Output("", "--rejects")])  # unset outputs: nothing to check


def test_an_input_that_is_not_a_path_here_is_not_mistaken_for_one(tmp_path, monkeypatch):
    # a hub id such as internlm/internlm2-chat-7b names no folder here: -o internlm is fine
    monkeypatch.chdir(tmp_path)
    check_outputs({"model": "internlm/internlm2-chat-7b"}, [Output("internlm", "-o", kind="eval")])
    (tmp_path / "internlm" / "internlm2-chat-7b").mkdir(parents=True)  # now it is a folder: protected
    message = refusal([Output("internlm", "-o", kind="eval")], {"model": "internlm/internlm2-chat-7b"})
    assert "contains the model" in message


def test_a_sibling_with_a_common_prefix_is_not_inside(ws):
    inputs = inputs_of(ws)
    sibling = ws / "models" / "基座 模型-merged"  # same string prefix, different folder
    check_outputs(inputs, [Output(sibling, "-o", kind="model")])
    assert not sibling.exists()


# --- two outputs ---------------------------------------------------------------------------------
def test_two_outputs_at_one_place_are_refused_naming_both(tmp_path):
    out = tmp_path / "结果 out"
    message = refusal([Output(out / "report.json", "--report"), Output(out / "report.json", "--rejects")])
    assert f"--report {out / 'report.json'} is --rejects {out / 'report.json'}" in message


def test_nested_outputs_are_refused_either_way(tmp_path):
    folder = tmp_path / "输出 目录"
    message = refusal([Output(folder, "-o", kind="eval"), Output(folder / "坏 rejects.jsonl", "--rejects")])
    assert f"-o {folder} contains --rejects {folder / '坏 rejects.jsonl'}" in message
    message = refusal([Output(folder / "r.json", "--report"), Output(folder, "-o", kind="eval")])
    assert f"--report {folder / 'r.json'} is inside -o {folder}" in message


def test_two_outputs_through_a_symlink_are_one(tmp_path):
    real = tmp_path / "真 out.jsonl"
    link = tmp_path / "链接.jsonl"
    link.symlink_to(real)
    message = refusal([Output(real, "-o"), Output(link, "--rejects")])
    assert str(real) in message and str(link) in message


def test_overwrite_does_not_lift_the_two_outputs_rule(tmp_path):
    refusal([Output(tmp_path / "a", "-o", kind="model"), Output(tmp_path / "a" / "b", "--report")], overwrite=True)


# --- what is already there -----------------------------------------------------------------------
@pytest.mark.parametrize("output", [dict(), dict(kind="model"), dict(folder=True)], ids=["file", "kind", "folder"])
def test_a_fifo_is_refused_and_left_alone(tmp_path, output):
    fifo = tmp_path / "管道 pipe"
    os.mkfifo(fifo)
    message = refusal([Output(fifo, "-o", **output)], overwrite=True)
    assert f"-o {fifo} is not a regular file or folder" in message
    assert fifo.exists() and not fifo.is_file()


def test_a_character_device_is_refused(tmp_path):
    message = refusal([Output("/dev/null", "--report")])
    assert "/dev/null is not a regular file or folder" in message
    link = tmp_path / "null 链接"
    link.symlink_to("/dev/null")
    assert "is not a regular file or folder" in refusal([Output(link, "--report")], overwrite=True)


def test_a_strangers_folder_is_refused_without_overwrite(tmp_path):
    folder = tmp_path / "别人的 文件夹"
    folder.mkdir()
    (folder / "笔记 notes.txt").write_text("不要删", encoding="utf-8")
    message = refusal([Output(folder, "-o", kind="model")])
    assert f"-o {folder} is a folder that is not empty and tianji-ft did not make it" in message
    assert "--overwrite" in message
    check_outputs({}, [Output(folder, "-o", kind="model")], overwrite=True)
    assert (folder / "笔记 notes.txt").read_text(encoding="utf-8") == "不要删"  # checking touches nothing


def test_a_hidden_file_alone_makes_a_folder_not_empty(tmp_path):
    folder = tmp_path / "hidden"
    folder.mkdir()
    (folder / ".git").mkdir()
    assert "tianji-ft did not make it" in refusal([Output(folder, "-o", kind="model")])


@pytest.mark.parametrize("where", ["is", "holds"])
def test_overwrite_never_replaces_a_folder_holding_an_input(ws, where):
    inputs = inputs_of(ws)
    out = inputs["adapter"] if where == "is" else inputs["adapter"].parent
    (out / "别人的 file.txt").write_text("x")
    message = refusal([Output(out, "-o", kind="model")], inputs, overwrite=True)
    assert str(out) in message and str(inputs["adapter"]) in message


def test_overwrite_never_replaces_an_input_marked_as_the_same_kind(ws):
    # the base model is itself an earlier merge's output: its marker would let a rerun replace it
    inputs = inputs_of(ws)
    mark(inputs["base model"], "model")
    message = refusal([Output(inputs["base model"], "-o", kind="model")], inputs)
    assert "is the base model" in message


def test_an_empty_existing_folder_is_accepted(tmp_path):
    folder = tmp_path / "空 文件夹"
    folder.mkdir()
    check_outputs({}, [Output(folder, "-o", kind="model")])
    check_outputs({}, [Output(folder, "-o", folder=True)])


def test_a_folder_of_the_same_kind_is_accepted(tmp_path):
    folder = tmp_path / "上次 merged"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"old")
    mark(folder, "model")
    assert marker_kind(folder) == "model" and made_here(folder, "model") and made_here(folder, None)
    check_outputs({}, [Output(folder, "-o", kind="model")])
    check_outputs({}, [Output(folder, "-o", folder=True)])  # a folder we write files into: any kind of ours


def test_a_folder_of_another_kind_is_refused_naming_the_kind(tmp_path):
    folder = tmp_path / "评测 eval"
    folder.mkdir()
    (folder / "answers.jsonl").write_text("{}\n")
    mark(folder, "eval")
    message = refusal([Output(folder, "-o", kind="model")])
    assert f"-o {folder} is a folder that is not empty and it holds a eval output" in message
    check_outputs({}, [Output(folder, "-o", kind="model")], overwrite=True)


@pytest.mark.parametrize("marker", ["not json", '["model"]', '{"kind": null}', ""])
def test_a_broken_marker_counts_as_a_stranger(tmp_path, marker):
    folder = tmp_path / "坏 marker"
    folder.mkdir()
    (folder / MARKER).write_text(marker)
    (folder / "weights.bin").write_bytes(b"x")
    assert "tianji-ft did not make it" in refusal([Output(folder, "-o", kind="model")])


def test_files_and_folders_must_match_what_the_output_is(tmp_path):
    file = tmp_path / "已有 file.txt"
    file.write_text("x")
    assert f"-o {file} is a file; give a folder" in refusal([Output(file, "-o", kind="model")], overwrite=True)
    check_outputs({}, [Output(file, "--report")])  # an existing regular file: a file output may replace it
    assert f"--report {tmp_path} is a folder; give a file name" in refusal([Output(tmp_path, "--report")])


def test_a_parent_that_is_a_file_is_refused(tmp_path):
    file = tmp_path / "普通 file"
    file.write_text("x")
    message = refusal([Output(file / "sub" / "out", "-o", kind="model")])
    # os.stat says ENOTDIR before _check_parent can name the file: either way one line naming the path
    assert str(file) in message and ("is a file, not a folder" in message or "Not a directory" in message)


def test_inputs_are_checked_before_outputs_exist(ws):
    # the input rule wins over every other message: the user learns the dangerous thing first
    inputs = inputs_of(ws)
    (inputs["adapter"] / "x.txt").write_text("x")
    message = refusal([Output(inputs["adapter"], "-o", kind="model")], inputs)
    assert "is the adapter" in message


# --- atomic_dir ----------------------------------------------------------------------------------
def hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_dir_builds_under_a_temporary_name_and_leaves_the_marker(tmp_path):
    out = tmp_path / "合并 模型"
    with atomic_dir(out, "model") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".合并 模型.") and tmp.name.endswith(".tmp")
        assert not out.exists()
        (tmp / "model.safetensors").write_bytes(b"new")
    assert json.loads((out / MARKER).read_text()) == {"kind": "model"}
    assert (out / "model.safetensors").read_bytes() == b"new"
    assert hidden_leftovers(tmp_path) == []
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask  # not mkdtemp's private 0700


def test_atomic_dir_replaces_its_own_output_of_the_same_kind(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out, "adapter") as tmp:
        (tmp / "old.txt").write_text("old")
    with atomic_dir(out, "adapter") as tmp:
        assert (out / "old.txt").exists()  # the old output stays readable until the new one is done
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "new.txt"]
    assert hidden_leftovers(tmp_path) == []


def test_atomic_dir_never_replaces_a_strangers_folder(tmp_path):
    out = tmp_path / "别人的 文件夹"
    out.mkdir()
    (out / "论文 draft.docx").write_bytes(b"thesis")
    ran = []
    with pytest.raises(UserError, match="tianji-ft did not make it") as err:
        with atomic_dir(out, "model") as tmp:
            ran.append(tmp)
    assert ran == [] and "\n" not in str(err.value) and err.value.exit_code == 2
    assert sorted(p.name for p in out.iterdir()) == ["论文 draft.docx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["别人的 文件夹"]


def test_atomic_dir_never_replaces_another_kind(tmp_path):
    out = tmp_path / "ollama"
    with atomic_dir(out, "ollama") as tmp:
        (tmp / "m.gguf").write_bytes(b"GGUF")
    with pytest.raises(UserError, match="holds a ollama output"):
        with atomic_dir(out, "model"):
            pass
    assert (out / "m.gguf").read_bytes() == b"GGUF" and marker_kind(out) == "ollama"


def test_atomic_dir_with_overwrite_replaces_a_strangers_folder(tmp_path):
    out = tmp_path / "别人的 文件夹"
    out.mkdir()
    (out / "旧.txt").write_text("x")
    with atomic_dir(out, "model", overwrite=True) as tmp:
        (tmp / "新.txt").write_text("y")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "新.txt"]
    assert hidden_leftovers(tmp_path) == []


def test_atomic_dir_accepts_an_empty_folder(tmp_path):
    out = tmp_path / "空"
    out.mkdir()
    with atomic_dir(out, "eval") as tmp:
        (tmp / "a").write_text("a")
    assert marker_kind(out) == "eval" and hidden_leftovers(tmp_path) == []


def test_atomic_dir_refuses_a_fifo(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file or folder"):
        with atomic_dir(fifo, "model", overwrite=True):
            pass
    assert fifo.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]


def test_a_failure_inside_atomic_dir_leaves_the_previous_output_and_no_temporary(tmp_path):
    out = tmp_path / "out"
    with atomic_dir(out, "model") as tmp:
        (tmp / "good.txt").write_text("good")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(out, "model") as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "good.txt"]
    assert hidden_leftovers(tmp_path) == []


def test_atomic_dir_creates_missing_parents(tmp_path):
    out = tmp_path / "新 parent" / "深" / "out"
    with atomic_dir(out, "model") as tmp:
        (tmp / "x").write_text("x")
    assert (out / "x").exists() and marker_kind(out) == "model"


def test_atomic_dir_rerun_through_a_symlink_leaves_nothing_behind(tmp_path):
    real = tmp_path / "真 merged"
    with atomic_dir(real, "model") as tmp:
        (tmp / "old.txt").write_text("old")
    link = tmp_path / "latest"
    link.symlink_to(real, target_is_directory=True)
    with atomic_dir(link, "model") as tmp:
        (tmp / "new.txt").write_text("new")
    assert (link / "new.txt").is_file()
    assert hidden_leftovers(tmp_path) == []
