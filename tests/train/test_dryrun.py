"""dry_run: exact counts on a known dataset, one-line errors for bad records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import FIXTURES

from tianji_ft.train.dryrun import dry_run, format_report
from tianji_ft.xtuner.datacheck import check_training_data
from tianji_ft.core.errors import UserError

CONFIG = FIXTURES / "tiny_sft.py"
DATA = FIXTURES / "wishes10.jsonl"
# InternLM2's chat template as XTuner applies it, written out here so the
# expected counts do not come from the code under test.
SYSTEM = "<|im_start|>system\n{system}<|im_end|>\n"
USER = "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n"
SUFFIX, SEP = "<|im_end|>", "\n"


@pytest.fixture(scope="module")
def tokenizer_dir() -> Path:
    from tianji_ft.models.tiny import ensure_tiny_model

    return ensure_tiny_model("internlm2")


def env_for(tokenizer_dir: Path, tmp_path: Path, data: Path = DATA, **settings) -> dict:
    env = {"TIANJI_MODEL": str(tokenizer_dir), "TIANJI_DATA": str(data), "TIANJI_FT_CACHE": str(tmp_path / "cache")}
    env.update({f"TIANJI_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def record_tokens(tokenizer, record: dict) -> int:
    """Tokens XTuner's encode_fn produces for one record: <s>, then each turn's prompt, answer+suffix, separator."""
    n = 1
    for turn in record["conversation"]:
        prompt = (SYSTEM.format(system=turn["system"]) if turn.get("system") else "") + USER.format(input=turn["input"])
        for text in (prompt, turn["output"] + SUFFIX, SEP):
            n += len(tokenizer.encode(text, add_special_tokens=False))
    return n


@pytest.mark.slow
@pytest.mark.parametrize("max_length", [64, 4096])
def test_counts_match_an_independent_count(tokenizer_dir, tmp_path, max_length):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    records = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    total = sum(min(record_tokens(tokenizer, r), max_length) for r in records)
    # One packing pass (map_num_proc=1): full rows of max_length; XTuner's
    # packer drops the remainder unless everything fits in one row.
    rows, tokens = (total // max_length, total // max_length * max_length) if total >= max_length else (1, total)
    assert rows > 4 or max_length == 4096

    env = env_for(tokenizer_dir, tmp_path, max_length=max_length, batch_size=2, accum=3)
    result = dry_run(CONFIG, env, [], world_size=2)

    assert result["samples"] == 10
    assert result["packed_rows"] == rows
    assert result["tokens_per_epoch"] == tokens
    assert result["iters_per_epoch"] == math.ceil(rows / 4)
    assert result["optimizer_steps_per_epoch"] == math.ceil(math.ceil(rows / 4) / 3)
    assert result["max_length"] == max_length and result["problems"] == []
    assert len(result["examples"]) == 2 and "祝妈妈生日快乐" in result["examples"][0]
    assert result["examples"][0].startswith("<s><|im_start|>system\n")
    assert result["dataset_cache"]["hit"] is False
    assert f"tokens per epoch: {tokens}" in format_report(result)


@pytest.mark.slow
def test_cfg_options_apply_and_a_second_run_reuses_the_packed_data(tokenizer_dir, tmp_path):
    env = env_for(tokenizer_dir, tmp_path, max_length=64, batch_size=1)
    first = dry_run(CONFIG, dict(env, WORLD_SIZE="1"), [])
    second = dry_run(CONFIG, dict(env, WORLD_SIZE="1"), ["train_dataloader.batch_size=3"])
    assert second["dataset_cache"]["hit"] is True
    assert second["dataset_cache"]["key"] == first["dataset_cache"]["key"]
    assert (first["batch_size"], second["batch_size"]) == (1, 3)
    assert second["iters_per_epoch"] == math.ceil(first["packed_rows"] / 3)
    assert Path(second["dataset_cache"]["path"]).is_relative_to(tmp_path / "cache")


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def good(i: int) -> str:
    return json.dumps({"conversation": [{"input": f"祝朋友{i}号快乐", "output": "天天开心！"}]}, ensure_ascii=False)


@pytest.mark.slow
def test_bad_records_give_one_line_naming_file_and_record(tokenizer_dir, tmp_path):
    bad = write_lines(tmp_path / "bad.jsonl", [
        good(1),
        json.dumps({"conversation": [{"input": "祝爸爸生日快乐"}]}, ensure_ascii=False),  # record 1: no output
        good(3),
        json.dumps({"conversation": [{"input": "祝", "output": 123}]}),  # record 3
        json.dumps({"conversation": [{"input": "祝妈妈", "output": "  "}]}, ensure_ascii=False),  # record 4
        good(6),
        json.dumps({"messages": [{"role": "user", "content": "你好"}]}, ensure_ascii=False),  # record 6
    ])
    with pytest.raises(UserError) as caught:
        dry_run(CONFIG, env_for(tokenizer_dir, tmp_path, data=bad), [])
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("4 bad record(s) of 7")
    assert f"{bad}:1: turn 0: missing 'output'" in message
    assert f"{bad}:3: turn 0: 'output' is a JSON number, not text" in message
    assert f"{bad}:4: turn 0: empty 'output'" in message
    assert "(and 1 more)" in message and ":6:" not in message
    assert not (tmp_path / "cache").exists()  # nothing tokenized for bad data


@pytest.mark.slow
def test_a_map_fn_on_data_already_in_conversation_format_is_refused(tokenizer_dir, tmp_path):
    with pytest.raises(UserError, match="set dataset_map_fn=None"):
        dry_run(CONFIG, env_for(tokenizer_dir, tmp_path), ["train_dataloader.dataset.dataset_map_fn=xtuner.dataset.map_fns.openai_map_fn"])


def check_file(path: Path, map_fn=None, templated: bool = True) -> list[str]:
    """The training check's problems for one local file, or its one-line error."""
    cfg = {"dataset": {"path": "json", "data_files": str(path)}, "dataset_map_fn": map_fn,
           "template_map_fn": {} if templated else None}
    try:
        return check_training_data(cfg).problems
    except UserError as err:
        return [str(err)]


def test_every_record_is_checked_not_only_the_first(tmp_path):
    lines = [good(i) for i in range(1, 200)] + [json.dumps({"conversation": {"input": "x", "output": "y"}})]
    data = write_lines(tmp_path / "late.jsonl", lines)
    [problem] = check_file(data)
    assert problem.startswith("1 bad record(s) of 200") and f"{data}:199: 'conversation' must be" in problem


def test_records_from_a_json_array_are_named_by_index(tmp_path):
    data = tmp_path / "arr.json"
    data.write_text(json.dumps([json.loads(good(1)), {"conversation": []}], ensure_ascii=False), encoding="utf-8")
    [problem] = check_file(data)
    assert f"{data}:1: 'conversation' must be a non-empty list of turns" in problem


def test_a_map_fn_that_fails_names_the_record(tmp_path):
    data = write_lines(tmp_path / "oa.jsonl", [
        json.dumps({"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "您好"}]},
                   ensure_ascii=False),
        json.dumps({"msgs": []}),
    ])

    def messages_map_fn(example):
        msgs = example["messages"]
        return {"conversation": [{"input": msgs[0]["content"], "output": msgs[1]["content"]}]}

    [problem] = check_file(data, messages_map_fn)
    assert f"{data}:1: dataset_map_fn failed: KeyError: 'messages'" in problem


def test_after_a_map_fn_a_turn_may_lack_input_when_a_template_fills_it(tmp_path):
    data = write_lines(tmp_path / "tool.jsonl", [json.dumps({"turns": ["问天气", "调用工具", "晴"]}, ensure_ascii=False)])

    def tool_map_fn(example):  # like XTuner's msagent_react_map_fn: a tool response turn has no input
        q, call, answer = example["turns"]
        return {"conversation": [{"input": q, "output": call}, {"system": "Response: 晴", "output": answer}]}

    assert check_file(data, tool_map_fn, templated=True) == []
    [problem] = check_file(data, tool_map_fn, templated=False)
    assert f"{data}:0: after dataset_map_fn, turn 2 has no 'input'" in problem


@pytest.mark.slow
def test_max_length_too_short_for_any_answer_is_a_one_line_error(tokenizer_dir, tmp_path):
    with pytest.raises(UserError, match=r"no training sample left after tokenizing with max_length=8"):
        dry_run(CONFIG, env_for(tokenizer_dir, tmp_path, max_length=8), [])
