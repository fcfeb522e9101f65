"""The journal's promise against a real kill: what ``append`` returned from is on disk, whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest

from tianji_ft.core.errors import UserError
from tianji_ft.synth import journal as journal_module
from tianji_ft.synth.journal import DirLock, Journal


def entry(i: int, status: str = "ok") -> dict:
    return {"id": f"{i}|正常|妈妈|生日", "status": status, "record": {"text": "祝妈妈生日快乐！" * (i % 3 + 1)}}


def test_appends_that_returned_survive_a_sigkill_of_the_writer(tmp_path):
    path = tmp_path / "out" / "run 1" / "journal.jsonl"  # its folders are made on the first append
    code = f"""
import os, signal, sys
from tianji_ft.synth.journal import Journal
j = Journal({str(path)!r})
for i in range(25):
    j.append({{"id": str(i), "status": "ok", "record": {{"text": "祝福" * i}}}})
print("appended", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == -9 and result.stdout == "appended\n", result.stderr
    assert [(e["id"], e["record"]["text"]) for e in Journal(path).load()] == [(str(i), "祝福" * i) for i in range(25)]


def test_each_append_is_synced_before_it_returns(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(journal_module.os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    j = Journal(tmp_path / "journal.jsonl")
    for i in range(3):
        j.append(entry(i))
        assert len(synced) == i + 1
        assert (tmp_path / "journal.jsonl").read_text(encoding="utf-8").count("\n") == i + 1
    j.close()


def test_entries_are_one_utf8_line_each_with_chinese_kept(tmp_path):
    j = Journal(tmp_path / "journal.jsonl")
    j.append(entry(1))
    j.close()
    raw = (tmp_path / "journal.jsonl").read_bytes()
    assert raw == (json.dumps(entry(1), ensure_ascii=False) + "\n").encode("utf-8")


def open_descriptors_of(path) -> int:
    return sum(os.path.realpath(f"/proc/self/fd/{fd}") == str(path) for fd in os.listdir("/proc/self/fd"))


def test_close_releases_the_file_then_append_reopens_and_closing_twice_is_harmless(tmp_path):
    j = Journal(tmp_path / "journal.jsonl")
    j.append(entry(0))
    assert open_descriptors_of(tmp_path / "journal.jsonl") == 1
    j.close()
    assert open_descriptors_of(tmp_path / "journal.jsonl") == 0
    j.close()
    j.append(entry(1))
    j.close()
    assert [e["id"] for e in Journal(tmp_path / "journal.jsonl").load()] == [entry(0)["id"], entry(1)["id"]]


def test_appends_from_many_threads_stay_whole_lines(tmp_path):
    j = Journal(tmp_path / "journal.jsonl")
    threads = [threading.Thread(target=lambda t=t: [j.append(entry(t * 100 + i)) for i in range(40)])
               for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    j.close()
    ids = [e["id"] for e in Journal(tmp_path / "journal.jsonl").load()]
    assert sorted(ids) == sorted(entry(t * 100 + i)["id"] for t in range(6) for i in range(40))


def test_a_missing_or_empty_journal_is_no_entries_and_is_not_created(tmp_path):
    assert Journal(tmp_path / "absent.jsonl").load() == [] and not (tmp_path / "absent.jsonl").exists()
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert Journal(tmp_path / "empty.jsonl").load() == []
    assert (tmp_path / "empty.jsonl").read_bytes() == b""


def test_a_journal_that_is_one_torn_line_is_emptied_by_repair_only(tmp_path, capsys):
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"id": "1", "stat')
    assert Journal(path).load(repair=False) == [] and path.read_bytes() == b'{"id": "1", "stat'
    assert Journal(path).load() == [] and path.read_bytes() == b""
    assert capsys.readouterr().err == ""  # a torn tail is expected after a kill: no warning


def test_a_lone_complete_entry_without_newline_is_kept_and_given_one(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text(json.dumps(entry(0), ensure_ascii=False), encoding="utf-8")
    j = Journal(path)
    assert j.load() == [entry(0)]
    assert path.read_text(encoding="utf-8").endswith("}\n")
    j.append(entry(1))
    j.close()
    assert Journal(path).load() == [entry(0), entry(1)]


def test_lines_that_are_not_entries_are_ignored_with_one_warning_naming_the_count(tmp_path, capsys):
    path = tmp_path / "journal.jsonl"
    lines = [json.dumps(entry(0)), "[1, 2]", '{"id": "x"}', '{"status": "ok"}', "\xff", json.dumps(entry(1)), ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    assert Journal(path).load() == [entry(0), entry(1)]
    assert capsys.readouterr().err == (f"tianji-ft: warning: {path}: 4 unreadable line(s) ignored; their items will "
                                       "be requested again\n")
    Journal(tmp_path / "absent").load()
    path.write_text(json.dumps(entry(0)) + "\n", encoding="utf-8")
    Journal(path).load()
    assert capsys.readouterr().err == ""


def test_a_torn_line_that_is_not_json_bytes_is_cut_off(tmp_path):
    path = tmp_path / "journal.jsonl"
    good = (json.dumps(entry(0), ensure_ascii=False) + "\n").encode("utf-8")
    path.write_bytes(good + "祝".encode("utf-8")[:2])  # killed mid-character
    assert Journal(path).load() == [entry(0)] and path.read_bytes() == good


def test_the_folder_lock_is_held_against_another_process_and_released(tmp_path):
    folder = tmp_path / "新 输出" / "第一次"
    code = f"""
import sys, time
from tianji_ft.synth.journal import DirLock
with DirLock({str(folder)!r}):
    print("locked", flush=True)
    sys.stdin.readline()
"""
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(UserError) as err:
            with DirLock(folder):
                pass
        assert str(err.value) == (f"another run is writing to {folder}; wait for it to finish or choose another -o")
        assert (folder / ".synth.lock").exists()
    finally:
        holder.communicate("done\n", timeout=30)
    with DirLock(folder) as lock:  # released when the holder left
        assert lock.path == folder / ".synth.lock"
    assert (folder / ".synth.lock").stat().st_mode & 0o111 == 0  # a plain file, not executable
    with DirLock(folder):  # and by us
        pass
