import datetime
import sys

import pytest

from tianji_ft.data.sources import as_text, expand_sources, read_rows
from tianji_ft.core.errors import UserError


@pytest.mark.parametrize("value, text", [
    ("n/a", "n/a"), (None, ""), (3.0, "3"), (3.5, "3.5"), (7, "7"), (True, "true"),
    (float("nan"), ""), (datetime.date(2024, 5, 1), "2024-05-01"), ({"a": "中"}, '{"a": "中"}'),
])
def test_as_text(value, text):
    assert as_text(value) == text


def _xlsx(path, rows, sheet="DrugQA"):
    import openpyxl

    book = openpyxl.Workbook()
    ws = book.active
    ws.title = sheet
    for row in rows:
        ws.append(row)
    book.save(path)
    return path


def test_csv_cells_are_text_and_placeholders_survive(fixtures_dir):
    rows = [row for _, row in read_rows(fixtures_dir / "medqa.csv")]
    answers = [r["Answer"] for r in rows]
    assert "n/a" in answers and "NA" in answers  # pandas would have made these NaN
    assert rows[1]["Section Title"] == "NA"
    assert all(isinstance(v, str) for r in rows for v in r.values())


def test_xlsx_cells_of_any_type_become_text(tmp_path):
    path = _xlsx(tmp_path / "q.xlsx", [
        ["Question", "Answer", "Dose"],
        ["布洛芬怎么吃？", "n/a", 200],
        ["", "", None],  # an empty row holds no data
        ["阿司匹林？", 3.5, datetime.datetime(2024, 5, 1, 8, 30)],
        ["short row"],
    ])
    rows = list(read_rows(path))
    assert [i for i, _ in rows] == [0, 1, 2]
    assert rows[0][1] == {"Question": "布洛芬怎么吃？", "Answer": "n/a", "Dose": "200"}
    assert rows[1][1]["Answer"] == "3.5" and rows[1][1]["Dose"].startswith("2024-05-01")
    assert rows[2][1] == {"Question": "short row", "Answer": "", "Dose": ""}


def test_xlsx_without_calamine_falls_back_to_openpyxl(tmp_path, monkeypatch):
    path = _xlsx(tmp_path / "q.xlsx", [["Question", "Answer"], ["问", "答"]])
    monkeypatch.setitem(sys.modules, "python_calamine", None)  # import now raises ImportError
    assert list(read_rows(path)) == [(0, {"Question": "问", "Answer": "答"})]


def test_xlsx_sheet_by_name(tmp_path):
    path = _xlsx(tmp_path / "q.xlsx", [["Question", "Answer"], ["问", "答"]])
    assert list(read_rows(path, sheet="DrugQA"))[0][1]["Answer"] == "答"
    with pytest.raises(UserError, match="no sheet 'Other'; sheets: DrugQA"):
        list(read_rows(path, sheet="Other"))


def test_a_broken_xlsx_is_a_one_line_error(tmp_path):
    path = tmp_path / "broken.xlsx"
    path.write_bytes(b"not a zip file")
    with pytest.raises(UserError, match="cannot read the spreadsheet"):
        list(read_rows(path))


@pytest.mark.parametrize("text, message", [("", "the file is empty"), ("Question,Answer\n", "no data rows")])
def test_empty_tables_are_errors(tmp_path, text, message):
    path = tmp_path / "t.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        list(read_rows(path))


def test_csv_in_gbk_needs_its_encoding(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("问题,回答\n你好,再见\n".encode("gbk"))
    with pytest.raises(UserError, match="not valid utf-8"):
        list(read_rows(path))
    assert list(read_rows(path, encoding="gbk")) == [(0, {"问题": "你好", "回答": "再见"})]


def test_csv_long_cells_and_extra_cells(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n" + "x" * 200_000 + ",y,extra\n", encoding="utf-8")
    (_, row), = read_rows(path)
    assert len(row["a"]) == 200_000 and row["column3"] == "extra"


def test_unsupported_type(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("hi")
    with pytest.raises(UserError, match="unsupported file type '.txt'"):
        read_rows(path)


def test_folders_expand_to_sorted_data_files_without_outputs(tmp_path):
    (tmp_path / "b.json").write_text("[]")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.jsonl").write_text("{}")
    (tmp_path / "out.jsonl").write_text("{}")
    (tmp_path / "out.rejects.jsonl").write_text("{}")
    (tmp_path / "notes.txt").write_text("x")
    found = expand_sources([tmp_path], exclude=[tmp_path / "out.jsonl"])
    assert found == [tmp_path / "b.json", tmp_path / "sub" / "a.jsonl"]
    with pytest.raises(UserError, match="no such file or folder"):
        expand_sources([tmp_path / "missing"])
