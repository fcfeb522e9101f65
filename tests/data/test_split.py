import json

import pytest

from tianji_ft.data.reader import iter_records
from tianji_ft.data.writer import write_records
from tianji_ft.data.split import choose_test_records, split_file
from tianji_ft.core.errors import UserError


def make(tmp_path, n, name="all.jsonl"):
    path = tmp_path / name
    write_records(path, ({"conversation": [{"input": f"问题{i}", "output": f"回答{i}"}]} for i in range(n)))
    return path


@pytest.mark.parametrize("name", ["all.jsonl", "all.json"])
def test_same_seed_same_bytes_and_nothing_lost(tmp_path, name):
    src = make(tmp_path, 101, name)
    tally, train, test = split_file(src, tmp_path / "a", test_ratio=0.3, seed=7)
    split_file(src, tmp_path / "b", test_ratio=0.3, seed=7)
    suffix = src.suffix
    for part in ("train", "test"):
        assert (tmp_path / "a" / f"{part}{suffix}").read_bytes() == (tmp_path / "b" / f"{part}{suffix}").read_bytes()
    got_train = [r for _, r in iter_records(train)]
    got_test = [r for _, r in iter_records(test)]
    assert len(got_test) == round(101 * 0.3)
    everything = [r for _, r in iter_records(src)]
    assert sorted(map(json.dumps, got_train + got_test)) == sorted(map(json.dumps, everything))
    assert got_train == [r for r in everything if r in got_train]  # input order is kept
    assert (tally.read, tally.written, tally.rejected) == (101, 101, 0)


def test_another_seed_picks_other_records(tmp_path):
    assert choose_test_records(1000, 0.3, 1) != choose_test_records(1000, 0.3, 2)
    assert sum(choose_test_records(1000, 0.3, 1)) == 300


def test_jsonl_lines_are_copied_as_they_are(tmp_path):
    src = tmp_path / "raw.jsonl"
    lines = ['{"conversation": [{"input": "\\u4f60\\u597d", "output": "好"}]}'] * 4
    src.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    _, train, test = split_file(src, tmp_path / "s", test_ratio=0.25, seed=0)
    assert train.read_text().splitlines() == lines[:3] and test.read_text().splitlines() == lines[:1]


def test_bad_json_in_a_jsonl_stops_the_split_without_output(tmp_path):
    src = tmp_path / "raw.jsonl"
    src.write_text('{"a": 1}\n{"a": 2}\n{"a": \n', encoding="utf-8")
    with pytest.raises(UserError, match=r"raw.jsonl:3:\d+: malformed JSON"):
        split_file(src, tmp_path / "s")
    assert not (tmp_path / "s" / "train.jsonl").exists()


@pytest.mark.parametrize("ratio", [0, 1, 1.5, -0.1])
def test_ratio_must_be_between_0_and_1(tmp_path, ratio):
    with pytest.raises(UserError, match="between 0 and 1"):
        split_file(make(tmp_path, 10), tmp_path / "s", test_ratio=ratio)


def test_one_record_cannot_be_split(tmp_path):
    with pytest.raises(UserError, match="at least 2"):
        split_file(make(tmp_path, 1), tmp_path / "s")
