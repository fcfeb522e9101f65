import json

from tianji_ft.data.accounting import rejects_path
from tianji_ft.data.dedupe import dedupe_file, dedupe_records, normalise
from tianji_ft.data.reader import iter_records
from tianji_ft.data.writer import write_records


def rec(inp, out):
    return {"conversation": [{"input": inp, "output": out}]}


def test_normalise_drops_whitespace_punctuation_and_case():
    assert normalise("你好， World！ ") == normalise("你好 world") == "你好world"


def test_exact_and_normalised_duplicates(tmp_path):
    records = [rec("你好", "你好！"), rec("你好", "你好！"), rec("你好 ", "你好!"), rec("再见", "再见。")]
    src = tmp_path / "in.jsonl"
    write_records(src, records)
    tally = dedupe_file(src, tmp_path / "out.jsonl", report=tmp_path / "r.json")
    assert [r for _, r in iter_records(tmp_path / "out.jsonl")] == [records[0], records[3]]
    rejects = [json.loads(x) for x in rejects_path(tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["index"], r["reason"], r["detail"]) for r in rejects] == [
        (1, "exact duplicate", "same as record 0"),
        (2, "duplicate after normalising whitespace/punctuation", "same as record 0")]
    assert tally.read == 4 == tally.written + tally.rejected


def test_exact_only_keeps_near_duplicates():
    results = list(dedupe_records([rec("你好", "你好！"), rec("你好", "你好!")], normalised=False))
    assert results == [rec("你好", "你好！"), rec("你好", "你好!")]
