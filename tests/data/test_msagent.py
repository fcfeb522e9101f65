import copy
import json
from collections import Counter

import pytest

from tianji_ft.data.accounting import Reject, Rejected
from tianji_ft.data.msagent import msagent, parse_conversations, react_conversation
from tianji_ft.data.records import convert_files
from tianji_ft.data.reader import iter_records
from tianji_ft.data.schema import record_problems
from tianji_ft.data.sources import read_rows


def rows_of(path):
    return [row for _, row in read_rows(path)]


def as_xtuner_renders(turns):
    """What XTuner's template_map_fn sees: an empty system is no system, a missing input is ''."""
    out = []
    for turn in turns:
        t = {k: v for k, v in turn.items() if not (k == "system" and not v)}
        t.setdefault("input", "")
        out.append(t)
    return out


def tag_rows(fixtures_dir, samples_dir=None):
    rows = rows_of(fixtures_dir / "msagent.jsonl")[:2]
    if samples_dir is not None:
        rows += rows_of(samples_dir / "msagent" / "MSAgent-Bench_MS_Agent_Bench_20.doc_example.json")
    return rows


def test_same_turns_as_xtuner_msagent_react_map_fn(fixtures_dir, xtuner_map_fns):
    for row in tag_rows(fixtures_dir):
        (ours,) = msagent([row])
        theirs = xtuner_map_fns["msagent_react_map_fn"](copy.deepcopy(row))["conversation"]
        assert theirs, "xtuner kept the row"
        assert ours["conversation"] == as_xtuner_renders(theirs)


def test_same_turns_as_xtuner_on_the_real_example(fixtures_dir, samples_dir, xtuner_map_fns):
    row = tag_rows(fixtures_dir, samples_dir)[-1]
    (ours,) = msagent([row])
    theirs = xtuner_map_fns["msagent_react_map_fn"](copy.deepcopy(row))["conversation"]
    assert ours["conversation"] == as_xtuner_renders(theirs)
    assert ours["conversation"][1]["system"].startswith("Response:")


def test_the_tool_prompt_lists_the_apis_with_their_parameters(fixtures_dir):
    (record,) = msagent(rows_of(fixtures_dir / "msagent.jsonl")[:1])
    first, tool = record["conversation"]
    assert "{'modelscope_text-ie': \"信息抽取服务" in first["system"] and "输入参数: {'text': '用户输入的文本'" in first["system"]
    assert first["output"].startswith("Action:modelscope_text-ie\nAction Input:{")
    assert tool == {"system": "Response:{'人物': ['小王'], '地点': ['杭州西湖']}\n", "input": "",
                    "output": "Final Answer:抽取结果：人物是小王，地点是杭州西湖。\n"}
    assert record_problems(record) == []


def test_conversations_held_in_a_string_are_parsed_not_executed():
    assert parse_conversations('[{"from": "user", "value": "你好"}]') == [{"from": "user", "value": "你好"}]
    assert parse_conversations("[{'from': 'user', 'value': '你好'}]") == [{"from": "user", "value": "你好"}]
    with pytest.raises(Reject, match="malformed conversations"):
        parse_conversations("__import__('os').system('echo hacked')")


@pytest.mark.parametrize("messages, reason", [
    ([{"from": "user", "value": "只有一条"}], "fewer than 2 messages"),
    ([{"from": "system", "value": "s"}, {"from": "robot", "value": "x"}], "unknown role"),
    ([{"from": "assistant", "value": "先说"}, {"from": "user", "value": "后问"}], "roles out of order"),
    ([{"from": "user", "value": "问"}, {"from": "assistant", "value": "答"}, {"from": "system", "value": "晚了"},
      {"from": "user", "value": "再问"}, {"from": "assistant", "value": "再答"}], "roles out of order"),
    ([{"from": "user", "value": "问"}, {"from": "user", "value": "又问"}], "no assistant reply"),
    ([{"from": "user", "value": "问"}, {"from": "assistant", "value": "<|startofthink|>{bad<|endofthink|>"}],
     "malformed <|startofthink|> block"),
    ([{"from": "user", "value": "问"}, {"from": "assistant", "value": "<|startofexec|>a<|startofexec|>b"}],
     "malformed <|startofexec|> block"),
    ([{"from": "user", "value": "问"}, {"from": "assistant", "value": "x<|startofexec|>```JSON\n{bad\n```<|endofexec|>答"}],
     "malformed <|startofexec|> block"),
])
def test_bad_rows_are_rejected_with_a_reason(messages, reason):
    (result,) = msagent([{"conversations": messages}])
    assert isinstance(result, Rejected) and result.reason == reason


def test_fixture_counts(fixtures_dir, tmp_path):
    tally = convert_files("msagent", [fixtures_dir / "msagent.jsonl"], tmp_path / "out.jsonl")
    assert (tally.read, tally.written) == (6, 2)
    assert dict(tally.reasons) == {"fewer than 2 messages": 1, "unknown role": 1,
                                   "malformed <|startofthink|> block": 1, "roles out of order": 1}
    rejects = [json.loads(line) for line in (tmp_path / "out.rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["index"] for r in rejects] == [2, 3, 4, 5]
    assert rejects[0]["record"]["id"] == "demo_3"


def test_react_text_rows_split_at_each_observation(fixtures_dir):
    (record,) = msagent(rows_of(fixtures_dir / "msagent_react.json"))
    first, tool = record["conversation"]
    assert first["system"].startswith("Answer the following questions")  # its own prompt is kept
    assert first["output"] == "Action: weather_query\nAction Input: {'city': '北京'}\n"
    assert tool["system"].startswith("Observation: {'city': '北京'")
    assert tool["output"] == "Thought: I now know the final answer\nFinal Answer: 北京明天晴，气温25℃左右。"


def assert_react_turns(messages: list[dict], turns: list[dict]) -> None:
    """Each assistant message of ReAct text is its turns put back together: the first turn answers the
    user's text, and each ``Observation:`` line starts a turn whose system is the tool's result."""
    turns, system, user = list(turns), "", ""
    for message in messages:
        if message["from"] == "system":
            system = message["value"]
        elif message["from"] == "user":
            user += message["value"] + "\n"
        else:
            text = message["value"]
            group = [turns.pop(0) for _ in range(1 + sum(line.startswith("Observation:")
                                                         for line in text.split("\n")))]
            assert group[0].get("system", "") == system and group[0]["input"] == user
            assert all(t["system"].startswith("Observation:") and t["input"] == "" for t in group[1:])
            assert all(t["output"].startswith(("Thought", "Action", "Final Answer")) for t in group[1:])
            assert group[0]["output"] + "".join(t["system"] + t["output"] for t in group[1:]) == text
            system, user = "", ""
    assert turns == [], "turns left over"


def test_react_text_turns_put_back_together_are_the_messages(fixtures_dir):
    (row,) = rows_of(fixtures_dir / "msagent_react.json")
    (record,) = msagent([row])
    assert len(record["conversation"]) == 2
    assert_react_turns(row["conversations"], record["conversation"])


def test_real_react_sample(samples_dir):
    rows = rows_of(samples_dir / "msagent" / "ms_agent_MS_Agent_Bench_126374.doc_example.json")
    (record,) = msagent(rows)
    messages = rows[0]["conversations"]
    observations = sum(m["value"].count("\nObservation:") for m in messages if m["from"] == "assistant")
    users = sum(m["from"] == "user" for m in messages)
    assert len(record["conversation"]) == users + observations
    assert_react_turns(messages, record["conversation"])
    assert record_problems(record) == []


def test_keep_raw_writes_rows_unchanged_and_refuses_react_text(fixtures_dir, tmp_path):
    src = fixtures_dir / "msagent.jsonl"
    tally = convert_files("msagent", [src, fixtures_dir / "msagent_react.json"], tmp_path / "raw.jsonl",
                          options={"keep_raw": True})
    kept = [r for _, r in iter_records(tmp_path / "raw.jsonl")]
    assert kept == rows_of(src)[:2]
    assert tally.reasons["ReAct-text row"] == 1 and tally.read == 7


def test_trailing_user_message_is_counted():
    notes = Counter()
    turns = react_conversation([{"from": "user", "value": "问"}, {"from": "assistant", "value": "答"},
                                {"from": "user", "value": "没人回答"}], notes)
    assert len(turns) == 1 and notes["trailing unanswered turn dropped"] == 1
