"""Batched reading and writing keep the record-by-record behaviour: indices,
rejects, error lines and bytes are the same wherever a batch boundary falls."""

import codecs
import json

import pytest

from tianji_ft.data import reader, writer
from tianji_ft.data.accounting import Rejected, rejects_path
from tianji_ft.data.records import convert_files, process
from tianji_ft.data.reader import iter_records
from tianji_ft.data.writer import RecordWriter
from tianji_ft.data.sources import read_batches, read_rows
from tianji_ft.data.split import split_file
from tianji_ft.data.validate import validate_file
from tianji_ft.core.errors import UserError


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(reader, "_BLOCK", 256)  # many blocks from a small file


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_rejects_keep_their_source_index_and_row_across_batches(tmp_path, small_blocks):
    src = tmp_path / "in.jsonl"
    rows = [{"input": f"问{i}", "target": "" if i % 97 == 0 else f"答{i}"} for i in range(3000)]
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + ("\n\n" if i == 500 else "\n")
                           for i, r in enumerate(rows)), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    tally = convert_files("firefly", [src, src], out)
    rejects = _lines(rejects_path(out))
    bad = [i for i in range(3000) if i % 97 == 0]
    assert [r["index"] for r in rejects] == bad + bad
    assert [r["record"] for r in rejects] == [rows[i] for i in bad] * 2
    assert [r["conversation"][0]["input"] for _, r in iter_records(out)][:3] == ["问1", "问2", "问3"]
    assert (tally.read, tally.written) == (6000, 6000 - 2 * len(bad))


def test_a_reader_with_gaps_in_its_indices(tmp_path):
    def reader(path):
        return iter([(0, 1), (5, 2), (6, 3), (9, 4)])

    def transform(rows):
        for row in rows:
            yield Rejected("odd") if row % 2 else {"conversation": [{"input": "q", "output": str(row)}]}

    process([tmp_path / "src"], transform, tmp_path / "o.jsonl", reader=reader)
    assert [r["index"] for r in _lines(rejects_path(tmp_path / "o.jsonl"))] == [0, 6]


def test_a_transform_with_extra_results_is_caught(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"a": 1}\n')
    with pytest.raises(AssertionError, match="more results"):
        process([src], lambda rows: iter([{"a": 1}, {"a": 2}]) if list(rows) else iter(()), tmp_path / "o.jsonl")


def test_the_first_row_comes_alone(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(f'{{"i": {i}}}\n' for i in range(50)))
    batches = list(read_batches(src))
    assert batches[0] == (0, [{"i": 0}]) and batches[1][0] == 1
    assert [i for i, _ in read_rows(src)] == list(range(50))


def test_validate_reports_the_problems_before_a_malformed_line(tmp_path, small_blocks):
    src = tmp_path / "in.jsonl"
    lines = [json.dumps({"conversation": [{"input": "q", "output": "" if i == 40 else "a"}]}) for i in range(60)]
    lines[45] = '{"conversation": '
    src.write_text("\n".join(lines) + "\n")
    problems = list(validate_file(src))
    assert problems[0] == f"{src}:40: turn 0: empty 'output'"
    assert problems[1].startswith(f"{src}:46:") and "malformed JSON" in problems[1]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_split_copies_lines_byte_for_byte(tmp_path, small_blocks, newline):
    records = [json.dumps({"conversation": [{"input": f"问{i}", "output": "答"}]}, ensure_ascii=i % 2 == 0)
               for i in range(200)]
    body = newline.join([" \t", *records[:100], "", *records[100:]])  # blank lines are not records
    src = tmp_path / "in.jsonl"
    src.write_bytes(codecs.BOM_UTF8 + body.encode())  # no newline after the last line
    tally, train, test = split_file(src, tmp_path / "s", test_ratio=0.25, seed=1)
    got = train.read_bytes().split(b"\n")[:-1] + test.read_bytes().split(b"\n")[:-1]
    want = [(r + newline).encode()[:-1] for r in records[:-1]] + [records[-1].encode()]  # the last had no newline
    assert sorted(got) == sorted(want) and len(test.read_bytes().split(b"\n")) - 1 == 50
    assert tally.read == tally.written == 200


def test_tables_with_odd_rows_later_on(tmp_path):
    src = tmp_path / "t.csv"
    rows = ["q,a"] + [f"问{i},答{i}" for i in range(5000)] + [",", "short", "x,y,z"] + ["q1,a1"]
    src.write_text("\n".join(rows) + "\n", encoding="utf-8")
    got = [row for _, row in read_rows(src)]
    assert len(got) == 5003 and got[0] == {"q": "问0", "a": "答0"}
    assert got[5000] == {"q": "short", "a": ""}
    assert got[5001] == {"q": "x", "a": "y", "column3": "z"} and got[5002]["column3"] == ""


def test_write_many_falls_back_for_what_orjson_refuses(tmp_path):
    with RecordWriter(tmp_path / "o.jsonl") as writer:
        writer.write({"n": 1})
        writer.write_many([{"n": 2 ** 70}, {1: "x"}])
    assert (tmp_path / "o.jsonl").read_text() == '{"n":1}\n{"n":1180591620717411303424}\n{"1":"x"}\n'
    assert writer.count == 3


def test_a_bad_line_in_a_later_block_names_its_line(tmp_path, small_blocks):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(f'{{"input": "q{i}", "target": "a"}}\n' for i in range(99)) + '{"input": \n')
    with pytest.raises(UserError, match=r"in.jsonl:100:\d+: malformed JSON"):
        convert_files("firefly", [src], tmp_path / "o.jsonl")


def test_blocks_written_by_the_background_thread_keep_their_order(tmp_path, monkeypatch):
    monkeypatch.setattr(writer.Gather, "SIZE", 1000)
    records = [{"conversation": [{"input": f"问{i}", "output": "答" * (i % 30 + 1)}]} for i in range(3000)]
    for name in ("o.jsonl", "o.json"):
        assert writer.write_records(tmp_path / name, records) == 3000
        assert [r for _, r in iter_records(tmp_path / name)] == records


def test_a_write_error_in_the_background_thread_is_raised_and_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(writer.Gather, "SIZE", 1000)

    def full_disk(fh, parts):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "_write_all", full_disk)
    out = tmp_path / "o.jsonl"
    with pytest.raises(OSError, match="No space left"):
        writer.write_records(out, ({"conversation": [{"input": "q", "output": "a" * 100}]} for _ in range(1000)))
    assert list(tmp_path.iterdir()) == []


def test_a_write_error_in_the_rejects_file_leaves_neither_file(tmp_path, monkeypatch):
    monkeypatch.setattr(writer.Gather, "SIZE", 100)
    calls = []

    def full_disk(fh, parts):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        fh.write(b"".join(parts))

    monkeypatch.setattr(writer, "_write_all", full_disk)
    src = tmp_path / "in.jsonl"
    src.write_text("".join('{"input": "", "target": "%s"}\n' % ("x" * 50) for _ in range(200)))
    with pytest.raises(OSError, match="No space left"):
        convert_files("firefly", [src], tmp_path / "out" / "o.jsonl")
    assert list((tmp_path / "out").iterdir()) == []


def test_parse_lines_takes_odd_lines_one_by_one(tmp_path):
    lines = [b'\xef\xbb\xbf{"a": 1}\n', b"\n", b"  \r\n", b'{"n": NaN}\n', b"[2]\n",
             b'{"a": \n', b'{"a": 3}\n']
    values, err = reader.parse_lines(tmp_path / "x.jsonl", 1, lines)
    assert values[0] == {"a": 1} and values[1]["n"] != values[1]["n"] and values[2] == [2]  # NaN: the stdlib's
    assert str(err).startswith(f"{tmp_path / 'x.jsonl'}:6:") and "malformed JSON" in str(err)
    values, err = reader.parse_lines(tmp_path / "x.jsonl", 1, lines[:5] + lines[6:])
    assert (len(values), values[-1], err) == (4, {"a": 3}, None)


def test_any_header_text_names_its_column(tmp_path):
    names = ['a"b', "c'd", "e\\f", "{g}", "h\ni", "问题", "x", "x"]
    src = tmp_path / "t.csv"
    cells = ",".join('"' + n.replace('"', '""') + '"' for n in names)
    src.write_text(cells + "\n" + ",".join(f"v{i}" for i in range(len(names))) + "\n", encoding="utf-8")
    (_, row), = read_rows(src)
    assert list(row) == ['a"b', "c'd", "e\\f", "{g}", "h\ni", "问题", "x", "x_"]
    assert list(row.values()) == [f"v{i}" for i in range(len(names))]


def test_medqa_still_finds_placeholders_padded_with_spaces():
    from tianji_ft.data.converters import medqa

    rows = [{"Question": "q1", "Answer": " " * 20 + "N/A" + " " * 20}, {"Question": "q2", "Answer": "None\u3000"},
            {"Question": " \t", "Answer": "a"}, {"Question": "q3", "Answer": "\n\n"}, {"Question": "q4", "Answer": "ok"}]
    results = list(medqa(rows, system=None))
    assert [getattr(r, "reason", None) for r in results] == [
        "placeholder answer", "placeholder answer", "empty question", "empty answer", None]
    assert results[0].detail == "N/A" and results[4] == {"conversation": [{"input": "q4", "output": "ok"}]}


@pytest.mark.parametrize("aside", [0, 1 << 40])  # checked in a forked child, or in place
def test_split_checks_every_line_either_way(tmp_path, monkeypatch, aside):
    from tianji_ft.data import split

    monkeypatch.setattr(split._Check, "ASIDE", aside)
    lines = [json.dumps({"conversation": [{"input": f"问{i}", "output": "答"}]}, ensure_ascii=False) for i in range(300)]
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tally, train, test = split_file(good, tmp_path / "g", test_ratio=0.3, seed=5)
    assert tally.written == 300 and len(test.read_text(encoding="utf-8").splitlines()) == 90
    lines[250] = '{"conversation": [{"input": "x", "output": '
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.jsonl:251:\d+: malformed JSON"):
        split_file(bad, tmp_path / "b", test_ratio=0.3, seed=5)
    assert not (tmp_path / "b").exists() or list((tmp_path / "b").iterdir()) == []


def test_a_split_stopped_early_leaves_no_child_behind(tmp_path, monkeypatch):
    import os

    from tianji_ft.data import split

    monkeypatch.setattr(split._Check, "ASIDE", 0)
    src = tmp_path / "one.jsonl"
    src.write_text('{"conversation": [{"input": "q", "output": "a"}]}\n')
    with pytest.raises(UserError, match="at least 2"):
        split_file(src, tmp_path / "s")
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)
