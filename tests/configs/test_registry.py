"""Finding and describing configs reads files with ast only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tianji_ft.configs import registry, table
from tianji_ft.configs.settings import SETTINGS
from tianji_ft.core.errors import UserError
from tianji_ft.core.paths import PROJECT_ROOT


def test_list_configs_is_the_table():
    assert registry.list_configs() == sorted(table.WORKFLOWS)


def test_resolve_by_name_path_and_unknown(configs_dir, tmp_path):
    path = configs_dir / "internlm2_chat_7b_qlora_wishes_e3.py"
    assert registry.resolve_config("internlm2_chat_7b_qlora_wishes_e3") == path
    assert registry.resolve_config("internlm2_chat_7b_qlora_wishes_e3.py") == path
    assert registry.resolve_config(str(path)) == path
    with pytest.raises(UserError) as err:
        registry.resolve_config("qwen_7b_lora")
    message = str(err.value)
    assert "unknown config 'qwen_7b_lora'" in message and "internlm2_chat_7b_full_wishes_e1" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", sorted(table.WORKFLOWS))
def test_meta_matches_the_table(name, configs_dir):
    meta = registry.config_meta(configs_dir / f"{name}.py")
    row = table.WORKFLOWS[name]
    model = table.MODELS[row["model"]]
    assert meta["name"] == name and meta["version"] == row["version"]
    assert (meta["family"], meta["template"], meta["hub"]) == (model["family"], model["template"], model["hub"])
    assert meta["system"] == row["system"] and meta["eval_prompts"] == list(row["eval_prompts"])
    assert meta["deepspeed"] in ("zero2", "zero3", None)
    assert meta["quantized"] is (row["method"] == "qlora") and meta["lora"] is (row["lora"] is not None)
    assert meta["data_format"] in ("conversation", "oasst1", "msagent", "preference")
    assert meta.get("objective") == row.get("objective") and meta.get("start_from") == row.get("start_from")
    assert all(not p.startswith("/") for p in meta["tiny_data"])


@pytest.mark.parametrize("name", sorted(table.WORKFLOWS))
def test_every_setting_is_read_with_its_default(name, configs_dir):
    found = registry.config_settings(configs_dir / f"{name}.py")
    row = table.WORKFLOWS[name]
    # Preference pairs are packed only with varlen attention, which the pack leaves off: no TIANJI_PACK.
    settings = [s for s in SETTINGS if not (row.get("objective") and s.env == "TIANJI_PACK")]
    assert set(found) == {s.env for s in settings}
    assert {env: info["var"] for env, info in found.items()} == {s.env: s.var for s in settings}
    # A preference config continues the SFT run it names, from its merged model.
    start = f"work_dirs/{row['start_from']}/merged" if row.get("start_from") else None
    assert found["TIANJI_MODEL"]["default"] == (start or table.MODELS[row["model"]]["local_dir"])
    assert found["TIANJI_DATA"]["default"] == table.DATASETS[row["dataset"]]["file"]
    assert found["TIANJI_EVAL_PROMPTS"]["default"] == list(row["eval_prompts"])
    assert found["TIANJI_SYSTEM"]["default"] == row["system"]
    assert float(found["TIANJI_LR"]["default"]) == row["lr"]
    assert found["TIANJI_WORK_DIR"]["default"] is None


def test_wishes_seed_values():
    meta = registry.config_meta(registry.resolve_config("internlm2_chat_7b_qlora_wishes_e3"))
    found = registry.config_settings(registry.resolve_config("internlm2_chat_7b_qlora_wishes_e3"))
    assert meta["template"] == "internlm2_chat" and meta["deepspeed"] == "zero2"
    assert meta["system"] == "你现在是一个送祝福大师，帮我针对不同人和事情、节日送对应的祝福"
    assert len(meta["eval_prompts"]) == 6
    assert {k: found[f"TIANJI_{k}"]["default"] for k in ("EVAL_FREQ", "SAVE_STEPS", "SAVE_TOTAL_LIMIT", "WARMUP_RATIO")} \
        == {"EVAL_FREQ": "50", "SAVE_STEPS": "50", "SAVE_TOTAL_LIMIT": "10", "WARMUP_RATIO": "0.03"}
    full = registry.config_meta(registry.resolve_config("internlm2_chat_7b_full_wishes_e1"))
    assert full["deepspeed"] == "zero3" and full["quantized"] is False and full["lora"] is False
    llama = registry.config_meta(registry.resolve_config("llama3_8b_instruct_qlora_chinese_e1"))
    assert llama["template"] == "llama3_chat" and llama["system"] == ""


def test_tiny_data_is_in_the_config_format():
    """Each config's tiny sample data exists (or is still to be added) and has its format's rows."""
    keys = {"conversation": "conversation", "oasst1": "text", "msagent": "conversations", "preference": "chosen"}
    missing = []
    for name in table.WORKFLOWS:
        meta = registry.config_meta(registry.resolve_config(name))
        for rel in meta["tiny_data"]:
            path = PROJECT_ROOT / rel
            if not path.is_file():
                missing.append(rel)
                continue
            text = path.read_text(encoding="utf-8").strip()
            rows = json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines() if x.strip()]
            assert rows and all(keys[meta["data_format"]] in r for r in rows), rel
    assert "data/demo/wishes.jsonl" not in missing
    if missing:
        pytest.skip(f"sample data not added yet: {', '.join(sorted(set(missing)))}")


def test_non_tianji_config_has_empty_meta(tmp_path):
    plain = tmp_path / "plain.py"
    plain.write_text("lr = 1e-4\n", encoding="utf-8")
    assert registry.config_meta(plain) == {}
    assert registry.config_settings(plain) == {}


def test_meta_must_be_literal(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\ntianji_meta = dict(name=x)\n", encoding="utf-8")
    with pytest.raises(UserError, match="plain literals"):
        registry.config_meta(bad)


def test_reading_configs_imports_nothing_heavy():
    code = (
        "import sys, tianji_ft.configs, tianji_ft.configs.registry as r, tianji_ft.models.download, "
        "tianji_ft.configs.render, tianji_ft.cli.configs, tianji_ft.cli.models\n"
        "for n in r.list_configs(): r.config_meta(r.resolve_config(n)); r.config_settings(r.resolve_config(n))\n"
        "r.describe(r.list_configs()[0])\n"
        "print(sorted(m for m in ('torch', 'mmengine', 'xtuner', 'transformers', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    assert out.stdout.strip() == "[]"
