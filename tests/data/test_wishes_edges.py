"""The wishes rules at their edges: each rule, each filter's boundary, the merge's refusals."""

from __future__ import annotations

import io
import json
import sys
from collections import Counter

import pytest

from tianji_ft.core.errors import UserError
from tianji_ft.data.accounting import Reject, Rejected
from tianji_ft.data.wishes import (DEFAULT_RULES, RULES, clean_file, clean_record, first_line, leading_punct,
                                   non_answer, particle_after_punct, peer_pronoun, too_short, wishes_merge,
                                   wrapping_quotes)

SYSTEM = "你现在是一个送祝福大师"


def one_turn(inp, out, **extra):
    return {"conversation": [{"system": SYSTEM, "input": inp, "output": out}], **extra}


@pytest.mark.parametrize("before, after", [
    ("\n祝你生日快乐\n\n", "\n祝你生日快乐\n\n"),   # one line of text: left as it is
    ("  祝你生日快乐  \n\n（共6字）", "祝你生日快乐"),  # the first of several, stripped
    ("\n\n 新年好 \n 万事如意", "新年好"),
])
def test_first_line(before, after):
    assert first_line(before, {}) == after


@pytest.mark.parametrize("before, after", [
    ('"新年快乐"', "新年快乐"), ("“ 新年快乐 ”", "新年快乐"), ("'新年快乐'", "新年快乐"), ("‘新年快乐’", "新年快乐"),
    ("「新年快乐」", "新年快乐"), ("『新年快乐』", "新年快乐"), ("  “新年快乐”  ", "新年快乐"),
    ("“”", "“”"), ("“a”", "a"), ("“新年快乐", "“新年快乐"), ("“新年快乐」", "“新年快乐」"),
    ("「新年」快乐「好」", "「新年」快乐「好」"), ('"他说"你好""', '"他说"你好""'),
])
def test_wrapping_quotes(before, after):
    assert wrapping_quotes(before, {}) == after


@pytest.mark.parametrize("before, after", [
    ("，。、；：！？,.;:!?~～·…—-新年快乐", "新年快乐"), ("  \n新年快乐", "新年快乐"), ("新年，快乐！", "新年，快乐！"),
    ("——祝福", "祝福"),
])
def test_leading_punct(before, after):
    assert leading_punct(before, {}) == after


def test_particle_after_punct_leaves_text_without_the_pattern_untouched_trailing_space_included():
    assert particle_after_punct("新年快乐！  ", {}) == "新年快乐！  "
    assert particle_after_punct("新年快乐！啦  ", {}) == "新年快乐啦！"
    assert particle_after_punct("新年快乐…吧…", {}) == "新年快乐吧…"
    assert particle_after_punct("啦啦啦", {}) == "啦啦啦"


@pytest.mark.parametrize("text, addressee, after", [
    ("祝您生日快乐，您辛苦了", "祝同事生日", "祝你生日快乐，你辛苦了"),
    ("祝你生日快乐", "祝同事生日", "祝你生日快乐"),
    ("祝您生日快乐", "祝同事领导生日", "祝您生日快乐"),  # an elder term wins
    ("祝您生日快乐", "", "祝您生日快乐"),
    ("祝您生日快乐", "祝妈妈生日", "祝您生日快乐"),
])
def test_peer_pronoun(text, addressee, after):
    assert peer_pronoun(text, {"input": addressee}) == after
    assert peer_pronoun("祝您快乐", {}) == "祝您快乐"


@pytest.mark.parametrize("text, reason", [
    ("好的，这是祝福：生日快乐", "non-answer (好的)"), ("  以下是祝福", "non-answer (以下是)"),
    ("请提供更多信息", "non-answer (请提供)"), ("生日快乐，作为AI我祝你", "non-answer (作为AI)"),
    ("作为一个人工智能，我", "non-answer (作为一个人工智能)"), ("很抱歉，我不能", "non-answer (很抱歉)"),
    ("当前祝福语如下：快乐", "non-answer (当前祝福语如下)"),
])
def test_non_answers_name_their_phrase(text, reason):
    assert non_answer(text, {}, 10) == reason
    with pytest.raises(Reject) as err:
        clean_record(one_turn("祝姐姐生日", text + "祝你天天开心，万事如意"))
    assert (err.value.reason, err.value.detail) == ("non-answer", reason)


def test_an_answer_that_mentions_a_phrase_word_later_is_kept():
    assert non_answer("祝您当然快乐，好的开始是成功的一半", {}, 10) is None


def test_min_length_counts_characters_without_surrounding_whitespace():
    assert too_short("一二三四五六七八九十", {}, 10) is None
    assert too_short("  一二三四五六七八九  ", {}, 10) == "output shorter than 10 characters"
    assert too_short("一二三", {}, 3) is None and too_short("一二", {}, 3) == "output shorter than 3 characters"
    with pytest.raises(Reject) as err:
        clean_record(one_turn("祝姐姐生日", "生日快乐！"), min_length=6)
    assert (err.value.reason, err.value.detail) == ("output shorter than 6 characters",) * 2
    assert clean_record(one_turn("祝姐姐生日", "生日快乐！"), min_length=5)["conversation"][0]["output"] == "生日快乐！"


def test_clean_record_cleans_every_turn_counts_rules_once_per_turn_and_keeps_other_fields():
    record = {"conversation": [
        {"system": SYSTEM, "input": "祝姐姐生日", "output": "“，姐姐生日快乐，天天开心！啦”"},
        {"input": "再来一条", "output": "“姐姐，愿你永远年轻漂亮！”"},
    ], "id": 7}
    notes = Counter()
    cleaned = clean_record(record, notes=notes)
    assert [t["output"] for t in cleaned["conversation"]] == ["姐姐生日快乐，天天开心啦！", "姐姐，愿你永远年轻漂亮！"]
    assert cleaned["id"] == 7 and cleaned["conversation"][0]["system"] == SYSTEM
    assert notes == Counter({"wrapping_quotes applied": 2, "leading_punct applied": 1, "particle_after_punct applied": 1})
    assert record["conversation"][0]["output"] == "“，姐姐生日快乐，天天开心！啦”"  # the input record is left alone
    untouched = clean_record(record, rules=["min_length"])
    assert untouched["conversation"] == record["conversation"]


def test_clean_record_refuses_an_invalid_record():
    with pytest.raises(Reject) as err:
        clean_record({"conversation": [{"input": "祝姐姐生日"}]})
    assert err.value.reason == "invalid record" and "output" in err.value.detail


def test_rules_are_the_rewrites_then_the_filters_and_peer_pronoun_is_opt_in():
    assert RULES == ("first_line", "wrapping_quotes", "leading_punct", "particle_after_punct", "peer_pronoun",
                     "non_answer", "min_length")
    assert DEFAULT_RULES == tuple(r for r in RULES if r != "peer_pronoun")


# --- the merge ---------------------------------------------------------------------------------


def merged(rows, **options):
    return list(wishes_merge(rows, **options))


def test_the_v02_layout_becomes_one_turn():
    assert merged([{"instruction": "祝姐姐生日", "input": "小红书风格", "output": "姐，生日快乐呀！"},
                   {"instruction": "祝哥哥生日", "input": "  ", "output": "哥，生日快乐！"},
                   {"instruction": "祝弟弟生日", "output": "弟，生日快乐！"}]) == [
        {"conversation": [{"input": "祝姐姐生日\n小红书风格", "output": "姐，生日快乐呀！"}]},
        {"conversation": [{"input": "祝哥哥生日", "output": "哥，生日快乐！"}]},
        {"conversation": [{"input": "祝弟弟生日", "output": "弟，生日快乐！"}]}]


def test_the_system_fills_in_only_a_first_turn_without_one():
    rows = [{"conversation": [{"input": "祝姐姐生日", "output": "姐，生日快乐！"}]},
            {"conversation": [{"system": "已有", "input": "祝姐姐生日", "output": "姐，生日快乐！"}]},
            {"conversation": [{"system": "", "input": "祝姐姐生日", "output": "姐，生日快乐！"}]}]
    systems = [r["conversation"][0]["system"] for r in merged(rows, system=SYSTEM)]
    assert systems == [SYSTEM, "已有", SYSTEM]
    assert list(merged(rows[:1], system=SYSTEM)[0]["conversation"][0]) == ["system", "input", "output"]
    assert "system" not in merged(rows[:1])[0]["conversation"][0]


@pytest.mark.parametrize("row, reason, detail", [
    (["祝福"], "not an object", ""),
    ({"conversation": "祝福", "meta": {}}, "not a conversation record", "keys: conversation, meta"),
    ({"conversation": ["祝福"]}, "invalid record", "a turn is not an object"),
    ({"conversation": [{"input": "祝姐姐生日"}]}, "invalid record", None),
])
def test_rows_the_merge_cannot_use_are_rejected_with_why(row, reason, detail):
    (result,) = merged([row])
    assert isinstance(result, Rejected) and result.reason == reason
    if detail is not None:
        assert result.detail == detail


def test_left_out_keys_are_counted_per_key():
    notes = Counter()
    merged([{"conversation": [{"input": "祝姐姐生日", "output": "姐，生日快乐！", "src_input": "p", "style_name": "s"},
                              {"input": "再来", "output": "姐，快乐！", "src_input": "q"}], "meta": {}, "id": 1}],
           notes=notes)
    assert notes == Counter({"turn key 'src_input' left out": 2, "turn key 'style_name' left out": 1,
                             "record key 'meta' left out": 1, "record key 'id' left out": 1})


def test_clean_file_refuses_preference_files_and_unknown_rules(tmp_path):
    src = tmp_path / "pairs.jsonl"
    src.write_text(json.dumps({"prompt": [{"role": "user", "content": "祝福"}],
                               "chosen": [{"role": "assistant", "content": "好"}],
                               "rejected": [{"role": "assistant", "content": "坏"}]}, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    with pytest.raises(UserError, match=r"pairs.jsonl: preference records \(record 0 is one\)"):
        clean_file(src, tmp_path / "out.jsonl")
    with pytest.raises(UserError, match="unknown rule"):
        clean_file(src, tmp_path / "out.jsonl", also_known=["nope"])
    with pytest.raises(UserError, match="encoding"):
        clean_file(src, tmp_path / "out.jsonl", encoding="no-such-codec")
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("field", ["instruction", "input", "output"])
def test_a_nested_value_in_a_v02_row_is_rejected_naming_its_field(field):
    row = {"instruction": "祝姐姐生日", "input": "小红书风格", "output": "姐，生日快乐呀！", field: ["嵌套"]}
    (result,) = merged([row])
    assert result == Rejected(f"nested value in '{field}'", f"'{field}' is a JSON array, not text")


def test_a_row_with_a_conversation_and_an_instruction_is_read_as_a_conversation():
    row = {"conversation": [{"input": "祝姐姐生日", "output": "姐，生日快乐！"}], "instruction": "旧字段"}
    notes = Counter()
    assert merged([row], notes=notes) == [{"conversation": row["conversation"]}]
    assert notes == Counter({"record key 'instruction' left out": 1})


def test_an_invalid_record_says_what_is_wrong():
    (result,) = merged([{"conversation": [{"input": "", "output": ""}]}])
    assert result == Rejected("invalid record", "turn 0: empty 'output'; turn 0: empty 'input'")
    with pytest.raises(Reject) as err:
        clean_record({"conversation": [{"input": "", "output": ""}]})
    assert err.value.detail == "turn 0: empty 'output'; turn 0: empty 'input'"
    (result,) = merged([{"conversation": []}])
    assert result.reason == "invalid record" and result.detail


@pytest.mark.parametrize("text, hit", [
    ("当前祝福语如下：", "当前祝福语如下"), ("这是祝福语如下所示", "祝福语如下"), ("作为一个人工智能", "作为一个人工智能"),
    ("作为一个AI，我", "作为一个AI"), ("作为AI", "作为AI"), ("我是一个AI助手", "我是一个AI"),
    ("以下是祝福", "以下是"), ("好的！", "好的"), ("当然可以", "当然"), ("很抱歉", "很抱歉"), ("抱歉，", "抱歉"),
    ("对不起，", "对不起"), ("请提供名字", "请提供"),
])
def test_every_non_answer_phrase_and_opening(text, hit):
    assert non_answer(text, {}, 10) == f"non-answer ({hit})"


@pytest.mark.parametrize("peer", ["姐姐", "妹妹", "哥哥", "弟弟", "堂兄", "堂弟", "堂姐", "堂妹", "堂哥", "表哥", "表弟",
                                  "表姐", "表妹", "同学", "同事", "邻居"])
def test_every_peer_gets_you_and_an_elder_among_them_keeps_nin(peer):
    assert peer_pronoun("祝您天天开心", {"input": f"祝{peer}生日"}) == "祝你天天开心"


@pytest.mark.parametrize("elder", ["大妈", "大爷", "阿姨", "叔叔", "伯伯", "奶奶", "爷爷", "老师", "领导"])
def test_every_elder_keeps_nin_even_as_a_neighbour(elder):
    assert peer_pronoun("祝您天天开心", {"input": f"祝邻居{elder}生日"}) == "祝您天天开心"


@pytest.mark.parametrize("text", ["新年快乐！XX", "Happy new year X啦", "快乐！啦XX", "快乐！X"])
def test_letters_are_neither_particles_punctuation_nor_emoji(text):
    assert particle_after_punct(text, {}) == text


def test_a_turns_system_is_kept_not_counted_as_left_out():
    notes = Counter()
    merged([{"conversation": [{"system": SYSTEM, "input": "祝姐姐生日", "output": "姐，生日快乐！", "x": 1}]}], notes=notes)
    assert notes == Counter({"turn key 'x' left out": 1})


def test_clean_wishes_keeps_ten_characters_by_default_and_names_unknown_rules():
    from tianji_ft.data.wishes import clean_wishes

    (kept,) = clean_wishes([one_turn("祝姐姐生日", "一二三四五六七八九十")])
    assert kept["conversation"][0]["output"] == "一二三四五六七八九十"
    with pytest.raises(UserError) as err:
        list(clean_wishes([], rules=["b_rule", "a_rule"]))
    assert str(err.value) == f"unknown rule(s) a_rule, b_rule; rules: {', '.join(RULES)}"
    assert ", ".join(RULES).startswith("first_line, wrapping_quotes")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_clean_is_quiet_unless_asked_and_refuses_pairs_word_for_word(tmp_path, monkeypatch, fixtures_dir):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    src = fixtures_dir / "wishes_dirty.jsonl"
    clean_file(src, tmp_path / "quiet.jsonl")
    assert terminal.getvalue() == ""
    clean_file(src, tmp_path / "shown.jsonl", quiet=False)
    assert terminal.getvalue().startswith("\rclean shown.jsonl: ")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": [], "chosen": [], "rejected": []}) + "\n", encoding="utf-8")
    with pytest.raises(UserError) as err:
        clean_file(pairs, tmp_path / "out.jsonl")
    assert str(err.value) == (f"{pairs}: preference records (record 0 is one); the wishes rules clean conversation "
                              "records: clean those before pairs are made from them")
