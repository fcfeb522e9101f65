"""The training data check of a preference config (DPO, ORPO) reads preference records, not conversations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tianji_ft.core.errors import UserError
from tianji_ft.core.paths import CONFIGS_DIR, PROJECT_ROOT
from tianji_ft.xtuner.datacheck import check_training_data, is_preference_dataset

SAMPLE = PROJECT_ROOT / "data" / "samples_small" / "wishes_pairs.jsonl"
PROMPT = [{"role": "system", "content": "你现在是一个送祝福大师"}, {"role": "user", "content": "祝妈妈生日快乐"}]


def pair(chosen="妈妈，生日快乐！愿您健康长寿。", rejected="生日快乐。", prompt=PROMPT):
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def write(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def preference_cfg(*files, map_fn=None) -> dict:
    """``train_dataloader.dataset`` of a preference config, as XTuner's ``build_preference_dataset`` takes it."""
    return {"type": "xtuner.dataset.preference_dataset.build_preference_dataset",
            "dataset": {"path": "json", "data_files": [str(f) for f in files]},
            "tokenizer": {}, "max_length": 256, "dataset_map_fn": map_fn, "is_dpo": True, "is_reward": False}


def test_the_shipped_sample_passes():
    assert check_training_data(preference_cfg(SAMPLE)).records == sum(1 for _ in SAMPLE.open(encoding="utf-8"))


def test_bad_pairs_are_one_line_naming_file_record_and_problem(tmp_path):
    data = write(tmp_path / "pairs.jsonl", [
        pair(),
        pair(rejected="妈妈，生日快乐！愿您健康长寿。"),  # the same answer twice
        pair(prompt=PROMPT + [{"role": "assistant", "content": "好的"}]),  # nothing left to answer
        {"conversation": [{"input": "祝妈妈生日快乐", "output": "生日快乐"}]},  # an SFT record
    ])
    with pytest.raises(UserError) as err:
        check_training_data(preference_cfg(data))
    line = str(err.value)
    assert "\n" not in line and line.startswith("3 bad record(s) of 4 in the training data")
    assert f"{data}:1: 'chosen' and 'rejected' are the same answer" in line
    assert f"{data}:2: 'prompt' must end with a user message" in line
    assert "tianji-ft data validate" in line
    assert f"{data}:3: a conversation record in a preference (DPO/ORPO) config" in line


def test_preference_records_do_not_pass_an_sft_config(tmp_path):
    data = write(tmp_path / "pairs.jsonl", [pair()])
    sft = {"dataset": {"path": "json", "data_files": [str(data)]}, "tokenizer": {}, "max_length": 256,
           "dataset_map_fn": None, "template_map_fn": {}}
    assert not is_preference_dataset(sft) and is_preference_dataset(preference_cfg(data))
    with pytest.raises(UserError, match="1 bad record.*a preference record .* train preference pairs with a DPO or ORPO"):
        check_training_data(sft)


def test_a_map_function_is_applied_before_the_check(tmp_path):
    """Raw chosen/rejected transcripts (the orpo-dpo-mix shape) through a map function, as XTuner would."""
    def transcripts_to_pairs(row):
        return {"prompt": row["chosen"][:-1], "chosen": row["chosen"][-1:], "rejected": row["rejected"][-1:]}

    good = {"chosen": PROMPT + [{"role": "assistant", "content": "妈妈生日快乐！"}],
            "rejected": PROMPT + [{"role": "assistant", "content": "快乐。"}]}
    data = write(tmp_path / "raw.jsonl", [good])
    assert check_training_data(preference_cfg(data, map_fn=transcripts_to_pairs)).records == 1
    with pytest.raises(UserError, match="every record is already a preference record"):
        check_training_data(preference_cfg(write(tmp_path / "done.jsonl", [pair()]), map_fn=transcripts_to_pairs))
    bad = write(tmp_path / "bad.jsonl", [dict(good, rejected=good["chosen"])])
    with pytest.raises(UserError, match=r"after dataset_map_fn, 'chosen' and 'rejected' are the same answer"):
        check_training_data(preference_cfg(bad, map_fn=transcripts_to_pairs))


@pytest.mark.slow  # loads the XTuner config (imports torch and XTuner)
@pytest.mark.parametrize("name", ["internlm2_chat_7b_qlora_wishes_dpo_e1", "internlm2_chat_7b_qlora_wishes_orpo_e1"])
def test_the_rendered_configs_check_preference_records(name, tmp_path):
    from tianji_ft.xtuner.datacheck import check_plan_data

    env = {"TIANJI_DATA": str(SAMPLE)}
    assert check_plan_data(env, CONFIGS_DIR / f"{name}.py", []).records > 0
    with pytest.raises(UserError, match="bad record"):
        check_plan_data({"TIANJI_DATA": str(PROJECT_ROOT / "data" / "demo" / "wishes.jsonl")},
                        CONFIGS_DIR / f"{name}.py", [])
