import json
from collections import Counter

import pytest

from tianji_ft.data.accounting import Reject
from tianji_ft.data.records import convert_files
from tianji_ft.data.reader import iter_records
from tianji_ft.core.errors import UserError
from tianji_ft.data.wishes import (DEFAULT_RULES, RULES, clean_file, clean_record, first_line, leading_punct,
                                   particle_after_punct, peer_pronoun, wrapping_quotes)


def one_turn(inp, out):
    return {"conversation": [{"system": "你现在是一个送祝福大师", "input": inp, "output": out}]}


def test_merge_keeps_system_input_output_and_counts_what_it_leaves_out(fixtures_dir, tmp_path):
    out = tmp_path / "merged.json"
    tally = convert_files("wishes-merge", [fixtures_dir / "wishes"], out)
    assert (tally.read, tally.written, tally.rejected) == (6, 4, 2)
    assert dict(tally.reasons) == {"not a conversation record": 1, "invalid record": 1}
    assert tally.notes["record key 'meta' left out"] == 2
    assert tally.notes["turn key 'src_input' left out"] == 2
    records = json.loads(out.read_text(encoding="utf-8"))  # a .json output is one array
    assert records[0]["conversation"][0] == {
        "system": "你现在是一个送祝福大师，帮我针对不同人和事情、节日送对应的祝福",
        "input": "祝姐姐生日,小红书风格", "output": "姐，生日快乐呀🎂愿你的每一天都闪闪发光，被温柔以待！"}
    assert records[3] == {"conversation": [{"input": "祝大伯中秋节,文艺风格",
                                            "output": "大伯，中秋月圆，愿您身体康健，笑口常开，团圆美满。"}]}


def test_merge_can_be_rerun_into_the_same_folder(fixtures_dir, tmp_path):
    import shutil

    folder = tmp_path / "wishes"
    shutil.copytree(fixtures_dir / "wishes", folder)
    first = convert_files("wishes-merge", [folder], folder / "merged.jsonl")
    second = convert_files("wishes-merge", [folder], folder / "merged.jsonl")
    assert first.as_dict() == second.as_dict()  # its own output and rejects are not read back


@pytest.mark.parametrize("rule, before, after", [
    (first_line, "祝你生日快乐！\n（共7字）", "祝你生日快乐！"),
    (first_line, "单行文字", "单行文字"),
    (wrapping_quotes, "“新年快乐，万事如意！”", "新年快乐，万事如意！"),
    (wrapping_quotes, "“新年快乐”和“万事如意”", "“新年快乐”和“万事如意”"),
    (leading_punct, "，！新年快乐", "新年快乐"),
    (particle_after_punct, "新年快乐！啦~", "新年快乐啦~"),
    (particle_after_punct, "身体健康。哦！", "身体健康哦！"),
    (particle_after_punct, "天天开心！呀", "天天开心呀！"),
    (particle_after_punct, "天天开心呀！", "天天开心呀！"),
    (particle_after_punct, "生日快乐！啦", "生日快乐啦！"),
    (particle_after_punct, "生日快乐！啦🎉", "生日快乐啦！🎉"),  # an emoji after the particle: cleaned alike
    (particle_after_punct, "新年快乐！啦~🧧🎆", "新年快乐啦~🧧🎆"),
    (particle_after_punct, "中秋快乐。哦 ❤️", "中秋快乐哦。 ❤️"),
    (particle_after_punct, "加油！呀👍🏻", "加油呀！👍🏻"),
    (particle_after_punct, "生日快乐啦！🎉", "生日快乐啦！🎉"),
])
def test_rewrite_rules(rule, before, after):
    assert rule(before, {"input": "祝姐姐生日"}) == after


def test_a_trailing_emoji_does_not_keep_the_particle_from_being_moved():
    with_emoji = clean_record(one_turn("祝姐姐生日", "姐，生日快乐！愿你天天开心！啦🎉"))
    without = clean_record(one_turn("祝姐姐生日", "姐，生日快乐！愿你天天开心！啦"))
    assert with_emoji["conversation"][0]["output"] == without["conversation"][0]["output"] + "🎉"
    assert without["conversation"][0]["output"] == "姐，生日快乐！愿你天天开心啦！"
    again = clean_record(with_emoji)  # a second run changes nothing
    assert again == with_emoji


def test_peer_pronoun_only_for_peers():
    assert peer_pronoun("祝您生日快乐", {"input": "祝表妹生日"}) == "祝你生日快乐"
    assert peer_pronoun("祝您生日快乐", {"input": "祝赵老师生日"}) == "祝您生日快乐"
    assert peer_pronoun("祝您重阳快乐", {"input": "祝邻居赵大妈重阳节"}) == "祝您重阳快乐"


def test_filters_reject_short_and_non_answers():
    with pytest.raises(Reject, match="non-answer"):
        clean_record(one_turn("祝赵老师生日", "当前祝福语如下"))
    with pytest.raises(Reject, match="non-answer"):
        clean_record(one_turn("祝外婆元宵节", "以下是为您准备的祝福：外婆元宵节快乐！"))
    with pytest.raises(Reject, match="output shorter than 10 characters"):
        clean_record(one_turn("祝领导升职", "恭喜高升！"))
    kept = clean_record(one_turn("祝领导升职", "恭喜高升！"), rules=[r for r in DEFAULT_RULES if r != "min_length"])
    assert kept["conversation"][0]["output"] == "恭喜高升！"


def test_rules_work_together_to_a_fixed_point():
    notes = Counter()
    record = clean_record(one_turn("祝妹妹春节", "，“新年快乐，愿你学业进步，天天向上！啦~”"), notes=notes)
    assert record["conversation"][0]["output"] == "新年快乐，愿你学业进步，天天向上啦~"
    assert set(notes) == {"leading_punct applied", "wrapping_quotes applied", "particle_after_punct applied"}


def test_clean_file_accounts_and_a_second_run_changes_nothing(fixtures_dir, tmp_path):
    src = fixtures_dir / "wishes_dirty.jsonl"
    before = src.read_bytes()
    rules = DEFAULT_RULES + ("peer_pronoun",)
    once = clean_file(src, tmp_path / "once.jsonl", rules=rules, report=tmp_path / "r.json")
    assert src.read_bytes() == before  # the input is never modified
    assert once.read == 8 and once.read == once.written + once.rejected
    assert dict(once.reasons) == {"non-answer": 2, "output shorter than 10 characters": 1}
    assert json.loads((tmp_path / "r.json").read_text())["written"] == once.written
    outputs = [r["conversation"][0]["output"] for _, r in iter_records(tmp_path / "once.jsonl")]
    assert outputs[0] == "姐，生日快乐！愿你每天都开开心心，越来越漂亮！"
    assert outputs[2] == "哥，祝你早日康复，身体健健康康哦！"
    assert "祝您福寿安康" in outputs[3]  # an elder neighbour keeps 您
    twice = clean_file(tmp_path / "once.jsonl", tmp_path / "twice.jsonl", rules=rules)
    assert (tmp_path / "twice.jsonl").read_bytes() == (tmp_path / "once.jsonl").read_bytes()
    assert twice.rejected == 0 and not twice.notes


def test_unknown_rule_is_refused():
    from tianji_ft.data.wishes import clean_wishes

    with pytest.raises(UserError, match="unknown rule.*no_such_rule; rules: first_line"):
        list(clean_wishes([], rules=["no_such_rule"]))
    assert "peer_pronoun" in RULES and "peer_pronoun" not in DEFAULT_RULES


def test_the_cli_help_lists_the_default_rules():
    from tianji_ft.cli.data import WISHES_DEFAULT_RULES

    assert WISHES_DEFAULT_RULES == DEFAULT_RULES
