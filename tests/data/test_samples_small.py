"""The tiny samples other parts of the project train on must stay convertible and valid."""

import copy

import pytest

from tianji_ft.data.converters import guanaco, medqa
from tianji_ft.data.msagent import msagent
from tianji_ft.data.reader import iter_records
from tianji_ft.data.sources import read_rows
from tianji_ft.data.validate import validate_files
from tianji_ft.core.paths import PROJECT_ROOT

SMALL = PROJECT_ROOT / "data" / "samples_small"


def rows(name):
    return [row for _, row in read_rows(SMALL / name)]


@pytest.mark.parametrize("name", ["guanaco.jsonl", "medqa.csv", "msagent.jsonl", "llama3_mix.jsonl"])
def test_sizes(name):
    assert 16 <= len(rows(name)) <= 40


def test_converted_files_are_valid():
    assert list(validate_files([SMALL / "medqa.jsonl", SMALL / "llama3_mix.jsonl"])) == []


def test_medqa_jsonl_is_the_conversion_of_medqa_csv():
    converted = [r for r in medqa(rows("medqa.csv")) if isinstance(r, dict)]
    assert converted == [r for _, r in iter_records(SMALL / "medqa.jsonl")]


def test_raw_rows_convert_without_rejects(xtuner_map_fns):
    assert all(isinstance(r, dict) for r in guanaco(rows("guanaco.jsonl")))
    for row in rows("msagent.jsonl"):
        (ours,) = msagent([row])
        theirs = xtuner_map_fns["msagent_react_map_fn"](copy.deepcopy(row))["conversation"]
        assert len(ours["conversation"]) == len(theirs) > 0
