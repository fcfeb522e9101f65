import json

import pytest

from tianji_ft.synth.journal import DirLock, Journal
from tianji_ft.core.errors import UserError


def entry(i, status="ok"):
    return {"id": f"1|正常|n{i}|s", "status": status, "record": {"x": "祝福" * 3}}


def test_entries_round_trip(tmp_path):
    j = Journal(tmp_path / "journal.jsonl")
    for i in range(3):
        j.append(entry(i))
    j.close()
    assert [e["id"] for e in Journal(tmp_path / "journal.jsonl").load()] == [entry(i)["id"] for i in range(3)]


def test_a_torn_last_line_is_cut_off_and_appends_start_clean(tmp_path):
    path = tmp_path / "journal.jsonl"
    good = "".join(json.dumps(entry(i), ensure_ascii=False) + "\n" for i in range(2))
    torn = json.dumps(entry(2), ensure_ascii=False).encode("utf-8")[:-7]  # killed mid-write, mid-character even
    path.write_bytes(good.encode("utf-8") + torn)
    j = Journal(path)
    assert [e["id"] for e in j.load()] == [entry(0)["id"], entry(1)["id"]]
    assert path.read_text(encoding="utf-8") == good
    j.append(entry(3))
    j.close()
    assert [e["id"] for e in Journal(path).load()] == [entry(i)["id"] for i in (0, 1, 3)]


def test_a_complete_last_entry_missing_its_newline_is_kept(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text(json.dumps(entry(0)) + "\n" + json.dumps(entry(1)), encoding="utf-8")
    j = Journal(path)
    assert len(j.load()) == 2
    j.append(entry(2))
    j.close()
    assert len(Journal(path).load()) == 3


def test_load_without_repair_leaves_the_file_alone(tmp_path):
    path = tmp_path / "journal.jsonl"
    raw = (json.dumps(entry(0)) + "\n" + '{"id": "x", "sta').encode()
    path.write_bytes(raw)
    assert len(Journal(path).load(repair=False)) == 1
    assert path.read_bytes() == raw


def test_unreadable_middle_lines_are_skipped_with_a_warning(tmp_path, capsys):
    path = tmp_path / "journal.jsonl"
    path.write_text(json.dumps(entry(0)) + "\ngarbage\n" + json.dumps(entry(1)) + "\n", encoding="utf-8")
    assert len(Journal(path).load()) == 2
    assert "1 unreadable line" in capsys.readouterr().err


def test_a_second_run_on_the_same_folder_is_refused(tmp_path):
    with DirLock(tmp_path):
        with pytest.raises(UserError, match="another run is writing"):
            with DirLock(tmp_path):
                pass
    with DirLock(tmp_path):  # released
        pass
