"""Record accounting: the counts, the rejects file and the refusals, each checked as the user sees them."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from tianji_ft.core.errors import UserError
from tianji_ft.data import accounting
from tianji_ft.data.accounting import (EXIT_NO_RECORD, NoRecordKept, Reject, Rejected, RejectSink, Tally,
                                       outputs_of, rejects_path, report_kept, screened, settle, surrogate_reject,
                                       write_report)
from tianji_ft.data.writer import RecordWriter

RECORD = {"conversation": [{"input": "祝妈妈生日快乐", "output": "妈妈，生日快乐！"}]}
LONE = {"conversation": [{"input": "祝\ud800福", "output": "好"}]}


def test_a_new_tally_is_all_zero_and_counts_rejects_by_reason():
    tally = Tally()
    assert (tally.read, tally.written, tally.rejected, tally.reasons, tally.notes) == (0, 0, 0, Counter(), Counter())
    tally.reject("empty input")
    tally.reject("empty input", 2)
    tally.reject("重复")
    assert tally.rejected == 4 and tally.reasons == Counter({"empty input": 3, "重复": 1})
    tally.read, tally.written = 6, 2
    tally.check()
    tally.notes["trailing unanswered turn dropped"] += 2
    assert tally.line() == ("read 6, written 2, rejected 4 (empty input: 3, 重复: 1); "
                            "trailing unanswered turn dropped: 2")
    assert tally.as_dict() == {"read": 6, "written": 2, "rejected": 4, "reasons": {"empty input": 3, "重复": 1},
                               "notes": {"trailing unanswered turn dropped": 2}}
    tally.notes["another note"] += 1
    assert tally.line().endswith("; trailing unanswered turn dropped: 2, another note: 1")


def test_a_tally_without_rejects_or_notes_says_so_briefly():
    tally = Tally()
    tally.read = tally.written = 3
    assert tally.line() == "read 3, written 3, rejected 0"
    assert tally.as_dict() == {"read": 3, "written": 3, "rejected": 0, "reasons": {}}


def test_a_tally_that_does_not_add_up_is_a_bug_with_its_counts():
    tally = Tally()
    tally.read, tally.written = 5, 3
    tally.reject("x")
    with pytest.raises(AssertionError) as err:
        tally.check()
    assert str(err.value) == "record accounting is off: read 5, written 3, rejected 1 (x: 1)"


def test_rejected_and_reject_carry_a_reason_and_a_detail():
    assert Rejected("empty input").detail == "" and Reject("empty input").detail == ""
    assert repr(Rejected("重复")) == "Rejected('重复')"
    assert Rejected("a", "b") == Rejected("a", "b") != Rejected("a", "c")
    assert Rejected("a") != ("a", "")
    err = Reject("malformed history", "entry 2")
    assert (str(err), err.reason, err.detail) == ("malformed history", "malformed history", "entry 2")


def test_the_rejects_file_sits_beside_the_output():
    assert rejects_path("data/train.jsonl").as_posix() == "data/train.rejects.jsonl"
    assert rejects_path("祝福.json").as_posix() == "祝福.rejects.jsonl"
    outputs = outputs_of("o.jsonl", "r.json")
    assert [(str(o.path), o.label) for o in outputs] == [("o.jsonl", "-o"), ("o.rejects.jsonl", "rejects file"),
                                                         ("r.json", "--report")]


def test_the_sink_writes_one_line_per_reject_in_order_with_its_fields(tmp_path):
    path = tmp_path / "out.rejects.jsonl"
    with RejectSink(path) as sink:
        sink.add("a.jsonl", 3, "empty input", {"input": ""})
        sink.add("b.csv", 7, "重复", ["行"], detail="same as record 1", line=8)
        assert not path.exists()  # written atomically at the end
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == [{"source": "a.jsonl", "index": 3, "reason": "empty input", "record": {"input": ""}},
                     {"source": "b.csv", "index": 7, "reason": "重复", "detail": "same as record 1", "line": 8,
                      "record": ["行"]}]
    assert list(lines[1]) == ["source", "index", "reason", "detail", "line", "record"]  # the record last
    assert sink.count == 2


def test_a_sink_without_a_path_only_counts(tmp_path):
    with RejectSink(None) as sink:
        for i in range(3):
            sink.add("a", i, "r")
    assert sink.count == 3 and list(tmp_path.iterdir()) == []


def test_a_run_without_rejects_removes_a_stale_rejects_file(tmp_path):
    path = tmp_path / "out.rejects.jsonl"
    path.write_text("stale\n", encoding="utf-8")
    with RejectSink(path):
        pass
    assert not path.exists()
    with RejectSink(path):  # and with none there, nothing happens
        pass
    assert not path.exists()


def test_a_failure_keeps_the_old_rejects_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.rejects.jsonl"
    path.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError):
        with RejectSink(path) as sink:
            sink.add("a", 0, "r", {"x": 1})
            raise RuntimeError("boom")
    assert path.read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.rejects.jsonl"]
    with pytest.raises(RuntimeError):
        with RejectSink(path):
            raise RuntimeError("boom before any reject")
    assert path.read_text(encoding="utf-8") == "old\n"


def test_finish_writes_out_before_the_rename_and_twice_is_once(tmp_path):
    path = tmp_path / "r.jsonl"
    with RejectSink(path) as sink:
        sink.add("a", 0, "r")
        sink.finish()
        sink.finish()
        (tmp,) = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert json.loads(tmp.read_text(encoding="utf-8"))["reason"] == "r"
        assert not path.exists()
    assert len(path.read_text(encoding="utf-8").splitlines()) == 1


def test_a_failure_after_finish_still_leaves_no_rejects_file(tmp_path):
    path = tmp_path / "r.jsonl"
    with pytest.raises(RuntimeError):
        with RejectSink(path) as sink:
            sink.add("a", 0, "r")
            sink.finish()
            raise RuntimeError("the output failed")
    assert list(tmp_path.iterdir()) == []


def test_settle_counts_what_was_written_and_drops_an_empty_output(tmp_path):
    out = tmp_path / "out.jsonl"
    tally = Tally()
    with RecordWriter(out) as writer, RejectSink(rejects_path(out)) as sink:
        writer.write(RECORD)
        tally.read = 2
        tally.reject("r")
        sink.add("in", 1, "r")
        settle(writer, sink, tally)
    assert tally.written == 1 and out.exists() and rejects_path(out).exists()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("an earlier run\n", encoding="utf-8")
    tally = Tally()
    with RecordWriter(empty) as writer, RejectSink(None) as sink:
        tally.read = 1
        tally.reject("r")
        settle(writer, sink, tally)
    assert tally.written == 0 and not empty.exists()  # no output that could pass for this run's
    tally = Tally()
    tally.read = 1
    with pytest.raises(AssertionError, match="record accounting is off"):
        with RecordWriter(tmp_path / "x.jsonl") as writer, RejectSink(None) as sink:
            settle(writer, sink, tally)


def test_no_record_kept_is_exit_3_and_points_to_the_rejects_when_there_are_some(tmp_path):
    tally = Tally()
    tally.read = 2
    tally.reject("empty input", 2)
    rejects = tmp_path / "o.rejects.jsonl"
    rejects.write_text("{}\n", encoding="utf-8")
    err = NoRecordKept(tmp_path / "o.jsonl", tally, rejects)
    assert isinstance(err, UserError) and err.exit_code == EXIT_NO_RECORD == 3 and err.tally is tally
    assert str(err) == (f"{tmp_path / 'o.jsonl'}: no record kept (read 2, written 0, rejected 2 (empty input: 2))"
                        f"; the reasons are in {rejects}; no output file was written")
    assert "the reasons are in" not in str(NoRecordKept("o.jsonl", tally, tmp_path / "absent.jsonl"))
    assert str(NoRecordKept("o.jsonl", tally)) == ("o.jsonl: no record kept (read 2, written 0, rejected 2 "
                                                    "(empty input: 2)); no output file was written")


def test_report_kept_writes_the_report_then_refuses_an_empty_run(tmp_path):
    report = tmp_path / "report.json"
    tally = Tally()
    tally.read = tally.written = 1
    report_kept(report, tally, tmp_path / "o.jsonl", None)
    assert json.loads(report.read_text(encoding="utf-8")) == tally.as_dict()
    tally = Tally()
    with pytest.raises(NoRecordKept):
        report_kept(report, tally, tmp_path / "o.jsonl", None)
    assert json.loads(report.read_text(encoding="utf-8"))["read"] == 0
    write_report(None, tally)  # no --report: nothing written, no error


def test_a_lone_surrogate_is_rejected_with_where_it_is():
    verdict = surrogate_reject(LONE)
    assert verdict.reason == accounting.SURROGATE_REASON == "lone surrogate"
    assert "\\ud800" in verdict.detail and "input" in verdict.detail
    assert surrogate_reject(RECORD) is None


def upper(rows):
    for row in rows:
        yield {"seen": row}


@pytest.mark.parametrize("batches", [
    [[1, 2, 3]],
    [[LONE, 1], [2, LONE], [LONE]],
    [[1], [LONE, LONE], [2, 3, LONE, 4]],
    [[1, 2, 3], [LONE, 4]],  # a stretch of rows, then a reject before the next row
    [[LONE]],
    [],
])
def test_screened_puts_each_surrogate_reject_in_its_rows_place(batches):
    results = list(screened(batches, upper))
    expected = [surrogate_reject(row) if row is LONE else {"seen": row} for batch in batches for row in batch]
    assert results == expected


def test_screened_catches_a_transform_with_more_results_than_rows():
    def extra(rows):
        for row in rows:
            yield row
        yield "extra"

    with pytest.raises(AssertionError) as err:
        list(screened([[LONE], [1]], extra))
    assert str(err.value) == "the transform yielded more results than it read rows"


def test_screened_lets_the_caller_count_a_transform_that_stops_short():
    def short(rows):
        for row in rows:
            if row == 2:
                return
            yield row

    assert list(screened([[1, 2, 3]], short)) == [1]
