import json
import shutil

import pytest

from tianji_ft.data.accounting import rejects_path
from tianji_ft.data.mix import Source, load_spec, mix
from tianji_ft.data.registry import get_converter
from tianji_ft.data.reader import iter_records
from tianji_ft.data.schema import record_problems
from tianji_ft.core.errors import UserError
from tianji_ft.core.paths import DATA_DIR


def write_spec(folder, spec):
    path = folder / "spec.json"
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture()
def spec_dir(tmp_path, fixtures_dir):
    for name in ("firefly.jsonl", "moss.jsonl", "alpaca.json"):
        shutil.copy(fixtures_dir / name, tmp_path / name)
    return tmp_path


SPEC = {"output": "out/mix.jsonl", "seed": 3, "sources": [
    {"name": "firefly", "path": "firefly.jsonl", "kind": "firefly", "cap": 3},
    {"name": "moss", "path": "moss.jsonl", "kind": "moss", "ratio": 0.5},
    {"name": "alpaca", "path": "alpaca.json", "kind": "alpaca"}]}


def test_caps_ratios_and_accounting(spec_dir):
    tally, out = mix(write_spec(spec_dir, SPEC), report=spec_dir / "r.json")
    assert out == spec_dir / "out" / "mix.jsonl"
    records = [r for _, r in iter_records(out)]
    # firefly: 5 good of 7, cap 3; moss: 2 good of 4, ratio 0.5 -> 1; alpaca: 4 good of 6, all
    assert len(records) == 3 + 1 + 4 == tally.written
    assert tally.read == 7 + 4 + 6 == tally.written + tally.rejected
    assert tally.reasons["firefly: not sampled"] == 2 and tally.reasons["moss: not sampled"] == 1
    assert all(record_problems(r) == [] for r in records)
    rejects = [json.loads(x) for x in rejects_path(out).read_text(encoding="utf-8").splitlines()]
    assert len(rejects) == 2 + 2 + 2 and {r["source_name"] for r in rejects} == {"firefly", "moss", "alpaca"}
    assert json.loads((spec_dir / "r.json").read_text())["read"] == tally.read


def test_same_seed_same_bytes_other_seed_other_order(spec_dir):
    spec = write_spec(spec_dir, SPEC)
    _, out = mix(spec, output=spec_dir / "a.jsonl")
    mix(spec, output=spec_dir / "b.jsonl")
    mix(spec, output=spec_dir / "c.jsonl", seed=4)
    assert out.read_bytes() == (spec_dir / "b.jsonl").read_bytes()
    assert out.read_bytes() != (spec_dir / "c.jsonl").read_bytes()


@pytest.mark.parametrize("change, message", [
    ({"sources": []}, "non-empty 'sources'"),
    ({"extra": 1}, "unknown key(s) extra"),
    ({"sources": [{"path": "firefly.jsonl"}]}, "sources[0]: missing 'kind'"),
    ({"sources": [{"path": "firefly.jsonl", "kind": "firefly", "cap": 1, "ratio": 0.5}]}, "not both"),
    ({"sources": [{"path": "firefly.jsonl", "kind": "firefly", "ratio": 2}]}, "'ratio' must be a number from 0 to 1"),
    ({"sources": [{"path": "firefly.jsonl", "kind": "firefly", "caps": 2}]}, "unknown key(s) caps"),
    ({"sources": [{"path": "firefly.jsonl", "kind": "firefly", "options": {"keep_raw": True}}]}, "do not apply"),
    ({"sources": [{"path": "nope.jsonl", "kind": "firefly"}]}, "no such file"),
])
def test_spec_errors_are_one_line(spec_dir, change, message):
    with pytest.raises(UserError) as err:
        mix(write_spec(spec_dir, {**SPEC, **change}))
    assert message in str(err.value)


FF = {"path": "firefly.jsonl", "kind": "firefly"}


@pytest.mark.parametrize("spec, message", [
    ([FF], "a mix spec is a JSON object with a 'sources' list, not a JSON array"),
    ("混合", "not a JSON string"),
    ({"output": "m.jsonl"}, "missing 'sources'"),
    ({"sources": {"firefly": FF}}, "'sources' must be a list of sources, not a JSON object"),
    ({"sources": "firefly.jsonl"}, "'sources' must be a list of sources, not a JSON string"),
    ({"sources": [FF], "output": 3}, "'output' must be a file name (text), not a JSON number"),
    ({"sources": [FF], "seed": "42"}, "'seed' must be a whole number"),
    ({"sources": [FF], "seed": 1.5}, "'seed' must be a whole number"),
    ({"sources": ["firefly.jsonl"]}, "sources[0]: must be an object with 'path' and 'kind', not a JSON string"),
    ({"sources": [{**FF, "cap": "100"}]}, "sources[0]: 'cap' must be a whole number >= 0, got \"100\""),
    ({"sources": [{**FF, "cap": True}]}, "sources[0]: 'cap' must be a whole number >= 0"),
    ({"sources": [{**FF, "ratio": "0.5"}]}, "sources[0]: 'ratio' must be a number from 0 to 1, got \"0.5\""),
    ({"sources": [{**FF, "ratio": False}]}, "sources[0]: 'ratio' must be a number from 0 to 1"),
    ({"sources": [{**FF, "ratio": None, "cap": [1]}]}, "sources[0]: 'cap' must be a whole number"),
    ({"sources": [FF, {"path": "moss.jsonl", "kind": ["moss"]}]}, "sources[1]: 'kind' must be a converter name"),
    ({"sources": [{"path": 7, "kind": "firefly"}]}, "sources[0]: 'path' must be a file or folder name"),
    ({"sources": [{"path": [], "kind": "firefly"}]}, "sources[0]: 'path' must be a file or folder name"),
    ({"sources": [{**FF, "options": ["system"]}]}, "sources[0]: 'options' must be an object"),
    ({"sources": [{**FF, "name": {"zh": "萤火虫"}}]}, "sources[0]: 'name' must be text"),
    ({"sources": [{**FF, "encoding": "utf-9"}]}, "sources[0]: 'encoding': unknown text encoding 'utf-9'"),
    ({"sources": [{**FF, "sheet": 1}]}, "sources[0]: 'sheet' must be a sheet name"),
    ({"sources": [{**FF, "kind": "nope"}]}, "sources[0]: unknown converter 'nope'"),
])
def test_a_spec_of_the_wrong_shape_names_the_file_and_the_key(spec_dir, capsys, spec, message):
    if isinstance(spec, dict) and isinstance(spec.get("sources"), list):
        spec = {"output": "mix.jsonl", **spec}
    path = write_spec(spec_dir, spec)
    with pytest.raises(UserError) as err:
        mix(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text
    from tianji_ft.cli import main

    assert main(["data", "mix", str(path)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and message in stderr and "Traceback" not in stderr
    assert not (spec_dir / "mix.jsonl").exists() and not (spec_dir / "out").exists()


@pytest.mark.parametrize("content, message", [(b"\xff\xfe{", "not UTF-8 text"), (b"[" * 100000, "nested too deeply"),
                                               (b'{"sources": [', "malformed JSON")])
def test_an_unreadable_spec_is_one_line(tmp_path, content, message):
    path = tmp_path / "spec.json"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        mix(path)


def test_the_shipped_llama3_spec_is_valid():
    path = DATA_DIR / "mix" / "llama3_chinese.json"
    spec = load_spec(path)
    sources = [Source(path, i, entry) for i, entry in enumerate(spec["sources"])]
    assert [s.name for s in sources] == ["firefly", "moss", "school_math", "ruozhiba"]
    assert {s.converter.name for s in sources} == {"firefly", "moss", "alpaca"}
    assert all(s.cap is not None or s.ratio is not None for s in sources)
    assert get_converter("alpaca").func is sources[-1].converter.func


def test_mixing_the_real_samples(samples_dir, tmp_path):
    spec = {"output": "mix.jsonl", "seed": 1, "sources": [
        {"name": "firefly", "path": str(samples_dir / "firefly"), "kind": "firefly", "cap": 40},
        {"name": "moss", "path": str(samples_dir / "moss"), "kind": "moss", "cap": 10},
        {"name": "school_math", "path": str(samples_dir / "school_math"), "kind": "alpaca", "cap": 20},
        {"name": "ruozhiba", "path": str(samples_dir / "ruozhiba"), "kind": "alpaca", "ratio": 0.01}]}
    tally, out = mix(write_spec(tmp_path, spec))
    ruozhiba = json.loads((samples_dir / "ruozhiba" / "ruozhiba_qa.json").read_text(encoding="utf-8"))
    usable = sum(1 for r in ruozhiba if r["instruction"].strip() and r["output"].strip())
    assert tally.written == 40 + 10 + 20 + round(0.01 * usable)
    assert tally.read == tally.written + tally.rejected
