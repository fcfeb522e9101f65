"""One rule for a JSON array or object where text is expected, in every
converter: the record is rejected with a reason naming the field, never
stringified into training text."""

import json

import pytest

from tianji_ft.data.accounting import Rejected, rejects_path
from tianji_ft.data.records import convert_files
from tianji_ft.data.registry import all_converters, get_converter
from tianji_ft.data.reader import iter_records
from tianji_ft.data.preference import record_kind, validator

NESTED = [{"答": "多休息"}, ["多休息", "多喝水"]]
SYSTEM_MSG = '可用工具：{"name": "天气", "description": "查天气"}'
USER = {"role": "user", "content": "祝姐姐生日"}

# kind -> (a good row, the text field to put a nested value in, a function putting it there)
CASES = {
    "medqa": ({"Question": "头疼怎么办？", "Answer": "注意休息。"}, "Answer",
              lambda row, v: {**row, "Answer": v}),
    "firefly": ({"kind": "Couplet", "input": "上联：春风得意", "target": "下联：秋水长天"}, "target",
                lambda row, v: {**row, "target": v}),
    "moss": ({"conversation": [{"human": "你好", "assistant": "你好！有什么可以帮你？"}]}, "human",
             lambda row, v: {"conversation": [{"human": v, "assistant": "你好！"}]}),
    "alpaca": ({"instruction": "翻译成英文", "input": "今天天气很好", "output": "Nice weather today."}, "input",
               lambda row, v: {**row, "input": v}),
    "guanaco": ({"text": "### Human: 什么是光合作用？### Assistant: 植物利用光能制造养分。"}, "text",
                lambda row, v: {"text": v}),
    "sharegpt": ({"conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "你好！"}]}, "value",
                 lambda row, v: {"conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": v}]}),
    "openai": ({"messages": [{"role": "user", "content": "一加一？"}, {"role": "assistant", "content": "二"}]},
               "content",
               lambda row, v: {"messages": [{"role": "user", "content": "一加一？"}, {"role": "assistant", "content": v}]}),
    "generic": ({"input": "高血压要注意什么？", "output": "少盐，规律服药。"}, "output",
                lambda row, v: {**row, "output": v}),
    "conversation": ({"conversation": [{"input": "你好", "output": "你好！"}]}, "output",
                     lambda row, v: {"conversation": [{"input": "你好", "output": v}]}),
    "msagent": ({"conversations": [{"from": "system", "value": SYSTEM_MSG}, {"from": "user", "value": "北京天气？"},
                                   {"from": "assistant", "value": "晴，25度。"}]}, "value",
                lambda row, v: {"conversations": [{"from": "system", "value": SYSTEM_MSG},
                                                  {"from": "user", "value": v},
                                                  {"from": "assistant", "value": "晴，25度。"}]}),
    "wishes-merge": ({"conversation": [{"system": "你是送祝福大师", "input": "祝姐姐生日", "output": "姐，生日快乐！"}]},
                     "input", lambda row, v: {"conversation": [{"input": v, "output": "姐，生日快乐！"}]}),
    "ultrafeedback": ({"prompt": "祝姐姐生日", "chosen": [USER, {"role": "assistant", "content": "姐，生日快乐！"}],
                       "rejected": [USER, {"role": "assistant", "content": "生日快乐"}]}, "content",
                      lambda row, v: {**row, "chosen": [USER, {"role": "assistant", "content": v}]}),
    "hh-rlhf": ({"chosen": "\n\nHuman: 祝姐姐生日\n\nAssistant: 姐，生日快乐！",
                 "rejected": "\n\nHuman: 祝姐姐生日\n\nAssistant: 生日快乐"}, "chosen",
                lambda row, v: {**row, "chosen": v}),
    "preference": ({"prompt": [USER], "chosen": [{"role": "assistant", "content": "姐，生日快乐！"}],
                    "rejected": [{"role": "assistant", "content": "生日快乐"}]}, "content",
                   lambda row, v: {**row, "rejected": [{"role": "assistant", "content": v}]}),
    "conversation-pairs": ({"conversation": [{"input": "祝姐姐生日", "chosen": "姐，生日快乐！", "rejected": "生日快乐"}]},
                           "rejected", lambda row, v: {"conversation": [{"input": "祝姐姐生日", "chosen": "姐，生日快乐！",
                                                                         "rejected": v}]}),
}


def test_every_converter_kind_is_covered():
    assert set(CASES) == set(all_converters())


@pytest.mark.parametrize("kind", sorted(CASES))
@pytest.mark.parametrize("nested", NESTED, ids=["object", "array"])
def test_a_nested_value_rejects_the_record_naming_the_field(tmp_path, kind, nested):
    good, name, put = CASES[kind]
    bad = put(good, nested)
    results = list(get_converter(kind).func([good, bad]))
    assert not isinstance(results[0], Rejected) and validator(record_kind(results[0]))(results[0]) == [], results[0]
    assert isinstance(results[1], Rejected), results[1]
    assert results[1].reason == f"nested value in '{name}'"
    assert f"'{name}' is a JSON {'object' if isinstance(nested, dict) else 'array'}, not text" in results[1].detail

    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(good, ensure_ascii=False) + "\n" + json.dumps(bad, ensure_ascii=False) + "\n",
                   encoding="utf-8")
    out = tmp_path / "out.jsonl"
    tally = convert_files(kind, [src], out)
    assert (tally.read, tally.written, tally.rejected) == (2, 1, 1)
    assert dict(tally.reasons) == {f"nested value in '{name}'": 1}
    assert "多休息" not in out.read_text(encoding="utf-8")  # never dumped into training text
    (reject,) = [json.loads(x) for x in rejects_path(out).read_text(encoding="utf-8").splitlines()]
    assert reject["index"] == 1 and reject["record"] == bad
    assert [r for _, r in iter_records(out)] == [results[0]]


@pytest.mark.parametrize("kind, row, name", [
    ("alpaca", {"instruction": "问", "output": "答", "system": {"role": "老师"}}, "system"),
    ("alpaca", {"instruction": "问", "output": "答", "history": [[["嵌套"], "答"]]}, "history"),
    ("sharegpt", {"system": ["你是助手"], "conversations": [{"from": "human", "value": "你好"},
                                                         {"from": "gpt", "value": "你好！"}]}, "system"),
    ("openai", {"messages": [{"role": "user", "content": [{"type": "text", "text": {"t": "你好"}}]},
                             {"role": "assistant", "content": "好"}]}, "content"),
    ("wishes-merge", {"instruction": ["祝妹妹"], "output": "妹，快乐！"}, "instruction"),
    ("generic", {"input": "问", "output": "答", "系统": {"a": 1}}, "系统"),
])
def test_other_text_fields_follow_the_same_rule(kind, row, name):
    options = {"system_col": "系统"} if kind == "generic" else {}
    (result,) = get_converter(kind).func([row], **options)
    assert isinstance(result, Rejected) and result.reason == f"nested value in '{name}'"


def test_numbers_and_null_are_still_text():
    (result,) = get_converter("firefly").func([{"input": 12, "target": 3.0}])
    assert result == {"conversation": [{"input": "12", "output": "3"}]}
    (result,) = get_converter("firefly").func([{"input": "问", "target": None}])
    assert result.reason == "empty output"
