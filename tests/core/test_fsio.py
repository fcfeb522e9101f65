"""Atomic files: a reader sees the old file or the whole new one, never a part; nothing is left behind."""

from __future__ import annotations

import hashlib
import json
import os
import threading

import pytest

from tianji_ft.core import fsio
from tianji_ft.core.fsio import atomic_open, sha256_file, write_json


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_the_new_file_appears_whole_at_the_end_under_its_own_name(tmp_path):
    path = tmp_path / "祝福 数据.jsonl"
    path.write_text("旧\n", encoding="utf-8")
    with atomic_open(path) as fh:
        fh.write("新的一行\n")
        assert path.read_text(encoding="utf-8") == "旧\n"  # the old file until the end
        (tmp_name,) = leftovers(tmp_path)
        assert tmp_name.startswith(".祝福 数据.jsonl.") and tmp_name.endswith(".tmp")
    assert path.read_text(encoding="utf-8") == "新的一行\n"
    assert leftovers(tmp_path) == []


def test_text_is_utf8_with_unix_newlines_and_binary_is_as_written(tmp_path):
    with atomic_open(tmp_path / "t.txt") as fh:
        fh.write("第一行\r\n第二行\n")
    assert (tmp_path / "t.txt").read_bytes() == "第一行\r\n第二行\n".encode("utf-8")
    with atomic_open(tmp_path / "nl.txt") as fh:
        fh.write("a\nb")
    assert (tmp_path / "nl.txt").read_bytes() == b"a\nb"
    with atomic_open(tmp_path / "gbk.txt", encoding="gbk") as fh:
        fh.write("祝福")
    assert (tmp_path / "gbk.txt").read_bytes() == "祝福".encode("gbk")
    with atomic_open(tmp_path / "b.bin", "wb") as fh:
        fh.write(b"\x00\xff\r\n")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff\r\n"


def test_a_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old", encoding="utf-8")
    for error in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with atomic_open(path) as fh:
                fh.write("half")
                raise error
        assert path.read_text(encoding="utf-8") == "old" and leftovers(tmp_path) == []


def test_a_missing_parent_is_made(tmp_path):
    path = tmp_path / "新" / "深" / "out.txt"
    with atomic_open(path) as fh:
        fh.write("x")
    assert path.read_text() == "x"


def test_the_file_gets_the_permissions_open_would_give_not_mkstemps(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_open(tmp_path / "f") as fh:
            fh.write("x")
        assert os.umask(0o027) == 0o027  # reading the umask left it as it was
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640


def test_the_data_is_synced_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(fsio.os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(fsio.os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    with atomic_open(tmp_path / "f") as fh:
        fh.write("x" * 10_000)
    assert events == ["fsync", "replace"]


def test_write_json_keeps_chinese_readable_indents_and_ends_with_a_newline(tmp_path):
    path = tmp_path / "r.json"
    write_json(path, {"名字": "祝福", "n": [1, 2]})
    text = path.read_text(encoding="utf-8")
    assert text == '{\n  "名字": "祝福",\n  "n": [\n    1,\n    2\n  ]\n}\n'
    write_json(path, {"a": 1}, indent=None)
    assert path.read_text(encoding="utf-8") == '{"a": 1}\n'
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": 1} and leftovers(tmp_path) == []


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (1 << 20) + 5])
def test_sha256_file_is_hashlibs_digest_of_the_bytes(tmp_path, size):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    assert sha256_file(tmp_path / "f", chunk=7) == hashlib.sha256(data).hexdigest()


def test_readers_meanwhile_see_the_old_or_the_whole_new_file(tmp_path):
    path = tmp_path / "data.json"
    write_json(path, {"n": 0, "pad": "旧" * 5000})
    seen, stop = set(), threading.Event()

    def read():
        while not stop.is_set():
            seen.add(json.loads(path.read_text(encoding="utf-8"))["n"])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(1, 30):
            write_json(path, {"n": n, "pad": "新" * 5000})
    finally:
        stop.set()
        reader.join()
    assert seen <= set(range(30))  # every read parsed: none saw a part


def test_permissions_follow_another_umask_too(tmp_path):
    old = os.umask(0o002)
    try:
        with atomic_open(tmp_path / "g") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert (tmp_path / "g").stat().st_mode & 0o777 == 0o664


def test_a_leftover_from_a_crashed_replacement_is_cleared(tmp_path):
    from tianji_ft.core.fsio import atomic_dir

    out = tmp_path / "out"
    with atomic_dir(out, "model") as tmp:
        (tmp / "a").write_text("a")
    (tmp_path / ".out.old").mkdir()  # a replacement killed between its two renames left this
    (tmp_path / ".out.old" / "stale").write_text("x")
    with atomic_dir(out, "model") as tmp:
        (tmp / "b").write_text("b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "b").exists()


def test_the_callers_error_is_what_leaves_atomic_dir_even_if_it_removed_the_folder(tmp_path):
    import shutil

    from tianji_ft.core.fsio import atomic_dir

    with pytest.raises(RuntimeError, match="the caller's"):
        with atomic_dir(tmp_path / "out", "model") as tmp:
            shutil.rmtree(tmp)
            raise RuntimeError("the caller's")
    assert list(tmp_path.iterdir()) == []
