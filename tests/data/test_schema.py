import json

import pytest

from tianji_ft.data import reader
from tianji_ft.data.reader import iter_json_values, iter_records
from tianji_ft.data.schema import record_problems
from tianji_ft.data.writer import RecordWriter, write_records
from tianji_ft.core.errors import UserError

GOOD = {"conversation": [{"system": "你是医生", "input": "头疼怎么办？", "output": "先休息。"},
                         {"input": "还疼呢？", "output": "请就医。"}]}


def test_a_good_record_has_no_problems():
    assert record_problems(GOOD) == []


def test_a_later_system_turn_may_have_empty_input():
    record = {"conversation": [{"input": "查天气", "output": "Action:weather"},
                               {"system": "Response:晴", "input": "", "output": "Final Answer:晴"}]}
    assert record_problems(record) == []


@pytest.mark.parametrize("record, expected", [
    ([1, 2], "record is a JSON array"),
    ({"instruction": "x"}, "missing 'conversation' (keys present: instruction)"),
    ({"conversation": []}, "non-empty list"),
    ({"conversation": ["hi"]}, "turn 0: a JSON string"),
    ({"conversation": [{"input": "a", "output": "b", "src_input": "c"}]}, "unknown key(s) 'src_input'"),
    ({"conversation": [{"input": "a"}]}, "turn 0: missing 'output'"),
    ({"conversation": [{"input": "a", "output": "  "}]}, "turn 0: empty 'output'"),
    ({"conversation": [{"input": "", "output": "b"}]}, "turn 0: empty 'input'"),
    ({"conversation": [{"input": "a", "output": 3}]}, "'output' is a JSON number, not text"),
    ({"conversation": [{"input": "a", "output": "b"}, {"output": "c"}]}, "turn 1: missing 'input'"),
])
def test_problems_are_named(record, expected):
    problems = record_problems(record)
    assert any(expected in p for p in problems), problems


def _write(tmp_path, name, text, mode="w"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_skips_blank_lines_and_a_bom(tmp_path):
    path = _write(tmp_path, "a.jsonl", b'\xef\xbb\xbf{"a": 1}\n\n   \n{"a": "\xe4\xbd\xa0"}\r\n')
    assert list(iter_json_values(path)) == [(0, {"a": 1}), (1, {"a": "你"})]


@pytest.mark.parametrize("text", ['[{"a": 1}, {"a": 2}]', '{"a": 1}\n{"a": 2}', ' {"a": 1} {"a": 2} ',
                                  '[\n  {"a": 1},\n  {"a": 2}\n]\n'])
def test_json_arrays_objects_and_jsonl_in_json_files(tmp_path, text):
    assert [v for _, v in iter_json_values(_write(tmp_path, "a.json", text))] == [{"a": 1}, {"a": 2}]


def test_a_jsonl_file_holding_an_array_is_read_as_an_array(tmp_path):
    path = _write(tmp_path, "tutorial.jsonl", '[\n {"a": 1},\n {"a": 2}\n]')
    assert len(list(iter_json_values(path))) == 2


def test_values_cut_by_chunk_boundaries_are_read_whole(tmp_path, monkeypatch):
    records = [{"n": 10 ** 12 + i, "t": "中文" * (i % 7), "ok": True} for i in range(300)]
    path = _write(tmp_path, "a.json", json.dumps(records, ensure_ascii=False, indent=1))
    real_init = reader._Scanner.__init__

    def tiny_chunks(self, fh, p):
        real_init(self, fh, p)
        self.chunk = 7

    monkeypatch.setattr(reader._Scanner, "__init__", tiny_chunks)
    assert [v for _, v in iter_json_values(path)] == records


@pytest.mark.parametrize("name, text, where, what", [
    ("a.jsonl", '{"a": 1}\n{"a": }\n', ":2:7:", "Expecting value"),
    ("a.json", '[\n {"a": 1},\n {"a" 2}\n]', ":3:7:", "Expecting ':' delimiter"),
    ("a.json", '[{"a": 1},\n {"a": 2}', ":2:10:", "missing ']'"),
    ("a.json", '[{"a": 1}] x', ":1:12:", "extra data"),
    ("a.json", '[{"a": 1},]', ":1:11:", "Expecting value"),
    ("a.json", '[{"a": 1} {"a": 2}]', ":1:11:", "expected ',' or ']'"),
])
def test_malformed_json_names_file_line_and_column(tmp_path, name, text, where, what):
    path = _write(tmp_path, name, text)
    with pytest.raises(UserError) as err:
        list(iter_json_values(path))
    assert str(err.value).startswith(f"{path}{where} malformed JSON")
    assert what in str(err.value)


def test_malformed_json_far_into_a_big_array_is_located(tmp_path):
    body = ",\n".join(json.dumps({"i": i, "t": "字" * 50}) for i in range(5000))
    path = _write(tmp_path, "big.json", "[\n" + body + ",\n{oops}\n]")
    with pytest.raises(UserError, match=r":5002:2: malformed JSON"):
        list(iter_json_values(path))


@pytest.mark.parametrize("name", ["gbk.jsonl", "gbk.json"])
def test_a_file_not_in_utf8_says_so_and_reads_with_its_encoding(tmp_path, name):
    path = _write(tmp_path, name, '{"input": "你好", "output": "再见"}\n'.encode("gbk"))
    with pytest.raises(UserError, match=r"not valid utf-8 text .*--encoding"):
        list(iter_json_values(path))
    assert list(iter_json_values(path, encoding="gbk")) == [(0, {"input": "你好", "output": "再见"})]


@pytest.mark.parametrize("text", ["", "  \n\n"])
def test_an_empty_file_is_an_error(tmp_path, text):
    with pytest.raises(UserError, match="the file is empty"):
        list(iter_json_values(_write(tmp_path, "e.jsonl", text)))


def test_iter_records_refuses_an_empty_array(tmp_path):
    with pytest.raises(UserError, match="no records"):
        list(iter_records(_write(tmp_path, "e.json", "[ ]")))


def test_missing_file_and_folder_are_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        list(iter_json_values(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="is a folder"):
        list(iter_json_values(tmp_path))


@pytest.mark.parametrize("name", ["out.jsonl", "out.json"])
def test_writer_round_trips_both_formats(tmp_path, name):
    records = [GOOD, {"conversation": [{"input": "引号\"和\n换行", "output": "ok"}]}]
    path = tmp_path / name
    assert write_records(path, records) == 2
    assert [v for _, v in iter_json_values(path)] == records
    if name.endswith(".json"):
        assert json.loads(path.read_text(encoding="utf-8")) == records
        assert "头疼" in path.read_text(encoding="utf-8")  # Chinese stays readable


def test_an_empty_json_output_is_an_empty_array(tmp_path):
    write_records(tmp_path / "e.json", [])
    assert json.loads((tmp_path / "e.json").read_text()) == []


def test_a_failed_write_leaves_no_file(tmp_path):
    path = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError):
        with RecordWriter(path) as records:
            records.write(GOOD)
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_only_jsonl_and_json_outputs(tmp_path):
    with pytest.raises(UserError, match=r"\.jsonl .* or \.json"):
        RecordWriter(tmp_path / "out.csv")
