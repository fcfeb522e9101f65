import json

import pytest

from tianji_ft.data.accounting import Rejected, Tally, rejects_path
from tianji_ft.data.records import convert_files, process
from tianji_ft.data.reader import iter_records
from tianji_ft.core.errors import UserError


def read_lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_record_is_written_or_rejected_with_source_index_and_reason(fixtures_dir, tmp_path):
    src = fixtures_dir / "firefly.jsonl"
    out = tmp_path / "firefly.jsonl"
    report = tmp_path / "report.json"
    tally = convert_files("firefly", [src], out, report=report)
    written = [r for _, r in iter_records(out)]
    rejects = read_lines(rejects_path(out))
    source_lines = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines()]
    assert tally.read == len(source_lines) == len(written) + len(rejects)
    assert [r["index"] for r in rejects] == [5, 6]
    assert all(r["source"] == str(src) for r in rejects)
    assert [r["record"] for r in rejects] == [source_lines[5], source_lines[6]]
    assert [r["reason"] for r in rejects] == ["empty input", "missing field 'target'"]
    data = json.loads(report.read_text())
    assert data == {"read": tally.read, "written": len(written), "rejected": len(rejects),
                    "reasons": {"empty input": 1, "missing field 'target'": 1}}


def test_inputs_are_never_modified_and_cannot_be_overwritten(fixtures_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes((fixtures_dir / "firefly.jsonl").read_bytes())
    before = src.read_bytes()
    convert_files("firefly", [src], tmp_path / "out.jsonl")
    assert src.read_bytes() == before
    with pytest.raises(UserError, match="is the input"):
        convert_files("conversation", [tmp_path / "out.jsonl"], tmp_path / "out.jsonl")


def test_a_bad_line_midway_leaves_no_partial_output(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"input": "你好", "target": "好"}\n{"input": "x", "target": \n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    out.write_text("previous good output\n")
    with pytest.raises(UserError, match=r"in.jsonl:2:\d+: malformed JSON"):
        convert_files("firefly", [src], out)
    assert out.read_text() == "previous good output\n"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]  # no temp files left


def test_stale_rejects_are_removed_when_nothing_is_rejected(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"input": "你好", "target": "好"}\n', encoding="utf-8")
    stale = rejects_path(tmp_path / "out.jsonl")
    stale.write_text("old rejects\n")
    convert_files("firefly", [src], tmp_path / "out.jsonl")
    assert not stale.exists()


def test_several_sources_and_folders_keep_their_own_indices(fixtures_dir, tmp_path):
    tally = convert_files("alpaca", [fixtures_dir / "alpaca.json", fixtures_dir / "alpaca.json"], tmp_path / "o.jsonl")
    rejects = read_lines(rejects_path(tmp_path / "o.jsonl"))
    assert [r["index"] for r in rejects] == [4, 5, 4, 5]
    assert tally.read == 12


def test_options_that_do_not_apply_are_refused(fixtures_dir, tmp_path):
    with pytest.raises(UserError, match=r"option\(s\) question_col do not apply to 'firefly'"):
        convert_files("firefly", [fixtures_dir / "firefly.jsonl"], tmp_path / "o.jsonl", options={"question_col": "Q"})


def test_missing_columns_list_the_ones_present(fixtures_dir, tmp_path):
    with pytest.raises(UserError) as err:
        convert_files("generic", [fixtures_dir / "generic.csv"], tmp_path / "o.jsonl",
                      options={"input_col": "question", "output_col": "回答"})
    assert str(err.value) == (f"{fixtures_dir / 'generic.csv'}: missing column(s) question; columns present: "
                              "问题, 回答, 系统; name the columns with --input-col / --output-col / --system-col")


def test_a_transform_that_loses_rows_is_caught(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"a": 1}\n{"a": 2}\n')

    def drops_one(rows):
        for i, row in enumerate(rows):
            if i == 0:
                yield {"conversation": [{"input": "x", "output": "y"}]}

    with pytest.raises(AssertionError, match="fewer results"):
        process([src], drops_one, tmp_path / "o.jsonl")


def test_tally_line_and_dict():
    tally = Tally()
    tally.read, tally.written = 3, 1
    tally.reject("placeholder answer", 2)
    assert tally.line() == "read 3, written 1, rejected 2 (placeholder answer: 2)"
    assert tally.as_dict() == {"read": 3, "written": 1, "rejected": 2, "reasons": {"placeholder answer": 2}}
    assert Rejected("a") == Rejected("a") and Rejected("a") != Rejected("b")
