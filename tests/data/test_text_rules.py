"""One rule for text that is not Unicode, encodings, runs that keep nothing,
and failed writes: one line and a non-zero exit, never a traceback, a
changed input or a leftover temporary file."""

import codecs
import errno
import hashlib
import json
import os
from pathlib import Path

import pytest

from tianji_ft.cli import main
from tianji_ft.core.errors import UserError
from tianji_ft.data import writer
from tianji_ft.data.accounting import NoRecordKept, rejects_path
from tianji_ft.data.dedupe import dedupe_file
from tianji_ft.data.records import convert_files
from tianji_ft.data.reader import iter_records
from tianji_ft.data.schema import lone_surrogate, record_problems
from tianji_ft.data.split import split_file
from tianji_ft.data.stats import dataset_stats
from tianji_ft.data.validate import validate_files
from tianji_ft.data.wishes import clean_file

# Written as JSON escapes, as such files hold them: "\ud800" is half of a UTF-16 pair.
SURROGATE_LINE = '{"conversation": [{"input": "祝姐姐生日\\ud800", "output": "姐，生日快乐！愿你天天开心，越来越美！"}]}'
NUL_LINE = '{"conversation": [{"input": "祝哥哥\\u0000新年", "output": "哥，新年快乐！万事如意，心想事成呀！"}]}'
MAX_LINE = '{"conversation": [{"input": "祝妹妹中秋\\udbff\\udfff", "output": "妹，中秋快乐\U0010ffff！月圆人团圆，幸福美满！"}]}'


def run(capsys, *argv):
    code = main(["data", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]


def one_error_line(err: str) -> bool:
    return err.startswith("tianji-ft: error: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture()
def mixed(tmp_path):
    path = tmp_path / "祝福 mixed.jsonl"
    path.write_text("\n".join([SURROGATE_LINE, NUL_LINE, MAX_LINE]) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------ lone surrogates

def test_a_lone_surrogate_is_found_and_named():
    assert lone_surrogate({"conversation": [{"input": "好", "output": "好\ud800"}]}) == (
        "conversation[0].output", "\\ud800")
    assert lone_surrogate({"k\udc01": 1}) == ("key 'k\\udc01'", "\\udc01")
    assert lone_surrogate({"a": ["\U0010ffff", "\x00", 2 ** 80]}) is None
    assert lone_surrogate("\udfff") == ("the record", "\\udfff")


def test_validate_stats_convert_dedupe_and_clean_share_one_rule(tmp_path, mixed):
    before = sha(mixed)
    problems = list(validate_files([mixed]))
    assert len(problems) == 1 and problems[0].startswith(f"{mixed}:0: conversation[0].input: text with a lone surrogate")
    assert "\\ud800" in problems[0] and "\ud800" not in problems[0]
    assert dataset_stats(mixed).summary["invalid_records"] == 1
    for name, run_it in [("convert", lambda out: convert_files("conversation", [mixed], out)),
                         ("dedupe", lambda out: dedupe_file(mixed, out)),
                         ("clean", lambda out: clean_file(mixed, out))]:
        out = tmp_path / f"{name}.jsonl"
        tally = run_it(out)
        assert (tally.read, tally.written, tally.rejected) == (3, 2, 1), name
        assert dict(tally.reasons) == {"lone surrogate": 1}, name
        (reject,) = [json.loads(line) for line in rejects_path(out).read_text(encoding="utf-8").splitlines()]
        assert reject["index"] == 0 and reject["reason"] == "lone surrogate"
        assert reject["record"] == json.loads(SURROGATE_LINE)  # kept faithfully, as the escape it was read from
        assert "conversation[0].input" in reject["detail"]
        kept = [r for _, r in iter_records(out)]
        assert [r["conversation"][0]["input"] for r in kept] == ["祝哥哥\x00新年", "祝妹妹中秋\U0010ffff"], name
        assert all(record_problems(r) == [] for r in kept)
    assert sha(mixed) == before


def test_stats_counts_tokens_of_a_record_with_a_surrogate(tmp_path, mixed):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    stats = dataset_stats(mixed, tokenizer=str(tmp_path / "tok"))
    assert list(stats.tokens) == [2, 2, 2] and stats.summary["invalid_records"] == 1


@pytest.mark.parametrize("kind, row", [
    ("firefly", {"input": "上联：春\ud83d风", "target": "下联：秋水"}),
    ("alpaca", {"instruction": "翻译", "output": "好", "extra": ["\udc00"]}),
    ("openai", {"messages": [{"role": "user", "content": "你好\ud800"}, {"role": "assistant", "content": "好"}]}),
])
def test_every_converter_rejects_it_before_it_sees_it(tmp_path, kind, row):
    src = tmp_path / "in.jsonl"
    good = {"firefly": {"input": "你好", "target": "好"}, "alpaca": {"instruction": "你好", "output": "好"},
            "openai": {"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "好"}]}}[kind]
    src.write_text(json.dumps(good, ensure_ascii=False) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    tally = convert_files(kind, [src], tmp_path / "o.jsonl")
    assert (tally.written, dict(tally.reasons)) == (1, {"lone surrogate": 1})


@pytest.mark.parametrize("command", [["convert", "conversation", "IN", "-o", "OUT"], ["dedupe", "IN", "-o", "OUT"],
                                     ["clean", "wishes", "IN", "-o", "OUT"], ["stats", "IN"], ["validate", "IN"],
                                     ["split", "IN", "-o", "DIR", "--test-ratio", "0.5"]])
def test_no_command_crashes_on_surrogates_nul_or_the_last_code_point(capsys, tmp_path, mixed, command):
    before = sha(mixed)
    argv = [str(mixed) if a == "IN" else str(tmp_path / "o.jsonl") if a == "OUT" else str(tmp_path / "s")
            if a == "DIR" else a for a in command]
    code, out, err = run(capsys, *argv)
    assert "Traceback" not in err
    assert code == (1 if command[0] == "validate" else 0), err
    assert sha(mixed) == before and no_temp_files(tmp_path)


def test_split_copies_a_record_with_a_surrogate_as_it_is(tmp_path, mixed):
    array = tmp_path / "all.json"
    array.write_text("[" + ",".join([SURROGATE_LINE, NUL_LINE, MAX_LINE]) + "]", encoding="utf-8")
    for src in (mixed, array):
        _, train, test = split_file(src, tmp_path / src.stem, test_ratio=0.4, seed=0)
        got = [r for f in (train, test) for _, r in iter_records(f)]
        assert sorted(map(repr, got)) == sorted(map(repr, (r for _, r in iter_records(src))))


# ------------------------------------------------------------------ encodings

@pytest.mark.parametrize("command", [["convert", "firefly", "IN", "-o", "OUT", "--encoding", "utf-9"],
                                     ["validate", "IN", "--encoding", "utf-9"], ["stats", "IN", "--encoding", "utf-9"],
                                     ["split", "IN", "-o", "DIR", "--encoding", "utf-9"],
                                     ["dedupe", "IN", "-o", "OUT", "--encoding", "utf-9"],
                                     ["clean", "wishes", "IN", "-o", "OUT", "--encoding", "hex"]])
def test_an_unknown_encoding_is_one_line(capsys, tmp_path, mixed, command):
    argv = [str(mixed) if a == "IN" else str(tmp_path / "o.jsonl") if a == "OUT" else str(tmp_path / "s")
            if a == "DIR" else a for a in command]
    code, _, err = run(capsys, *argv)
    assert code == 2 and one_error_line(err) and "unknown text encoding" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [mixed.name]


RECORDS = [{"conversation": [{"system": "你是一位医生", "input": f"头疼怎么办？{i}", "output": f"先休息，多喝水。{i}\U0001f600"}]}
           for i in range(6)]


def _encoded(tmp_path, name, encoding, bom=b"", array=False):
    text = (json.dumps(RECORDS, ensure_ascii=False, indent=1) if array
            else "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS))
    path = tmp_path / name
    path.write_bytes(bom + text.encode(encoding))
    return path


@pytest.mark.parametrize("name, encoding, given, bom", [
    ("u16.jsonl", "utf-16", "utf-16", b""),  # Python's utf-16 writes a BOM
    ("u32.jsonl", "utf-32", "utf-32", b""),
    ("u16le.jsonl", "utf-16-le", "utf-16-le", codecs.BOM_UTF16_LE),
    ("u16be.jsonl", "utf-16-be", "utf-16", codecs.BOM_UTF16_BE),
    ("u16.json", "utf-16", "utf-16", b""),
])
def test_utf16_and_utf32_files_work_everywhere(capsys, tmp_path, name, encoding, given, bom):
    src = _encoded(tmp_path, name, encoding, bom, array=name.endswith(".json"))
    before = sha(src)
    assert run(capsys, "validate", src, "--encoding", given)[0] == 0
    code, out, _ = run(capsys, "stats", src, "--json", "--encoding", given)
    assert code == 0 and json.loads(out)["records"] == 6 and json.loads(out)["invalid_records"] == 0
    code, out, err = run(capsys, "convert", "conversation", src, "-o", tmp_path / "c.jsonl", "--encoding", given)
    assert code == 0 and "read 6, written 6" in out, err
    assert [r for _, r in iter_records(tmp_path / "c.jsonl")] == RECORDS
    code, out, _ = run(capsys, "dedupe", src, "-o", tmp_path / "d.jsonl", "--encoding", given)
    assert code == 0 and "written 6" in out
    code, out, _ = run(capsys, "split", src, "-o", tmp_path / "s", "--test-ratio", "0.5", "--encoding", given)
    assert code == 0 and "read 6, written 6" in out
    ext = Path(name).suffix
    split = [r for part in ("train", "test") for _, r in iter_records(tmp_path / "s" / f"{part}{ext}")]
    assert sorted(map(repr, split)) == sorted(map(repr, RECORDS))
    assert sha(src) == before and no_temp_files(tmp_path)


def test_a_utf16_file_read_as_utf8_and_a_broken_one_are_one_line(capsys, tmp_path):
    src = _encoded(tmp_path, "u16.jsonl", "utf-16")
    problems = list(validate_files([src]))
    assert len(problems) == 1 and "not valid utf-8 text" in problems[0] and "utf-16" in problems[0]
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(src.read_bytes() + "\n".encode("utf-16-le") + b"\x00\xd8")  # a lone surrogate unit at the end
    code, _, err = run(capsys, "convert", "conversation", broken, "-o", tmp_path / "o.jsonl", "--encoding", "utf-16")
    assert code == 2 and one_error_line(err) and "not valid utf-16 text" in err and ":8:" in err
    assert not (tmp_path / "o.jsonl").exists() and no_temp_files(tmp_path)
    no_bom = _encoded(tmp_path, "nobom.jsonl", "utf-16-le")
    (problem,) = validate_files([no_bom], "utf-16")
    assert "without a byte-order mark needs --encoding utf-16-le or utf-16-be" in problem
    assert list(validate_files([no_bom], "utf-16-le")) == []


# ------------------------------------------------------------ no record kept

def _all_bad(tmp_path):
    src = tmp_path / "坏 数据.jsonl"
    src.write_text('{"input": "", "target": "好"}\n{"input": "你好"}\n', encoding="utf-8")
    return src


def test_a_conversion_that_keeps_nothing_exits_3_without_an_empty_output(capsys, tmp_path):
    src = _all_bad(tmp_path)
    out = tmp_path / "out.jsonl"
    out.write_text('{"conversation": [{"input": "旧", "output": "上次的结果"}]}\n', encoding="utf-8")  # a stale output
    code, stdout, err = run(capsys, "convert", "firefly", src, "-o", out, "--report", tmp_path / "r.json")
    assert code == 3 and one_error_line(err)
    assert "no record kept" in err and str(rejects_path(out)) in err
    assert not out.exists()  # neither an empty file nor the stale one that would pass for this run's
    assert json.loads((tmp_path / "r.json").read_text()) == {
        "read": 2, "written": 0, "rejected": 2, "reasons": {"empty input": 1, "missing field 'target'": 1}}
    assert len(rejects_path(out).read_text(encoding="utf-8").splitlines()) == 2
    assert no_temp_files(tmp_path)


def test_clean_dedupe_and_mix_that_keep_nothing_exit_3(capsys, tmp_path):
    src = tmp_path / "w.jsonl"
    src.write_text('{"conversation": [{"input": "祝老师", "output": "好的，以下是祝福"}]}\n', encoding="utf-8")
    code, _, err = run(capsys, "clean", "wishes", src, "-o", tmp_path / "c.jsonl")
    assert code == 3 and "no record kept" in err and "c.rejects.jsonl" in err and not (tmp_path / "c.jsonl").exists()
    surrogate = tmp_path / "s.jsonl"
    surrogate.write_text(SURROGATE_LINE + "\n", encoding="utf-8")
    code, _, err = run(capsys, "dedupe", surrogate, "-o", tmp_path / "d.jsonl")
    assert code == 3 and "no record kept" in err and not (tmp_path / "d.jsonl").exists()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"output": "m.jsonl", "sources": [
        {"path": "w.jsonl", "kind": "conversation", "cap": 0}]}), encoding="utf-8")
    code, _, err = run(capsys, "mix", spec, "--report", tmp_path / "mr.json")
    assert code == 3 and one_error_line(err) and "no record kept" in err and "not sampled: 1" in err
    assert not (tmp_path / "m.jsonl").exists() and json.loads((tmp_path / "mr.json").read_text())["written"] == 0


def test_the_library_raises_no_record_kept_with_the_tally(tmp_path):
    with pytest.raises(NoRecordKept) as err:
        convert_files("firefly", [_all_bad(tmp_path)], tmp_path / "o.json")
    assert isinstance(err.value, UserError) and err.value.exit_code == 3
    assert (err.value.tally.read, err.value.tally.rejected) == (2, 2)
    assert not (tmp_path / "o.json").exists()


# ---------------------------------------------------------- failed writes

def _disk_full(monkeypatch, only=None):
    real = writer._write_all

    def write_all(fh, parts):
        name = os.readlink(f"/proc/self/fd/{fh.fileno()}")  # the temporary file: .OUT.xxxx.tmp
        if only is None or only in Path(name).name:
            raise OSError(errno.ENOSPC, "No space left on device", name)
        return real(fh, parts)

    monkeypatch.setattr(writer, "_write_all", write_all)


@pytest.mark.parametrize("only", [None, "out.jsonl", "rejects"])
def test_a_full_disk_leaves_nothing_half_written(capsys, tmp_path, monkeypatch, fixtures_dir, only):
    src = tmp_path / "in.jsonl"
    src.write_bytes((fixtures_dir / "firefly.jsonl").read_bytes())
    before = sha(src)
    out = tmp_path / "out.jsonl"
    _disk_full(monkeypatch, only)
    code, _, err = run(capsys, "convert", "firefly", src, "-o", out, "--report", tmp_path / "r.json")
    assert code == 1 and one_error_line(err) and "No space left on device" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # not one output of the set, no temp file
    assert sha(src) == before


def test_a_full_disk_while_splitting_leaves_nothing(capsys, tmp_path, monkeypatch, mixed):
    _disk_full(monkeypatch, "test")
    code, _, err = run(capsys, "split", mixed, "-o", tmp_path / "s", "--test-ratio", "0.5")
    assert code == 1 and one_error_line(err)
    assert not list((tmp_path / "s").glob("*.jsonl")) and no_temp_files(tmp_path)


def test_a_read_only_folder_is_one_line(capsys, tmp_path, monkeypatch, mixed):
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", kwargs.get("dir") or tmp_path)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    code, _, err = run(capsys, "dedupe", mixed, "-o", tmp_path / "d.jsonl")
    assert code == 1 and one_error_line(err) and "read-only" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [mixed.name]


# ------------------------------------------------------- numbers past 64 bits

def test_integers_past_64_bits_are_read_exactly(tmp_path):
    """orjson would read them as floats; the readers fall back to the exact parser."""
    big = {"id": -9223372036854775809, "n": 18446744073709551616, "card": "6222021234567890123",
           "conversation": [{"input": "卡号是多少？", "output": "6222021234567890123"}]}
    src = tmp_path / "big.jsonl"
    lines = [json.dumps({"conversation": [{"input": f"问{i}", "output": "答"}]}, ensure_ascii=False) for i in range(300)]
    src.write_text("\n".join(lines[:150] + [json.dumps(big, ensure_ascii=False)] + lines[150:]) + "\n", encoding="utf-8")
    records = [r for _, r in iter_records(src)]
    assert records[150] == big and isinstance(records[150]["n"], int)
    out = tmp_path / "d.jsonl"
    dedupe_file(src, out)
    assert '"id":-9223372036854775809,"n":18446744073709551616' in out.read_text(encoding="utf-8")
