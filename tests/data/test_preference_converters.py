"""The preference converters, each on its fixture: one result per row, valid
preference records, and every reject with its reason."""

import json
from collections import Counter

import pytest

from tianji_ft.core.errors import UserError
from tianji_ft.data.accounting import Rejected, rejects_path
from tianji_ft.data.converters import ok_records
from tianji_ft.data.preference import preference_problems
from tianji_ft.data.preference_converters import conversation_pairs, hh_rlhf, ultrafeedback
from tianji_ft.data.reader import iter_records
from tianji_ft.data.records import convert_files
from tianji_ft.data.registry import get_converter


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def reasons(results):
    return Counter(r.reason for r in results if isinstance(r, Rejected))


@pytest.fixture()
def rows(fixtures_dir, read_jsonl):
    return lambda name: read_jsonl(fixtures_dir / "preference" / f"{name}.jsonl")


@pytest.mark.parametrize("kind, name, rejected", [
    ("ultrafeedback", "ultrafeedback", {"chosen not scored above rejected": 1, "prompts differ": 1, "same answer": 1,
                                        "no answer": 1}),
    ("hh-rlhf", "hh_rlhf", {"prompts differ": 1, "empty answer": 1, "no 'Human:' turn": 1}),
    ("conversation-pairs", "conversation_pairs", {"no pair in the last turn": 1, "same answer": 1}),
])
def test_each_converter_on_its_fixture(kind, name, rejected, rows, fixtures_dir, tmp_path):
    src_rows = rows(name)
    results = list(get_converter(kind).func(src_rows))
    assert len(results) == len(src_rows)
    assert reasons(results) == rejected
    kept = list(ok_records(results))
    assert kept and all(preference_problems(r) == [] for r in kept)

    src = fixtures_dir / "preference" / f"{name}.jsonl"
    before = src.read_bytes()
    out = tmp_path / f"{name}.jsonl"
    tally = convert_files(kind, [src], out)
    assert (tally.read, tally.written, tally.rejected) == (len(src_rows), len(kept), sum(rejected.values()))
    assert [r for _, r in iter_records(out)] == kept
    logged = [json.loads(x) for x in rejects_path(out).read_text(encoding="utf-8").splitlines()]
    assert Counter(r["reason"] for r in logged) == rejected and all(r["detail"] for r in logged)
    assert [r["record"] for r in logged] == [src_rows[r["index"]] for r in logged]
    assert src.read_bytes() == before


def test_ultrafeedback_strips_the_prompt_turns(rows):
    first, multi, text = list(ultrafeedback(rows("ultrafeedback")[:3]))
    assert first == {"prompt": [user("给妈妈写一句生日祝福")],
                     "chosen": [assistant("妈妈，生日快乐！愿您岁岁平安，笑口常开。")],
                     "rejected": [assistant("生日快乐。")]}
    assert [m["role"] for m in multi["prompt"]] == ["system", "user", "assistant", "user"]
    assert multi["chosen"] == [assistant("尊敬的老师：值此教师节之际，祝您桃李满天下。")]  # content parts joined
    assert text["prompt"] == [user("Write a New Year greeting for my boss.")]
    assert text["chosen"][0]["content"].endswith("新年快乐！")


def test_ultrafeedback_answers_alone_take_the_prompt_text_and_system_option():
    row = {"prompt": "祝奶奶生日快乐", "chosen": [assistant("奶奶，福如东海！")], "rejected": [assistant("生日快乐")]}
    (record,) = ultrafeedback([row], system="你是送祝福大师")
    assert record["prompt"] == [{"role": "system", "content": "你是送祝福大师"}, user("祝奶奶生日快乐")]
    (rejected,) = ultrafeedback([{k: v for k, v in row.items() if k != "prompt"}])
    assert rejected.reason == "no prompt"
    (tie,) = ultrafeedback([dict(row, score_chosen=5, score_rejected=5)])
    assert tie.reason == "chosen not scored above rejected"
    (bad,) = ultrafeedback([dict(row, score_chosen="高")])
    assert bad.reason == "malformed score"


def test_hh_rlhf_splits_the_shared_turns_from_the_last_answers(rows):
    one, multi, _ = list(hh_rlhf(rows("hh_rlhf")[:3]))
    assert one["prompt"] == [user("给老师写一句教师节祝福")]
    assert one["chosen"] == [assistant("老师，节日快乐！感谢您的教导。")] and one["rejected"] == [assistant("不知道。")]
    assert multi["prompt"] == [user("我姐姐下周生日"), assistant("要我帮你写祝福吗？"), user("好的，温馨一点")]
    assert multi["rejected"] == [assistant("生日快乐")]


@pytest.mark.parametrize("chosen, rejected, reason", [
    ("\n\nHuman: 你好\n\nHuman: 在吗\n\nAssistant: 在", "\n\nHuman: 你好\n\nAssistant: 嗯", "roles out of order"),
    ("\n\nAssistant: 你好\n\nHuman: 嗯\n\nAssistant: 好", "\n\nHuman: 嗯\n\nAssistant: 好", "roles out of order"),
    ("前言\n\nHuman: 你好\n\nAssistant: 好", "\n\nHuman: 你好\n\nAssistant: 嗯", "text before the first turn"),
    ("\n\nHuman: 你好\n\nAssistant: 好", "\n\nHuman: 你好\n\nAssistant: 好\n\nHuman: 再见", "no answer"),
    ("\n\nHuman: 你好\n\nAssistant: 好", "\n\nHuman: 你好呀\n\nAssistant: 嗯", "prompts differ"),
    ("\n\nHuman: 你好\n\nAssistant: 好", ["\n\nHuman: 你好"], "nested value in 'rejected'"),
])
def test_hh_rlhf_rejects_with_a_reason(chosen, rejected, reason):
    (result,) = hh_rlhf([{"chosen": chosen, "rejected": rejected}])
    assert isinstance(result, Rejected) and result.reason == reason


def test_conversation_pairs_keep_the_system_prompt_and_history(rows):
    first, second, third = list(conversation_pairs(rows("conversation_pairs")[:3]))
    assert first["prompt"] == [{"role": "system", "content": "你现在是一个送祝福大师"}, user("祝姐姐生日快乐")]
    assert second["prompt"][1:] == [user("祝爸爸父亲节快乐"), assistant("爸爸，节日快乐！"), user("再长一点")]
    assert second["chosen"] == [assistant("爸爸，父亲节快乐！您辛苦了，愿您身体健康、天天开心。")]  # 'output' as chosen
    assert "id" not in second
    (with_system,) = conversation_pairs([rows("conversation_pairs")[2]], system="你是送祝福大师")
    assert with_system["prompt"][0] == {"role": "system", "content": "你是送祝福大师"} and third["prompt"][0]["role"] == "user"


@pytest.mark.parametrize("conversation, reason", [
    ([{"input": "祝", "chosen": "好", "output": "好", "rejected": "坏"}], "two chosen answers"),
    ([{"input": "祝", "output": ""}, {"input": "再来", "chosen": "好", "rejected": "坏"}], "empty output"),
    ([{"input": " ", "chosen": "好", "rejected": "坏"}], "empty input"),
    ([{"input": "祝", "chosen": {"text": "好"}, "rejected": "坏"}], "nested value in 'chosen'"),
    ([{"input": "祝", "chosen": "好", "rejected": " "}], "empty answer"),
    ([], "no turns"),
])
def test_conversation_pairs_reject_with_a_reason(conversation, reason):
    (result,) = conversation_pairs([{"conversation": conversation}])
    assert isinstance(result, Rejected) and result.reason == reason, result


def test_a_file_without_the_fields_stops_with_the_hint(tmp_path):
    src = tmp_path / "wrong.jsonl"
    src.write_text(json.dumps({"question": "祝福", "answer": "快乐"}, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"missing column\(s\) chosen, rejected.*HH-RLHF rows have"):
        convert_files("hh-rlhf", [src], tmp_path / "out.jsonl")


def test_preference_passthrough_keeps_the_three_fields(fixtures_dir, rows):
    good = rows("records")
    results = list(get_converter("preference").func([{**good[0], "judge": {"reason": "更贴心"}}, {"prompt": "祝"}]))
    assert results[0] == good[0]
    assert results[1].reason == "invalid record" and "missing 'chosen', 'rejected'" in results[1].detail


def test_mix_takes_preference_sources_but_not_both_formats(tmp_path, fixtures_dir, read_jsonl):
    from tianji_ft.data.mix import mix

    folder = fixtures_dir / "preference"
    spec = tmp_path / "spec.json"
    sources = [{"name": "uf", "path": str(folder / "ultrafeedback.jsonl"), "kind": "ultrafeedback"},
               {"name": "ours", "path": str(folder / "records.jsonl"), "kind": "preference", "cap": 2}]
    spec.write_text(json.dumps({"output": "mix.jsonl", "seed": 1, "sources": sources}), encoding="utf-8")
    tally, out = mix(spec)
    mixed = read_jsonl(out)
    assert tally.written == len(mixed) == 3 + 2 and all(preference_problems(r) == [] for r in mixed)

    sources.append({"name": "sft", "path": str(fixtures_dir / "firefly.jsonl"), "kind": "firefly"})
    spec.write_text(json.dumps({"output": "mix2.jsonl", "sources": sources}), encoding="utf-8")
    with pytest.raises(UserError, match="'uf' makes preference records and 'sft' makes conversation records; "
                                        "XTuner reads one format per file"):
        mix(spec)
    assert not (tmp_path / "mix2.jsonl").exists()


@pytest.mark.parametrize("change, reason, detail", [
    (lambda r: r.update(rejected="生日快乐"), "chosen and rejected differ in shape", "'rejected' is not a message list"),
    (lambda r: r.update(chosen=[]), "no messages", "'chosen': "),
    (lambda r: r["rejected"].insert(0, {"role": "tool", "content": "查询"}), "unsupported role", "'rejected': message 0"),
])
def test_ultrafeedback_names_the_field_at_fault(change, reason, detail):
    row = {"chosen": [user("祝奶奶生日快乐"), assistant("奶奶，福如东海！")],
           "rejected": [user("祝奶奶生日快乐"), assistant("生日快乐")]}
    change(row)
    (result,) = ultrafeedback([row])
    assert result.reason == reason and result.detail.startswith(detail), result.detail


def test_the_cli_converts_and_lists_the_preference_kinds(fixtures_dir, tmp_path, capsys):
    from tianji_ft.cli import main

    out = tmp_path / "hh.jsonl"
    assert main(["data", "convert", "hh-rlhf", str(fixtures_dir / "preference" / "hh_rlhf.jsonl"), "-o", str(out),
                 "--system", "你是送祝福大师", "-q"]) == 0
    assert "read 6, written 3, rejected 3" in capsys.readouterr().out
    records = [r for _, r in iter_records(out)]
    assert all(r["prompt"][0] == {"role": "system", "content": "你是送祝福大师"} for r in records)
    assert main(["data", "validate", str(out)]) == 0
    assert main(["data", "kinds"]) == 0
    listed = capsys.readouterr().out
    for kind in ("ultrafeedback", "hh-rlhf", "conversation-pairs", "preference"):
        assert f"{kind}  (makes preference records)\n" in listed
    assert "firefly\n" in listed
