"""Every config loads in mmengine, dumps, and is internally consistent.

The trap this guards against: a setting re-assigned after the dicts built
from it (as happens with ``read_base()`` inheritance) leaves some entries on
the old value, e.g. a Qwen model trained with an InternLM tokenizer. Here
every model path and template entry must follow the settings, with and
without the TIANJI_* variables set.
"""

from __future__ import annotations

import json
import os

import pytest

from tianji_ft.configs.table import WORKFLOWS
from tianji_ft.configs.registry import config_meta, config_settings
from tianji_ft.configs.settings import SETTINGS
from tianji_ft.core.paths import CONFIGS_DIR

NAMES = sorted(WORKFLOWS)

OVERRIDES = {
    "TIANJI_MODEL": "/elsewhere/qwen-7b-chat",
    "TIANJI_DATA": os.pathsep.join(["/d/a.jsonl", "/d/b.json"]),
    "TIANJI_WORK_DIR": "/w/run1",
    "TIANJI_EPOCHS": "7",
    "TIANJI_BATCH_SIZE": "3",
    "TIANJI_ACCUM": "5",
    "TIANJI_MAX_LENGTH": "333",
    "TIANJI_LR": "1.5e-05",
    "TIANJI_SYSTEM": "新的系统提示",
    "TIANJI_EVAL_PROMPTS": json.dumps(["问题一", "question two"], ensure_ascii=False),
    "TIANJI_SAVE_STEPS": "11",
    "TIANJI_SAVE_TOTAL_LIMIT": "4",
    "TIANJI_EVAL_FREQ": "13",
    "TIANJI_EVAL_MAX_NEW_TOKENS": "17",
    "TIANJI_WARMUP_RATIO": "0.1",
    "TIANJI_SEED": "99",
    "TIANJI_PACK": "0",
    "TIANJI_REPORT_TO": "tensorboard,wandb",
}


def entries(obj, key: str):
    """Every value stored under ``key`` anywhere in a nested config."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                yield v
            yield from entries(v, key)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from entries(v, key)


def as_dict(cfg) -> dict:
    # tianji_meta names the template too, as a string; it is checked against the table elsewhere
    return {k: cfg[k] for k in cfg.keys() if k != "tianji_meta"}


def hook(cfg, type_name: str):
    return next(h for h in cfg.custom_hooks if getattr(h["type"], "__name__", str(h["type"])).endswith(type_name))


def test_the_override_list_covers_every_setting():
    assert set(OVERRIDES) == {s.env for s in SETTINGS}


@pytest.mark.parametrize("name", NAMES)
def test_defaults_are_consistent_and_dump(name, load_config, prompt_templates, tmp_path):
    cfg = load_config(name)
    meta = config_meta(CONFIGS_DIR / f"{name}.py")
    defaults = config_settings(CONFIGS_DIR / f"{name}.py")
    tree = as_dict(cfg)
    models = list(entries(tree, "pretrained_model_name_or_path"))
    # tokenizer, model.llm, the dataset's tokenizer (twice: train_dataset and the
    # dataloader's copy) and both hooks' tokenizers, at least
    assert len(models) >= 6
    assert set(models) == {cfg.pretrained_model_name_or_path} == {defaults["TIANJI_MODEL"]["default"]}
    templates = list(entries(tree, "template")) + list(entries(tree, "prompt_template"))
    # preference pairs are laid out by the tokenizer's chat template: only the hook names the template
    assert len(templates) >= (2 if meta.get("objective") else 4)
    assert all(t == prompt_templates[meta["template"]] for t in templates)
    assert hook(cfg, "EvaluateChatHook")["system"] == meta["system"]
    assert hook(cfg, "EvaluateChatHook")["evaluation_inputs"] == meta["eval_prompts"]
    assert cfg.work_dir is None  # xtuner then uses work_dirs/<config name>
    assert cfg.visualizer is None  # no tracking unless asked

    # No helper or environment leaks into the copy XTuner writes to the work dir.
    os.environ["SOME_API_KEY"] = "sk-must-not-leak"
    try:
        out = tmp_path / "dumped.py"
        cfg.dump(str(out))
    finally:
        del os.environ["SOME_API_KEY"]
    dumped = out.read_text(encoding="utf-8")
    assert "_env" not in cfg and "_env" not in dumped and "sk-must-not-leak" not in dumped
    assert "tianji_meta" in dumped


@pytest.mark.parametrize("name", NAMES)
def test_settings_from_the_environment_reach_every_entry(name, load_config, prompt_templates):
    cfg = load_config(name, OVERRIDES)
    meta = config_meta(CONFIGS_DIR / f"{name}.py")
    tree = as_dict(cfg)
    assert set(entries(tree, "pretrained_model_name_or_path")) == {"/elsewhere/qwen-7b-chat"}
    assert list(entries(tree, "data_files")) == [["/d/a.jsonl", "/d/b.json"]] * len(list(entries(tree, "data_files")))
    datasets = [cfg.train_dataset, cfg.train_dataloader.dataset]
    for ds in datasets:
        assert ds.dataset.data_files == ["/d/a.jsonl", "/d/b.json"]
        assert ds.max_length == 333
        if not meta.get("objective"):
            assert ds.pack_to_max_length is False and ds.seed == 99
    # The template is not a setting: it stays the one the model was trained with.
    assert all(t == prompt_templates[meta["template"]] for t in entries(tree, "template"))
    assert cfg.work_dir == "/w/run1"
    assert cfg.train_cfg.max_epochs == 7
    assert cfg.train_dataloader.batch_size == 3
    assert cfg.optim_wrapper.accumulative_counts == 5
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(1.5e-5)
    assert cfg.default_hooks.checkpoint.interval == 11 and cfg.default_hooks.checkpoint.max_keep_ckpts == 4
    chat = hook(cfg, "EvaluateChatHook")
    assert chat["system"] == "新的系统提示"
    assert chat["evaluation_inputs"] == ["问题一", "question two"]
    assert chat["every_n_iters"] == 13
    assert chat["max_new_tokens"] == 17
    warmup, cosine = cfg.param_scheduler
    assert warmup["end"] == pytest.approx(0.7) and cosine["begin"] == pytest.approx(0.7) and cosine["end"] == 7
    assert cfg.randomness.seed == 99
    backends = [b["type"].__name__ for b in cfg.visualizer["vis_backends"]]
    assert cfg.visualizer["type"].__name__ == "Visualizer" and backends == ["TensorboardVisBackend", "WandbVisBackend"]


@pytest.mark.parametrize("name", NAMES)
def test_zero_warmup_leaves_only_the_cosine_schedule(name, load_config):
    cfg = load_config(name, {"TIANJI_WARMUP_RATIO": "0", "TIANJI_EPOCHS": "2"})
    (cosine,) = cfg.param_scheduler
    assert cosine["type"].__name__ == "CosineAnnealingLR"
    assert cosine["begin"] == 0 and cosine["end"] == 2


@pytest.mark.parametrize("name", NAMES)
def test_quantization_and_lora_are_the_seeds(name, load_config):
    import torch
    from transformers import BitsAndBytesConfig

    cfg = load_config(name)
    meta = config_meta(CONFIGS_DIR / f"{name}.py")
    llm = cfg.model.llm
    if not meta["quantized"]:
        assert "quantization_config" not in llm and "lora" not in cfg.model
        return
    q = llm.quantization_config
    assert q["type"] is BitsAndBytesConfig
    assert q["load_in_4bit"] is True and q["load_in_8bit"] is False
    assert q["bnb_4bit_quant_type"] == "nf4" and q["bnb_4bit_use_double_quant"] is True
    assert q["bnb_4bit_compute_dtype"] is torch.float16 and llm.torch_dtype is torch.float16
    lora = cfg.model.lora
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (64, 16, 0.1)
    assert cfg.optim_wrapper.dtype == "float16"
    # The launcher turns QLoRA into plain LoRA on CPU this way.
    cfg.merge_from_dict({"model.llm.quantization_config": None})
    assert cfg.model.llm.quantization_config is None and cfg.model.lora.r == 64


def test_map_functions_follow_the_data_format(load_config):
    expected = {"conversation": None, "oasst1": "oasst1_map_fn", "msagent": "msagent_react_map_fn", "preference": None}
    for name in NAMES:
        cfg = load_config(name)
        fmt = config_meta(CONFIGS_DIR / f"{name}.py")["data_format"]
        fn = cfg.train_dataset.dataset_map_fn
        assert (fn.__name__ if fn else None) == expected[fmt], name
        assert cfg.train_dataset.dataset.path == "json"  # local files only, never a hub id
