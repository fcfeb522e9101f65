"""Preference records: the validator, how a file's format is told, and what validate,
dedupe and split do with a file of them."""

import json

import pytest

from tianji_ft.core.errors import UserError
from tianji_ft.data.accounting import rejects_path
from tianji_ft.data.dedupe import SAME_PROMPT, SWAPPED, dedupe_file
from tianji_ft.data.preference import (CONVERSATION, PREFERENCE, SNIFF_RECORDS, make_preference,
                                       preference_problems, record_kind, sniff)
from tianji_ft.data.reader import iter_records
from tianji_ft.data.split import split_file
from tianji_ft.data.stats import dataset_stats, format_stats
from tianji_ft.data.validate import validate_files
from tianji_ft.data.wishes import clean_file
from tianji_ft.data.writer import write_records

PROMPT = [{"role": "system", "content": "你是送祝福大师"}, {"role": "user", "content": "祝姐姐生日快乐"}]
CONV = {"conversation": [{"input": "祝姐姐生日快乐", "output": "姐，生日快乐！"}]}


@pytest.fixture()
def records(fixtures_dir, read_jsonl):
    return read_jsonl(fixtures_dir / "preference" / "records.jsonl")


def test_make_preference_builds_a_valid_record_and_copies_the_prompt():
    record = make_preference(PROMPT, "姐姐，生日快乐！", "生日快乐。", judge={"reason": "更贴心"})
    assert preference_problems(record) == []
    assert record["chosen"] == [{"role": "assistant", "content": "姐姐，生日快乐！"}]
    record["prompt"][0]["content"] = "改"
    assert PROMPT[0]["content"] == "你是送祝福大师"


@pytest.mark.parametrize("change, problem", [
    (lambda r: r.pop("rejected"), "missing 'rejected'"),
    (lambda r: r.update(prompt="祝姐姐生日快乐"), "'prompt' is text, not a list of messages; convert"),
    (lambda r: r.update(prompt=[]), "'prompt' must be a non-empty list of messages"),
    (lambda r: r["prompt"].append({"role": "assistant", "content": "好的"}), "'prompt' must end with a user message"),
    (lambda r: r.update(chosen=[{"role": "user", "content": "好"}]), "chosen[0]: role 'user' where assistant"),
    (lambda r: r.update(rejected=[{"role": "assistant", "content": " "}]), "rejected[0]: empty 'content'"),
    (lambda r: r.update(rejected=[{"role": "assistant", "content": ["生日快乐"]}]), "is a JSON array, not text"),
    (lambda r: r.update(rejected=r["chosen"]), "'chosen' and 'rejected' are the same answer"),
    (lambda r: r["prompt"][1].update(content="\ud800"), "lone surrogate"),
])
def test_each_problem_is_named(change, problem):
    record = make_preference(PROMPT, "姐姐，生日快乐！", "生日快乐。")
    change(record)
    assert any(problem in p for p in preference_problems(record)), preference_problems(record)


def test_record_kind_and_sniff(tmp_path, records):
    assert record_kind(records[0]) == PREFERENCE and record_kind(CONV) == CONVERSATION
    assert record_kind({"prompt": "x", "conversation": []}) is None and record_kind([1]) is None
    path = tmp_path / "p.jsonl"
    write_records(path, [{"instruction": "写祝福"}, *records])
    assert sniff(path) == (PREFERENCE, 1)
    write_records(path, [{"instruction": "写祝福"}] * SNIFF_RECORDS + records)
    assert sniff(path) == (CONVERSATION, None)  # a raw file is not read to its end


def test_validate_uses_the_files_format(tmp_path, records):
    path = tmp_path / "偏好.jsonl"
    bad = dict(records[0], rejected=records[0]["chosen"])
    write_records(path, [records[0], bad, {"prompt": PROMPT, "chosen": []}])
    assert list(validate_files([path])) == [
        f"{path}:1: 'chosen' and 'rejected' are the same answer",
        f"{path}:2: missing 'rejected' (keys present: prompt, chosen); a preference record has prompt, chosen and "
        "rejected message lists"]


def test_a_mixed_file_is_one_line(tmp_path, records):
    path = tmp_path / "mixed.json"
    write_records(path, [CONV, CONV, records[0], CONV])
    (line,) = validate_files([path])
    assert line.startswith(f"{path}:2: a preference record in a file of conversation records (record 0 is one)")
    out = tmp_path / "out.jsonl"
    with pytest.raises(UserError, match=r"mixed.json:2: a preference record in a file of conversation records"):
        dedupe_file(path, out)
    assert not out.exists() and not rejects_path(out).exists()


def test_the_mixed_line_names_the_record_in_the_file(tmp_path, records):
    lines = [json.dumps(records[0]), json.dumps(dict(records[1], prompt=[{"role": "user", "content": "\ud800"}])),
             json.dumps(CONV)]  # the second holds a lone surrogate: rejected before dedupe sees it
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"mixed.jsonl:2: a conversation record in a file of preference records"):
        dedupe_file(path, tmp_path / "out.jsonl")


def test_clean_refuses_preference_records(tmp_path, fixtures_dir):
    out = tmp_path / "clean.jsonl"
    with pytest.raises(UserError, match=r"records.jsonl: preference records \(record 0 is one\); the wishes rules"):
        clean_file(fixtures_dir / "preference" / "records.jsonl", out)
    assert not out.exists() and not rejects_path(out).exists()


def test_dedupe_pairs_exact_normalised_and_notes(tmp_path, fixtures_dir, records):
    src = fixtures_dir / "preference" / "records.jsonl"
    before = src.read_bytes()
    out = tmp_path / "去重.jsonl"
    tally = dedupe_file(src, out)
    assert [r for _, r in iter_records(out)] == [records[i] for i in (0, 1, 2, 5)]
    rejects = [json.loads(x) for x in rejects_path(out).read_text(encoding="utf-8").splitlines()]
    assert [(r["index"], r["reason"], r["detail"]) for r in rejects] == [
        (3, "exact duplicate", "same as record 2"),
        (4, "duplicate after normalising whitespace/punctuation", "same as record 2")]
    # record 5 swaps record 2's answers; its prompt is record 2's (record 0's has a system message)
    assert dict(tally.notes) == {SWAPPED: 1, SAME_PROMPT: 1}
    assert src.read_bytes() == before

    tally = dedupe_file(src, tmp_path / "exact.jsonl", normalised=False)
    assert (tally.written, tally.rejected) == (5, 1)
    assert dict(tally.notes) == {SWAPPED: 1, SAME_PROMPT: 2}


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_split_keeps_preference_records_whole(tmp_path, records, suffix):
    src = tmp_path / f"pairs{suffix}"
    many = [dict(r, id=i) for i in range(5) for r in records]
    write_records(src, many)
    tally, train, test = split_file(src, tmp_path / "split", test_ratio=0.2, seed=7)
    got = [r for f in (train, test) for _, r in iter_records(f)]
    assert (tally.read, tally.written, len(got)) == (30, 30, 30)
    assert sorted(got, key=lambda r: json.dumps(r, ensure_ascii=False)) == \
        sorted(many, key=lambda r: json.dumps(r, ensure_ascii=False))
    assert len([r for _, r in iter_records(test)]) == 6
    assert list(validate_files([train, test])) == []


def text(messages):
    return "\n".join(m["content"] for m in messages)


def test_stats_of_a_preference_file(fixtures_dir, records):
    stats = dataset_stats(fixtures_dir / "preference" / "records.jsonl")
    s = stats.summary
    chosen, rejected = [[len(text(r[k])) for r in records] for k in ("chosen", "rejected")]
    assert (s["format"], s["records"], s["with_system"], s["identical_answers"]) == ("preference", 6, 1, 0)
    assert s["prompt_turns"]["max"] == 2 and s["prompt_turns"]["min"] == 1
    assert s["chosen_chars"]["max"] == max(chosen) and s["rejected_chars"]["min"] == min(rejected)
    assert s["chosen_longer"] == sum(c > r for c, r in zip(chosen, rejected))
    # record 3 repeats record 2; records 4 and 5 are other pairs for record 2's prompt (4 after normalising)
    assert (s["exact_duplicates"], s["same_prompt"], s["invalid_records"]) == (1, 2, 0)
    assert list(stats.chars) == [len(text(r["prompt"])) + c + j for r, c, j in zip(records, chosen, rejected)]
    report = format_stats(s)
    assert "6 preference records" in report and "chosen longer" in report


def test_stats_counts_tokens_of_each_part(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "祝", "妈妈", "生日", "快乐", "！"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    path = tmp_path / "p.jsonl"
    write_records(path, [make_preference([{"role": "user", "content": "祝 妈妈 生日 快乐"}], "妈妈 生日 快乐 ！", "快乐"),
                         make_preference([{"role": "user", "content": "祝 妈妈"}], "妈妈 快乐", "快乐 ！ ！")])
    s = dataset_stats(path, tokenizer=str(tmp_path / "tok"), batch=1).summary
    assert (s["prompt_tokens"]["max"], s["prompt_tokens"]["min"]) == (4, 2)
    assert (s["chosen_tokens"]["max"], s["rejected_tokens"]["max"], s["tokens"]["max"]) == (4, 3, 9)


def test_stats_refuses_a_mixed_file_and_the_cli_says_to_convert_raw_rows(tmp_path, records, fixtures_dir, capsys):
    from tianji_ft.cli import main

    mixed = tmp_path / "mixed.jsonl"
    write_records(mixed, [records[0], CONV])
    with pytest.raises(UserError, match="mixed.jsonl:1: a conversation record in a file of preference records"):
        dataset_stats(mixed)
    write_records(mixed, [CONV, records[0]])
    with pytest.raises(UserError, match="mixed.jsonl:1: a preference record in a file of conversation records"):
        dataset_stats(mixed)
    raw = fixtures_dir / "preference" / "ultrafeedback.jsonl"
    assert main(["data", "stats", str(raw)]) == 1
    err = capsys.readouterr().err
    assert "none of the 7 records" in err and "tianji-ft data convert ultrafeedback" in err
