"""--tiny keeps a run short: one evaluation prompt, short answers, one epoch; flags still win."""

from __future__ import annotations

import json

from tianji_ft.configs.registry import config_meta, resolve_config
from tianji_ft.train import train as launcher

CONFIG = "internlm2_chat_7b_qlora_wishes_e3"


def test_tiny_runs_answer_one_evaluation_prompt_unless_told_otherwise(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prompts = config_meta(resolve_config(CONFIG))["eval_prompts"]
    assert len(prompts) > 1
    tiny = launcher.plan(launcher.TrainRequest(config=CONFIG, tiny=True), cuda=False)
    assert json.loads(tiny["env"]["TIANJI_EVAL_PROMPTS"]) == prompts[:1]
    assert tiny["env"]["TIANJI_EVAL_MAX_NEW_TOKENS"] == "16" and tiny["env"]["TIANJI_EPOCHS"] == "1"
    mine = launcher.plan(launcher.TrainRequest(config=CONFIG, tiny=True,
                                               settings={"TIANJI_EVAL_PROMPTS": '["祝老师教师节快乐", "hi"]'}), cuda=False)
    assert json.loads(mine["env"]["TIANJI_EVAL_PROMPTS"]) == ["祝老师教师节快乐", "hi"]
