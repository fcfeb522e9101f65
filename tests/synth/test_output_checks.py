"""``synth wishes -o DIR`` checks its folder once, before it sends anything: not
the data folder, not inside it, not holding it, and not a stranger's folder;
a folder it made itself resumes."""

import hashlib
import json
import shutil

import pytest

from tianji_ft.cli import main
from tianji_ft.core.outputs import MARKER, marker_kind
from tianji_ft.synth.wishes import JOURNAL_FILE, RUN_FILE
from tianji_ft.synth.wishes_data import default_wishes_dir

FAST = ["--backoff-base", "0.01", "--backoff-max", "0.05", "--timeout", "5"]


def wishes_args(server, out, data_dir, *extra):
    return ["synth", "wishes", "--base-url", server.url, "--api-model", "fake-model", "--api-key-env", "TIANJI_TEST_KEY",
            "-o", str(out), "--data-dir", str(data_dir), "--names", "同事", "--scenes", "生日", *FAST, *extra]


def snapshot(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


@pytest.fixture()
def data_dir(tmp_path):
    folder = tmp_path.resolve() / "数据 wishes"
    shutil.copytree(default_wishes_dir(), folder)
    return folder


@pytest.mark.parametrize("where", ["is", "inside", "holds"])
def test_the_folder_may_not_be_hold_or_lie_inside_the_data_folder(fake_llm, api_key, tmp_path, capsys, data_dir, where):
    out = {"is": data_dir, "inside": data_dir / "gen", "holds": data_dir.parent}[where]
    before = snapshot(tmp_path)
    assert main(wishes_args(fake_llm, out, data_dir)) == 2
    err = capsys.readouterr().err
    assert err.startswith("tianji-ft: error: ") and err.count("\n") == 1
    assert str(out) in err and str(data_dir) in err
    assert snapshot(tmp_path) == before and fake_llm.total == 0


def test_a_folder_with_a_strangers_file_is_refused(fake_llm, api_key, tmp_path, capsys, data_dir):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "论文.docx").write_bytes(b"my thesis")
    before = snapshot(tmp_path)
    assert main(wishes_args(fake_llm, out, data_dir)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out) in err and "not empty" in err and "did not make it" in err
    assert snapshot(tmp_path) == before and fake_llm.total == 0


def test_a_folder_it_made_resumes_and_an_empty_one_is_used(fake_llm, api_key, tmp_path, capsys, data_dir):
    out = tmp_path / "gen"
    out.mkdir()  # empty: fine
    assert main(wishes_args(fake_llm, out, data_dir, "--max-requests", "1")) == 4
    assert marker_kind(out) == "synth"
    sent = fake_llm.total
    assert main(wishes_args(fake_llm, out, data_dir)) == 0  # the resume is allowed
    assert fake_llm.total == 3 == sent + 2  # 同事 x 生日 x 3 styles, the first not sent again
    capsys.readouterr()


def test_a_run_folder_from_before_the_marker_resumes(fake_llm, api_key, tmp_path, capsys, data_dir):
    out = tmp_path / "old"
    assert main(wishes_args(fake_llm, out, data_dir, "--max-requests", "1")) == 4
    (out / MARKER).unlink()  # as an older version left it: only its own files
    assert set(p.name for p in out.iterdir()) >= {JOURNAL_FILE, RUN_FILE}
    assert main(wishes_args(fake_llm, out, data_dir)) == 0
    assert marker_kind(out) == "synth" and fake_llm.total == 3
    lines = (out / "wishes.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and all(json.loads(line)["meta"]["name"] == "同事" for line in lines)
    capsys.readouterr()


def test_a_folder_of_another_command_is_refused(fake_llm, api_key, tmp_path, capsys, data_dir):
    out = tmp_path / "eval_out"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"kind": "eval"}))
    (out / "report.json").write_text("{}")
    assert main(wishes_args(fake_llm, out, data_dir)) == 2
    err = capsys.readouterr().err
    assert "holds a eval output" in err or "eval" in err
    assert fake_llm.total == 0
