"""The preference configs (DPO, ORPO) carry the hyper-parameters of XTuner's stock files they name as seed.

The stock configs are read from the installed xtuner package, so a seed that
changes under us, or a table value that drifts from it, fails here. What the
pack changes on purpose (one epoch, no varlen attention, local data, the
start model) is listed in xtuner_configs/CHANGELOG.md and checked below too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tianji_ft.configs.registry import config_meta
from tianji_ft.configs.table import WORKFLOWS

PREFERENCE = sorted(name for name, row in WORKFLOWS.items() if row.get("objective"))
SEED_PREFIX = "InternLM/xtuner @ v0.2.0 : xtuner/configs/"


def stock_config(name: str):
    """The mmengine Config of the stock XTuner file this config names as its seed."""
    xtuner = pytest.importorskip("xtuner")
    Config = pytest.importorskip("mmengine.config").Config
    (seed,) = [s for s in WORKFLOWS[name]["source"] if s.startswith(SEED_PREFIX)]
    return Config.fromfile(str(Path(xtuner.__file__).parent / "configs" / seed[len(SEED_PREFIX):]))


def test_the_three_preference_configs_exist():
    assert PREFERENCE == ["internlm2_chat_7b_qlora_wishes_dpo_e1", "internlm2_chat_7b_qlora_wishes_orpo_e1",
                          "llama3_8b_instruct_qlora_dpo_e1"]


@pytest.mark.parametrize("name", PREFERENCE)
def test_hyper_parameters_are_the_stock_ones(name, load_config, configs_dir):
    ours, stock = load_config(name), stock_config(name)
    meta = config_meta(configs_dir / f"{name}.py")
    assert ours.model["type"].__name__ == stock.model["type"].__name__ == meta["objective"].upper()
    for key in ("beta", "loss_type", "label_smoothing"):
        assert ours.model.get(key) == stock.model.get(key), key
    lora = ("r", "lora_alpha", "lora_dropout", "bias", "task_type")
    assert [ours.model.lora[k] for k in lora] == [stock.model.lora[k] for k in lora]
    assert ours.model.llm.quantization_config == stock.model.llm.quantization_config
    assert ours.optim_wrapper.optimizer == stock.optim_wrapper.optimizer  # AdamW, lr, betas, weight decay
    assert ours.optim_wrapper.clip_grad == stock.optim_wrapper.clip_grad
    assert ours.optim_wrapper.accumulative_counts == stock.optim_wrapper.accumulative_counts
    assert ours.train_dataloader.batch_size == stock.train_dataloader.batch_size
    assert ours.max_length == stock.max_length and ours.warmup_ratio == stock.warmup_ratio
    assert ours.param_scheduler[0]["start_factor"] == stock.param_scheduler[0]["start_factor"]
    assert ours.prompt_template == stock.prompt_template
    for key in ("is_dpo", "is_reward", "reward_token_id"):
        assert ours.train_dataset[key] == stock.train_dataset[key], key
    # On purpose (CHANGELOG): one epoch, no varlen attention, local preference files as they are.
    assert ours.train_cfg.max_epochs == 1 and name.endswith("_e1")
    assert ours.model.use_varlen_attn is False and ours.train_dataset.use_varlen_attn is False
    assert ours.train_dataset.dataset.path == "json" and ours.train_dataset.dataset_map_fn is None
    assert ours.train_dataset["type"].__name__ == stock.train_dataset["type"].__name__ == "build_preference_dataset"
    collate = ours.train_dataloader.collate_fn
    assert collate["type"].__name__ == "preference_collate_fn" and collate["use_varlen_attn"] is False


@pytest.mark.parametrize("name", PREFERENCE)
def test_wishes_preference_configs_start_from_the_merged_sft_model(name, load_config, configs_dir):
    meta = config_meta(configs_dir / f"{name}.py")
    cfg = load_config(name)
    if "wishes" in name:
        assert meta["start_from"] == "internlm2_chat_7b_qlora_wishes_e3" and meta["start_from"] in WORKFLOWS
        assert cfg.pretrained_model_name_or_path == "work_dirs/internlm2_chat_7b_qlora_wishes_e3/merged"
        assert meta["system"] == WORKFLOWS[meta["start_from"]]["system"]
    else:
        assert meta["start_from"] is None and cfg.pretrained_model_name_or_path == "models/Meta-Llama-3-8B-Instruct"
    # TIANJI_MODEL points every model entry (policy, reference, tokenizers) at the one start model.
    cfg = load_config(name, {"TIANJI_MODEL": "/runs/sft/merged"})
    assert cfg.model.llm.pretrained_model_name_or_path == cfg.tokenizer.pretrained_model_name_or_path == "/runs/sft/merged"
    assert cfg.train_dataset.tokenizer.pretrained_model_name_or_path == "/runs/sft/merged"
