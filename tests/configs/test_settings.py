"""The settings list: flags for our commands, variables for the configs, one encoding."""

from __future__ import annotations

import argparse
import json
import os

from tianji_ft.configs.settings import BY_ENV, SETTINGS, add_arguments, env_from_values


def test_names_are_unique_and_prefixed():
    assert len({s.env for s in SETTINGS}) == len({s.flag for s in SETTINGS}) == len({s.var for s in SETTINGS}) == len(SETTINGS)
    assert all(s.env.startswith("TIANJI_") and s.flag.startswith("--") for s in SETTINGS)


def test_flags_become_the_variables_the_configs_read():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--data", "a.jsonl", "b.json", "--lr", "1e-4", "--eval-prompts", "祝你好", "hi",
                              "--no-pack", "--epochs", "2", "--system", ""])
    env = env_from_values(args)
    assert env == {
        "TIANJI_DATA": os.pathsep.join(["a.jsonl", "b.json"]),
        "TIANJI_LR": "0.0001",
        "TIANJI_EVAL_PROMPTS": '["祝你好", "hi"]',
        "TIANJI_PACK": "0",
        "TIANJI_EPOCHS": "2",
        "TIANJI_SYSTEM": "",
    }
    assert json.loads(env["TIANJI_EVAL_PROMPTS"]) == ["祝你好", "hi"]
    # What the config does with them: split on os.pathsep, float(), == "1".
    assert env["TIANJI_DATA"].split(os.pathsep) == ["a.jsonl", "b.json"]
    assert float(env["TIANJI_LR"]) == 1e-4 and (env["TIANJI_PACK"] == "1") is False


def test_unset_flags_leave_the_config_defaults():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert env_from_values(parser.parse_args([])) == {}
    assert BY_ENV["TIANJI_PACK"].to_env(True) == "1"
