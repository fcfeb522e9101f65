"""The record pipeline over more rows than one chunk: every record written once, in order, or rejected.

The rows are the project's firefly fixture (5 good rows, then an empty input
and a missing answer) repeated, each copy numbered, so that runs cross the
pipeline's 64-result chunks with and without rejects in them. The expected
output is built here from the fixture, row by row.
"""

from __future__ import annotations

import io
import json
import sys

import pytest

from tianji_ft.core.errors import UserError
from tianji_ft.data import records
from tianji_ft.data.accounting import NoRecordKept, Reject, Rejected, rejects_path
from tianji_ft.data.reader import iter_records
from tianji_ft.data.records import check_fields, convert_files, process

GOOD, BAD = 5, {5: "empty input", 6: "missing field 'target'"}  # the fixture's rows by index


def numbered_copies(fixtures_dir, copies: int, drop_bad: bool = False) -> list[dict]:
    rows = [json.loads(line) for line in (fixtures_dir / "firefly.jsonl").read_text(encoding="utf-8").splitlines()]
    if drop_bad:
        rows = rows[:GOOD]
    out = []
    for j in range(copies):
        for row in rows:
            out.append({**row, "input": row["input"] + f"（第{j}份）"} if row.get("input", "").strip() else dict(row))
    return out


def write_jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def expected_records(rows: list[dict]) -> list[dict]:
    # a number as the answer (the fixture has one) is written as its text
    return [{"conversation": [{"input": r["input"], "output": str(r["target"])}]}
            for r in rows if r.get("input", "").strip() and "target" in r]


def written(path) -> list[dict]:
    return [record for _, record in iter_records(path)]


def rejected(path) -> list[dict]:
    return [json.loads(line) for line in rejects_path(path).read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("copies", [1, 12, 13, 26, 40])  # 60, 65, 130 and 200 rows: under, over, twice a chunk
def test_a_run_without_rejects_writes_every_record_once_in_order(fixtures_dir, tmp_path, copies):
    rows = numbered_copies(fixtures_dir, copies, drop_bad=True)
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(src, rows)
    tally = convert_files("firefly", [src], out)
    assert written(out) == expected_records(rows)
    assert (tally.read, tally.written, tally.rejected) == (len(rows), len(rows), 0)
    assert not rejects_path(out).exists()


@pytest.mark.parametrize("copies", [10, 19, 37])  # 70, 133, 259 rows
def test_rejects_in_some_chunks_and_not_others_leave_the_rest_in_order(fixtures_dir, tmp_path, copies):
    rows = numbered_copies(fixtures_dir, copies)
    # long clean stretches between the fixture's bad rows: chunks with rejects and chunks without
    rows = [r for i, r in enumerate(rows) if i % 7 < GOOD or (i // 7) % 4 == 0]
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(src, rows)
    tally = convert_files("firefly", [src], out)
    assert written(out) == expected_records(rows)
    bad = [i for i, r in enumerate(rows) if not r.get("input", "").strip() or "target" not in r]
    assert [r["index"] for r in rejected(out)] == bad
    assert [r["record"] for r in rejected(out)] == [rows[i] for i in bad]
    assert all(r["source"] == str(src) for r in rejected(out))
    assert (tally.read, tally.written, tally.rejected) == (len(rows), len(rows) - len(bad), len(bad))


def test_a_lone_surrogate_among_many_rows_is_rejected_in_its_place(fixtures_dir, tmp_path):
    rows = numbered_copies(fixtures_dir, 20, drop_bad=True)
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    lines[70] = lines[70].replace("（第14份）", "\\ud800")  # JSON that decodes to a lone surrogate
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tally = convert_files("firefly", [src], out)
    assert written(out) == expected_records(rows[:70] + rows[71:])
    assert [(r["index"], r["reason"]) for r in rejected(out)] == [(70, "lone surrogate")]
    assert (tally.read, tally.written, tally.rejected) == (100, 99, 1)


def test_two_sources_keep_their_own_indices_across_chunks(fixtures_dir, tmp_path):
    rows = numbered_copies(fixtures_dir, 11)  # 77 rows each
    first, second, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "out.jsonl"
    write_jsonl(first, rows)
    rotated = rows[1:] + rows[:1]  # its bad rows one place earlier
    write_jsonl(second, rotated)
    tally = convert_files("firefly", [first, second], out)
    assert written(out) == expected_records(rows) + expected_records(rotated)
    bad = [i for i, r in enumerate(rows) if i % 7 in BAD]
    assert [(r["source"], r["index"]) for r in rejected(out)] == \
        [(str(first), i) for i in bad] + [(str(second), i - 1) for i in bad]
    assert [r["reason"] for r in rejected(out)][:2] == [BAD[5], BAD[6]]
    assert (tally.read, tally.rejected) == (154, 44)


def test_a_transform_that_answers_in_its_own_rhythm_is_matched_row_by_row(tmp_path):
    """Results are matched to rows by position whatever the transform reads ahead."""
    src = tmp_path / "in.jsonl"
    write_jsonl(src, [{"n": i} for i in range(150)])

    def reads_ahead(rows):
        rows = iter(rows)
        while batch := [row for _, row in zip(range(50), rows)]:
            for row in batch:
                yield Rejected("odd", f"n={row['n']}") if row["n"] % 2 else {"conversation": [
                    {"input": f"问{row['n']}", "output": f"答{row['n']}"}]}

    out = tmp_path / "out.jsonl"
    tally = process([src], reads_ahead, out)
    assert [r["conversation"][0]["input"] for r in written(out)] == [f"问{i}" for i in range(0, 150, 2)]
    assert [(r["index"], r["record"], r["detail"]) for r in rejected(out)] == \
        [(i, {"n": i}, f"n={i}") for i in range(1, 150, 2)]
    assert (tally.read, tally.written, tally.rejected) == (150, 75, 75)


@pytest.mark.parametrize("extra", [-1, 1])
def test_a_transform_with_too_few_or_too_many_results_over_many_chunks_is_caught(tmp_path, extra):
    src = tmp_path / "in.jsonl"
    write_jsonl(src, [{"n": i} for i in range(130)])

    def off_by(rows):
        rows = list(rows)
        for row in rows[:len(rows) + extra] + rows[:max(extra, 0)]:
            yield {"conversation": [{"input": str(row["n"]), "output": "好"}]}

    with pytest.raises(AssertionError) as err:
        process([src], off_by, tmp_path / "out.jsonl")
    assert str(err.value) == f"the transform yielded {'fewer' if extra < 0 else 'more'} results than it read rows"
    assert not (tmp_path / "out.jsonl").exists()


def test_an_extra_reject_after_the_last_row_is_caught(tmp_path):
    src = tmp_path / "in.jsonl"
    write_jsonl(src, [{"n": i} for i in range(3)])

    def one_reject_too_many(rows):
        for row in rows:
            yield {"conversation": [{"input": str(row["n"]), "output": "好"}]}
        yield Rejected("extra")

    with pytest.raises(AssertionError) as err:
        process([src], one_reject_too_many, tmp_path / "out.jsonl")
    assert str(err.value) == "the transform yielded more results than it read rows"


def test_every_row_rejected_writes_no_output_but_the_rejects_and_report(tmp_path):
    src, out, report = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "report.json"
    write_jsonl(src, [{"input": "", "target": "空"}] * 70)
    with pytest.raises(NoRecordKept, match="no record kept") as err:
        convert_files("firefly", [src], out, report=report)
    assert err.value.exit_code == 3 and str(rejects_path(out)) in str(err.value)
    assert not out.exists() and len(rejected(out)) == 70
    assert json.loads(report.read_text(encoding="utf-8")) == {"read": 70, "written": 0, "rejected": 70,
                                                             "reasons": {"empty input": 70}}


def test_missing_columns_are_named_with_those_present_and_the_hint(tmp_path):
    with pytest.raises(UserError) as err:
        check_fields(tmp_path / "问答.csv", {"问题": "x", "答案": "y"}, ["input", "target", "问题"], hint="try generic")
    assert str(err.value) == f"{tmp_path / '问答.csv'}: missing column(s) input, target; columns present: 问题, 答案; try generic"
    with pytest.raises(UserError, match="columns present: none$"):
        check_fields(tmp_path / "e.csv", {}, ["input"])
    check_fields(tmp_path / "ok.csv", {"input": 1, "target": 2}, ["input", "target"])
    check_fields(tmp_path / "list.json", ["not", "a", "dict"], ["input"])  # not a table row: the converter decides


def test_only_the_first_row_of_each_file_is_checked_for_columns(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(first, [{"input": "问", "target": "答"}, {"other": 1}])
    write_jsonl(second, [{"other": 1}])
    out = tmp_path / "out.jsonl"
    tally = convert_files("firefly", [first], out)
    assert (tally.written, tally.rejected) == (1, 1)
    with pytest.raises(UserError, match=r"b.jsonl: missing column\(s\) input, target; columns present: other"):
        convert_files("firefly", [first, second], tmp_path / "out2.jsonl")


def test_options_that_do_not_apply_name_the_ones_that_do(fixtures_dir, tmp_path):
    with pytest.raises(UserError) as err:
        convert_files("firefly", [fixtures_dir / "firefly.jsonl"], tmp_path / "o.jsonl",
                      options={"size": 1, "colour": 2})
    assert str(err.value) == "option(s) colour, size do not apply to 'firefly' (its options: system)"
    with pytest.raises(UserError, match=r"its options: none"):
        convert_files("conversation", [fixtures_dir / "firefly.jsonl"], tmp_path / "o.jsonl", options={"x": 1})


def test_a_converter_option_and_the_notes_reach_the_converter(fixtures_dir, tmp_path):
    out = tmp_path / "o.jsonl"
    convert_files("firefly", [fixtures_dir / "firefly.jsonl"], out, options={"system": "你是对联高手"})
    assert all(r["conversation"][0]["system"] == "你是对联高手" for r in written(out))


def test_the_chunk_is_small_enough_to_stay_in_cache_and_large_enough_to_batch():
    assert records._CHUNK == 64  # the unit the tests above cross: 60 / 65 / 130 rows
    assert list(records._positions([Reject, 1, Reject, Reject], Reject)) == [0, 2, 3]
    assert list(records._positions([1, 2], Reject)) == []


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_engine_is_quiet_unless_asked_and_then_names_the_command(tmp_path, monkeypatch):
    src = tmp_path / "in.jsonl"
    write_jsonl(src, [{"input": "问", "target": "答"}] * 3)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    firefly = lambda rows: records.get_converter("firefly").func(rows)  # noqa: E731
    process([src], firefly, tmp_path / "quiet.jsonl")
    assert terminal.getvalue() == ""
    process([src], firefly, tmp_path / "shown.jsonl", quiet=False)
    assert terminal.getvalue().startswith("\rconvert shown.jsonl: ")
    assert "convert shown.jsonl: 3 records, " in terminal.getvalue()
    process([src], firefly, tmp_path / "named.jsonl", quiet=False, label="dedupe")
    assert "\rdedupe named.jsonl: " in terminal.getvalue()


def test_a_missing_column_without_a_hint_ends_at_the_columns(tmp_path):
    src = tmp_path / "in.jsonl"
    write_jsonl(src, [{"问题": "x"}])
    with pytest.raises(UserError) as err:
        process([src], lambda rows: rows, tmp_path / "out.jsonl", fields=["input"])
    assert str(err.value).endswith("missing column(s) input; columns present: 问题")


def test_an_empty_batch_from_a_reader_does_not_end_its_file(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("", encoding="utf-8")
    rows = [{"conversation": [{"input": f"问{i}", "output": f"答{i}"}]} for i in range(5)]

    def batches(path):
        yield 0, []
        yield 0, rows[:2]
        yield 2, []
        yield 2, rows[2:]

    tally = process([src], lambda results: results, tmp_path / "out.jsonl", batch_reader=batches)
    assert written(tmp_path / "out.jsonl") == rows and tally.read == 5


def test_a_converter_that_takes_notes_fills_the_tallys_notes_and_the_report(fixtures_dir, tmp_path):
    report = tmp_path / "report.json"
    tally = convert_files("wishes-merge", [fixtures_dir / "wishes"], tmp_path / "merged.jsonl", report=report)
    assert tally.notes["record key 'meta' left out"] == 2
    assert json.loads(report.read_text(encoding="utf-8"))["notes"] == dict(tally.notes)
