"""The output-safety refusals word for word: each is the one line a user sees, and says what to do."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from tianji_ft.core.errors import UserError
from tianji_ft.core.outputs import Output, check_outputs, made_here, mark, marker_kind


def refusal(inputs, outputs, **kw) -> str:
    with pytest.raises(UserError) as err:
        check_outputs(inputs, outputs, **kw)
    assert err.value.exit_code == 2 and "\n" not in str(err.value)
    return str(err.value)


def test_an_output_on_an_input(tmp_path):
    data = tmp_path / "祝福.jsonl"
    data.write_text("{}\n", encoding="utf-8")
    assert refusal({"data file": data}, [Output(data, "-o")]) == (
        f"-o {data} is the data file {data}; choose an output outside every input (nothing was written)")
    assert refusal({"work dir": tmp_path}, [Output(data, "--report")]) == (
        f"--report {data} is inside the work dir {tmp_path}; choose an output outside every input "
        "(nothing was written)")
    assert refusal({"data file": data}, [Output(tmp_path, "-o", kind="model")]).startswith(
        f"-o {tmp_path} contains the data file {data};")


def test_two_outputs_at_one_place(tmp_path):
    out = tmp_path / "out.jsonl"
    assert refusal({}, [Output(out, "-o"), Output(out, "--report")]) == (
        f"-o {out} is --report {out}; give them different places (nothing was written)")


def test_a_folder_where_a_file_goes_and_a_file_where_a_folder_goes(tmp_path):
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    assert refusal({}, [Output(tmp_path / "d")]) == f"output {tmp_path / 'd'} is a folder; give a file name"
    assert refusal({}, [Output(tmp_path / "f", folder=True)]) == f"output {tmp_path / 'f'} is a file; give a folder"
    assert refusal({}, [Output(tmp_path / "f" / "x.json", "--report")]) == (
        f"--report {tmp_path / 'f' / 'x.json'}: {tmp_path / 'f'} is a file, not a folder")


def test_a_folder_that_is_not_ours(tmp_path):
    folder = tmp_path / "别人的"
    folder.mkdir()
    (folder / "论文.docx").write_bytes(b"x")
    assert refusal({}, [Output(folder, "-o", kind="model")]) == (
        f"-o {folder} is a folder that is not empty and tianji-ft did not make it; choose a new folder or pass "
        "--overwrite to replace it")
    mark(folder, "ollama")
    assert refusal({}, [Output(folder, "-o", kind="model")]).startswith(
        f"-o {folder} is a folder that is not empty and it holds a ollama output;")
    check_outputs({}, [Output(folder, "-o", kind="model")], overwrite=True)


def test_a_pipe(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert refusal({}, [Output(fifo, "-o")]) == (
        f"-o {fifo} is not a regular file or folder (a device, pipe or socket); give a file or folder path")


def test_an_output_that_cannot_be_looked_at(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    assert refusal({}, [Output(loop, "-o")]) == f"-o {loop}: Too many levels of symbolic links"


def test_an_output_is_a_file_named_output_unless_said_otherwise(tmp_path):
    output = Output(tmp_path / "x")
    assert (output.label, output.kind, output.folder, output.is_folder) == ("output", None, False, False)
    assert Output(tmp_path, folder=True).is_folder and Output(tmp_path, kind="eval").is_folder
    with pytest.raises(dataclasses.FrozenInstanceError):
        output.label = "-o"


def test_empty_and_missing_paths_are_skipped_on_both_sides(tmp_path):
    check_outputs({"adapter": None, "base": "", "hub id": "internlm/internlm2-chat-1_8b"},
                  [Output(None, "--report"), Output("", "-o"), Output(tmp_path / "new.jsonl", "-o")])


def test_folders_marked_by_earlier_versions_are_still_ours(tmp_path):
    folder = tmp_path / "merged"
    folder.mkdir()
    (folder / ".tianji_ft_output").write_text(json.dumps({"kind": "model"}) + "\n", encoding="utf-8")
    (folder / "model.safetensors").write_bytes(b"x")
    assert marker_kind(folder) == "model" and made_here(folder, "model") and made_here(folder, None)
    assert not made_here(folder, "adapter") and not made_here(tmp_path, None)
    check_outputs({}, [Output(folder, "-o", kind="model")])


def test_mark_writes_once_and_changes_the_kind(tmp_path):
    mark(tmp_path, "eval")
    marker = tmp_path / ".tianji_ft_output"
    first = marker.stat().st_mtime_ns
    assert marker.read_text(encoding="utf-8") == '{"kind": "eval"}\n'
    os.utime(marker, ns=(0, 0))
    mark(tmp_path, "eval")
    assert marker.stat().st_mtime_ns == 0  # unchanged: not written again
    mark(tmp_path, "model")
    assert marker_kind(tmp_path) == "model" and first
