"""The split's promise across processes: a file, a ratio and a seed give the same bytes anywhere.

The digests below were taken once from the project's own fixture
(``helpers/fixtures/wishes10.jsonl``); a split that drifts with the process
(hash randomisation, the pid, the clock) or with the Python version's random
module fails them, in this process and in fresh ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tianji_ft.core.errors import UserError
from tianji_ft.core.paths import PROJECT_ROOT
from tianji_ft.data import split as split_module
from tianji_ft.data.split import choose_test_records, split_file

WISHES10 = Path(__file__).resolve().parents[1] / "helpers" / "fixtures" / "wishes10.jsonl"
# (ratio, seed) -> sha256 of (train, test), for the JSONL fixture and the same records as a JSON array
PINNED = {
    ".jsonl": {
        (0.3, 42): ("4ee48f8bb3e977bc5a82f981226e414fb6f59e77cfc9c06801fd1f3c886e211f",
                    "e4c1e74dffd156a6e130da434046cd8841e97d2c34a85234076726cad87e36ec"),
        (0.5, 7): ("73520173dd743505e8e352e967cb168e7f5a289568711f07c384f48443b9fec1",
                   "af93c43d4e748dc516b8a9220b1ea9829607b6fccbdf5e85c246ff20ce5c1836"),
    },
    ".json": {
        (0.3, 42): ("1a7eea2f5d0ffffc6b425ada08e84a1fe696c89223ca9bdcb61d7459b503ebcb",
                    "1740fa9c43768f0cf4d754ceed8340e22903b55bc264223528399c9051a09b4d"),
    },
}
PINNED_TEST_LINES = {(0.3, 42): "1,2,5", (0.5, 7): "1,3,6,7,10"}  # 1-based lines of the test split


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source(tmp_path: Path, suffix: str) -> Path:
    if suffix == ".jsonl":
        return WISHES10
    path = tmp_path / "wishes10.json"
    records = [json.loads(line) for line in WISHES10.read_text(encoding="utf-8").splitlines()]
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def split_in_a_fresh_process(src: Path, out: Path, ratio: float, seed: int, hash_seed: str) -> None:
    code = ("import sys; from tianji_ft.data.split import split_file; "
            "split_file(sys.argv[1], sys.argv[2], test_ratio=float(sys.argv[3]), seed=int(sys.argv[4]))")
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    subprocess.run([sys.executable, "-c", code, str(src), str(out), str(ratio), str(seed)], check=True, env=env)


@pytest.mark.parametrize("suffix, ratio, seed", [(s, r, k) for s in PINNED for (r, k) in PINNED[s]])
def test_split_bytes_are_pinned_in_this_process(tmp_path, suffix, ratio, seed):
    _, train, test = split_file(source(tmp_path, suffix), tmp_path / "out", test_ratio=ratio, seed=seed)
    assert (sha(train), sha(test)) == PINNED[suffix][(ratio, seed)]


def test_split_bytes_are_the_same_in_fresh_processes_with_other_hash_seeds(tmp_path):
    for hash_seed in ("1", "2"):
        out = tmp_path / f"hash{hash_seed}"
        split_in_a_fresh_process(WISHES10, out, 0.3, 42, hash_seed)
        assert (sha(out / "train.jsonl"), sha(out / "test.jsonl")) == PINNED[".jsonl"][(0.3, 42)]


@pytest.mark.parametrize("ratio, seed", sorted(PINNED_TEST_LINES))
def test_the_test_split_is_the_pinned_lines_and_the_train_split_the_rest_in_order(tmp_path, ratio, seed):
    lines = WISHES10.read_text(encoding="utf-8").splitlines(keepends=True)
    chosen = [int(n) for n in PINNED_TEST_LINES[(ratio, seed)].split(",")]
    _, train, test = split_file(WISHES10, tmp_path / "out", test_ratio=ratio, seed=seed)
    assert test.read_text(encoding="utf-8") == "".join(lines[n - 1] for n in chosen)
    assert train.read_text(encoding="utf-8") == "".join(line for n, line in enumerate(lines, 1) if n not in chosen)


@pytest.mark.parametrize("n, ratio, expected", [
    (9, 0.3, 3),    # 2.7 rounds up, not down
    (7, 0.3, 2),    # 2.1 rounds down
    (10, 0.26, 3),  # 2.6
    (3, 0.1, 1),    # 0.3 would be none: at least one test record
    (3, 0.9, 2),    # 2.7 would be all: at least one train record
    (2, 0.5, 1),
])
def test_the_test_count_is_n_times_ratio_rounded_to_nearest_with_one_each_side(n, ratio, expected):
    flags = choose_test_records(n, ratio, seed=5)
    assert len(flags) == n and set(flags) <= {0, 1}
    assert sum(flags) == expected


@pytest.mark.parametrize("n, ratio, expected", [(9, 0.3, 3), (7, 0.3, 2), (3, 0.1, 1), (3, 0.9, 2)])
def test_files_hold_the_rounded_counts_on_both_paths(tmp_path, n, ratio, expected):
    records = [{"conversation": [{"input": f"祝福{i}", "output": f"快乐{i}"}]} for i in range(n)]
    for suffix in (".jsonl", ".json"):
        src = tmp_path / f"in{n}{suffix}"
        if suffix == ".jsonl":
            src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        else:
            src.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
        tally, train, test = split_file(src, tmp_path / f"out{n}{suffix}", test_ratio=ratio, seed=3)
        test_records = [r for _, r in split_module.iter_records(test)]
        train_records = [r for _, r in split_module.iter_records(train)]
        assert len(test_records) == expected and len(train_records) == n - expected
        assert sorted(map(json.dumps, test_records + train_records)) == sorted(map(json.dumps, records))
        assert (tally.read, tally.written) == (n, n)


def test_a_bom_and_blank_lines_are_not_records_and_are_not_copied(tmp_path):
    lines = [json.dumps({"conversation": [{"input": f"问{i}", "output": f"答{i}"}]}, ensure_ascii=False)
             for i in range(4)]
    src = tmp_path / "bom.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + "\n  \n".join(lines).encode("utf-8") + b"\n\n\t\n")
    tally, train, test = split_file(src, tmp_path / "out", test_ratio=0.5, seed=1)
    got = train.read_text(encoding="utf-8").splitlines() + test.read_text(encoding="utf-8").splitlines()
    assert sorted(got) == sorted(lines) and len(test.read_text(encoding="utf-8").splitlines()) == 2
    assert not train.read_bytes().startswith(b"\xef\xbb\xbf") and not test.read_bytes().startswith(b"\xef\xbb\xbf")
    assert (tally.read, tally.written) == (4, 4)


def test_a_last_line_without_newline_gets_one(tmp_path):
    src = tmp_path / "nonl.jsonl"
    src.write_text('{"a": "甲"}\n{"a": "乙"}\n{"a": "丙"}', encoding="utf-8")
    _, train, test = split_file(src, tmp_path / "out", test_ratio=0.34, seed=0)
    both = train.read_text(encoding="utf-8") + test.read_text(encoding="utf-8")
    assert sorted(both.splitlines(keepends=True)) == ['{"a": "丙"}\n', '{"a": "乙"}\n', '{"a": "甲"}\n']


@pytest.mark.parametrize("aside", [0, 1 << 40], ids=["forked check", "check in place"])
def test_a_malformed_line_anywhere_stops_the_split_whichever_way_it_is_checked(tmp_path, monkeypatch, aside):
    monkeypatch.setattr(split_module._Check, "ASIDE", aside)
    src = tmp_path / "bad.jsonl"
    good = WISHES10.read_text(encoding="utf-8")
    src.write_text(good + '{"conversation": [祝福]}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.jsonl:11:"):
        split_file(src, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    src.write_text(good, encoding="utf-8")  # and the same file, mended, splits
    tally, _, _ = split_file(src, tmp_path / "out")
    assert tally.written == 10


def test_a_forked_check_left_early_is_ended_and_leaves_no_child(tmp_path):
    # in a fresh interpreter: the check forks only where no other thread runs, and a long test session
    # has threads of its own (servers, loggers)
    code = f"""
import os
from tianji_ft.data import split as split_module
split_module._Check.ASIDE = 0
check = split_module._Check({str(WISHES10)!r})
with check:
    pid = check.pid
    assert pid is not None, "no child was forked"
assert check.pid is None
try:
    os.waitpid(pid, 0)
except ChildProcessError:
    print("reaped")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=PROJECT_ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "reaped", proc.stderr


def test_a_file_that_grows_between_the_passes_is_refused(tmp_path, monkeypatch):
    src = tmp_path / "grows.jsonl"
    src.write_text(WISHES10.read_text(encoding="utf-8"), encoding="utf-8")
    real = split_module.choose_test_records

    def choose_then_grow(n, ratio, seed):
        with open(src, "a", encoding="utf-8") as fh:
            fh.write('{"a": "新"}\n')
        return real(n, ratio, seed)

    monkeypatch.setattr(split_module, "choose_test_records", choose_then_grow)
    with pytest.raises(UserError, match="changed while being split"):
        split_file(src, tmp_path / "out")
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_outputs_take_the_inputs_extension_and_other_names_become_jsonl(tmp_path):
    for name, ext in (("data.JSONL", ".jsonl"), ("data.txt", ".jsonl"), ("data.Json", ".json")):
        src = tmp_path / name
        if ext == ".json":
            src.write_text(json.dumps([json.loads(line) for line in WISHES10.read_text("utf-8").splitlines()],
                                      ensure_ascii=False), encoding="utf-8")
        else:
            src.write_bytes(WISHES10.read_bytes())
        _, train, test = split_file(src, tmp_path / name.replace(".", "_"))
        assert (train.name, test.name) == (f"train{ext}", f"test{ext}")
        assert len(list(split_module.iter_records(train))) + len(list(split_module.iter_records(test))) == 10


def test_another_encoding_is_read_as_records_and_written_as_utf8(tmp_path):
    src = tmp_path / "gbk.jsonl"
    src.write_bytes(WISHES10.read_text(encoding="utf-8").encode("gbk"))
    tally, train, test = split_file(src, tmp_path / "out", encoding="gbk", test_ratio=0.3, seed=42)
    records = [json.loads(line) for line in WISHES10.read_text(encoding="utf-8").splitlines()]
    got = [r for _, r in split_module.iter_records(train)] + [r for _, r in split_module.iter_records(test)]
    assert sorted(map(json.dumps, got)) == sorted(map(json.dumps, records))
    # the same records go to the test split whichever way the file is read
    utf8 = [r for _, r in split_module.iter_records(split_file(WISHES10, tmp_path / "u", seed=42)[2])]
    assert [r for _, r in split_module.iter_records(test)] == utf8
    assert (tally.read, tally.written) == (10, 10)
    test.read_bytes().decode("utf-8")  # UTF-8 out


def test_the_report_holds_the_counts(tmp_path):
    report = tmp_path / "report.json"
    split_file(WISHES10, tmp_path / "out", report=report)
    assert json.loads(report.read_text(encoding="utf-8")) == {"read": 10, "written": 10, "rejected": 0,
                                                             "reasons": {}}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_progress_only_when_asked(tmp_path, monkeypatch, suffix):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    src = source(tmp_path, suffix)
    split_file(src, tmp_path / "quiet")
    assert terminal.getvalue() == ""
    split_file(src, tmp_path / "shown", quiet=False)
    assert terminal.getvalue().startswith(f"\rsplit {src.name}: ")
    # JSONL is copied as bytes, shown in MB; JSON is read as records, counted
    assert (" MB, " if suffix == ".jsonl" else "10/10 records") in terminal.getvalue()


def test_a_blank_first_line_with_a_bom_is_not_a_record(tmp_path):
    src = tmp_path / "bom_blank.jsonl"
    src.write_bytes(b"\xef\xbb\xbf  \n" + WISHES10.read_bytes())
    tally, train, test = split_file(src, tmp_path / "out", test_ratio=0.3, seed=42)
    assert (tally.read, tally.written) == (10, 10)
    assert (sha(train), sha(test)) == PINNED[".jsonl"][(0.3, 42)]  # the same split as without the line


def test_a_child_that_cannot_check_leaves_the_check_to_the_parent(tmp_path, monkeypatch):
    monkeypatch.setattr(split_module._Check, "ASIDE", 0)
    parent, real = os.getpid(), split_module.check_lines

    def fails_in_the_child(path):
        if os.getpid() != parent:
            raise MemoryError("no memory in the child")
        return real(path)

    monkeypatch.setattr(split_module, "check_lines", fails_in_the_child)
    src = tmp_path / "bad.jsonl"
    src.write_text(WISHES10.read_text(encoding="utf-8") + "{not json}\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.jsonl:11:"):
        split_file(src, tmp_path / "out")
    src.write_text(WISHES10.read_text(encoding="utf-8"), encoding="utf-8")
    assert split_file(src, tmp_path / "out")[0].written == 10


def test_the_defaults_are_ratio_0_3_and_seed_42(tmp_path):
    _, train, test = split_file(WISHES10, tmp_path / "out")
    assert (sha(train), sha(test)) == PINNED[".jsonl"][(0.3, 42)]


@pytest.mark.parametrize("ratio", [0, 1, -0.5, 1.5])
def test_a_ratio_outside_0_and_1_is_refused_with_the_value(tmp_path, ratio):
    with pytest.raises(UserError) as err:
        choose_test_records(10, ratio, 1)
    assert str(err.value) == f"--test-ratio must be between 0 and 1 (exclusive), got {ratio}"


def test_one_record_is_refused_with_the_count():
    with pytest.raises(UserError) as err:
        choose_test_records(1, 0.5, 1)
    assert str(err.value) == "1 record(s): a split needs at least 2"


@pytest.mark.parametrize("name, label", [("train.jsonl", "train file (-o)"), ("test.jsonl", "test file (-o)")])
def test_an_output_that_is_the_input_is_refused_by_its_name(tmp_path, name, label):
    src = tmp_path / name
    src.write_bytes(WISHES10.read_bytes())
    with pytest.raises(UserError) as err:
        split_file(src, tmp_path)
    assert str(err.value).startswith(f"{label} {src} is the input {src}")
    assert src.read_bytes() == WISHES10.read_bytes()
    with pytest.raises(UserError) as err:
        split_file(WISHES10, tmp_path / "out", report=WISHES10)
    assert str(err.value).startswith(f"--report {WISHES10} is the input")


def test_utf8_sig_jsonl_is_copied_line_by_line_too(tmp_path):
    src = tmp_path / "sig.jsonl"
    lines = ['{"input": "\\u4f60\\u597d", "output": "好"}'] * 4  # escapes: kept as written, not re-encoded
    src.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode("utf-8") + b"\n")
    _, train, test = split_file(src, tmp_path / "out", encoding="utf-8-sig", test_ratio=0.25, seed=0)
    assert (train.read_text("utf-8") + test.read_text("utf-8")).splitlines() == lines


def test_the_last_line_of_a_long_block_without_newline_gets_one(tmp_path):
    src = tmp_path / "long.jsonl"
    lines = [json.dumps({"n": i, "祝福": "快乐"}, ensure_ascii=False) for i in range(7)]
    src.write_text("\n".join(lines), encoding="utf-8")  # no newline after the last
    _, train, test = split_file(src, tmp_path / "out", test_ratio=0.3, seed=1)
    both = train.read_text("utf-8").splitlines(keepends=True) + test.read_text("utf-8").splitlines(keepends=True)
    assert sorted(both) == sorted(line + "\n" for line in lines)


@pytest.mark.parametrize("first", [b"{}", b"\xef\xbb\xbf1", b"\xef\xbb\xbf{}"])
def test_a_short_first_line_is_a_record(tmp_path, first):
    src = tmp_path / "short.jsonl"
    src.write_bytes(first + b"\n" + WISHES10.read_bytes())
    tally, _, _ = split_file(src, tmp_path / "out")
    assert (tally.read, tally.written) == (11, 11)


def test_a_file_that_changes_between_the_passes_says_so(tmp_path, monkeypatch):
    src = tmp_path / "grows.jsonl"
    src.write_text(WISHES10.read_text(encoding="utf-8"), encoding="utf-8")
    real = split_module.choose_test_records

    def choose_then_grow(n, ratio, seed):
        with open(src, "a", encoding="utf-8") as fh:
            fh.write('{"a": "新"}\n')
        return real(n, ratio, seed)

    monkeypatch.setattr(split_module, "choose_test_records", choose_then_grow)
    with pytest.raises(UserError) as err:
        split_file(src, tmp_path / "out")
    assert str(err.value) == f"{src}: changed while being split; run again"


@pytest.fixture
def forked(monkeypatch):
    """The check in a forked child even for a small file, and even if an earlier test left a thread
    behind; yields the calls of check_lines made in this process (the child's are its own)."""
    monkeypatch.setattr(split_module._Check, "ASIDE", 0)
    monkeypatch.setattr(split_module.threading, "active_count", lambda: 1)
    parent, real, calls = os.getpid(), split_module.check_lines, []

    def counted(path):
        if os.getpid() == parent:
            calls.append(path)
        return real(path)

    monkeypatch.setattr(split_module, "check_lines", counted)
    return calls


def test_a_forked_check_reports_a_bad_line_itself(tmp_path, forked):
    src = tmp_path / "bad.jsonl"
    src.write_text(WISHES10.read_text(encoding="utf-8") + '{"祝福": 快乐}\n', encoding="utf-8")
    with pytest.raises(UserError) as err:
        split_file(src, tmp_path / "out")
    assert str(err.value).startswith(f"{src}:11:") and "malformed JSON" in str(err.value)
    assert forked == []  # the child's report was enough: no second check here


def test_a_forked_check_of_a_good_file_is_not_repeated(tmp_path, forked):
    tally, _, _ = split_file(WISHES10, tmp_path / "out")
    assert tally.written == 10 and forked == []


@pytest.mark.parametrize("size, in_child", [((1 << 20) - 128, False), (1 << 20, True)])
def test_files_from_one_mib_up_are_checked_in_a_child_smaller_ones_in_place(tmp_path, monkeypatch, size, in_child):
    monkeypatch.setattr(split_module.threading, "active_count", lambda: 1)
    parent, real, calls = os.getpid(), split_module.check_lines, []
    monkeypatch.setattr(split_module, "check_lines",
                        lambda path: (calls.append(path) if os.getpid() == parent else None, real(path))[1])
    line = b'{"a": "' + b"x" * 118 + b'"}\n'  # 128 bytes
    src = tmp_path / "big.jsonl"
    src.write_bytes(line * (size // 128))
    assert src.stat().st_size == size
    split_file(src, tmp_path / "out")
    assert (calls == []) is in_child
