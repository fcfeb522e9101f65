"""Shared fixtures: the real dataset samples beside the project, tiny models, trained runs, adapters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import taught_model as taught
from helpers.runs import FULL_CONFIG, LORA_CONFIG, make_adapter, train_tiny

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = PROJECT_ROOT.parent / "shared" / "data" / "samples"


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The read-only real samples (``../shared/data/samples``); skip where absent."""
    if not SAMPLES_DIR.is_dir():
        pytest.skip(f"real dataset samples not found at {SAMPLES_DIR} (only present beside the team's checkout)")
    return SAMPLES_DIR




@pytest.fixture(scope="session")
def wishes():
    return taught.wishes()


@pytest.fixture(scope="session")
def taught_model_dir(tmp_path_factory) -> Path:
    """The tiny InternLM2 model taught to answer the demo wishes and stop (with a run manifest)."""
    import torch

    torch.set_num_threads(1)
    return taught.taught_model(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def tiny_model():
    """``tiny_model(family)``: the cached tiny model folder of that family."""
    from tianji_ft.models.tiny import ensure_tiny_model

    return ensure_tiny_model


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    cache = {}

    def load(family):
        if family not in cache:
            cache[family] = AutoTokenizer.from_pretrained(tiny_model(family), trust_remote_code=True)
        return cache[family]

    return load


# --- checkpoints, adapters and merged models (convert / merge / export / output-safety tests) ----------

@pytest.fixture(scope="session")
def run_lora_pth(tmp_path_factory) -> Path:
    """LoRA (the QLoRA config; plain LoRA on CPU), no DeepSpeed: ``iter_N.pth`` files."""
    return train_tiny(tmp_path_factory.mktemp("runs") / "lora_pth", LORA_CONFIG, "none")


@pytest.fixture(scope="session")
def run_lora_zero2(tmp_path_factory) -> Path:
    """LoRA under DeepSpeed ZeRO-2: ``iter_N.pth/`` folders."""
    return train_tiny(tmp_path_factory.mktemp("runs") / "lora_zero2", LORA_CONFIG, "zero2")


@pytest.fixture(scope="session")
def run_full_zero3(tmp_path_factory) -> Path:
    """Full fine-tune under DeepSpeed ZeRO-3 (parameters partitioned in the checkpoint)."""
    return train_tiny(tmp_path_factory.mktemp("runs") / "full_zero3", FULL_CONFIG, "zero3")


@pytest.fixture(scope="session")
def lora_adapter_factory():
    """``make_adapter(base, out, seed=0, **LoraConfig options)`` for tests that need their own adapter."""
    return make_adapter


@pytest.fixture(scope="session")
def tiny_llama3() -> Path:
    from tianji_ft.models.tiny import ensure_tiny_model

    return ensure_tiny_model("llama3")


@pytest.fixture(scope="session")
def llama3_adapter(tiny_llama3, tmp_path_factory) -> Path:
    return make_adapter(tiny_llama3, tmp_path_factory.mktemp("adapters") / "llama3")


@pytest.fixture(scope="session")
def llama3_merged(tiny_llama3, llama3_adapter, tmp_path_factory) -> Path:
    """The tiny Llama-3 merged with a random adapter (fp32), with a run manifest naming a system prompt."""
    from tianji_ft.weights.merge import merge

    adapter = tmp_path_factory.mktemp("adapters") / "llama3_with_manifest"
    shutil.copytree(llama3_adapter, adapter)
    (adapter / "tianji_run.json").write_text(json.dumps(
        {"template": "llama3_chat", "family": "llama3", "system": "你是一位送祝福的大师。", "lora": True},
        ensure_ascii=False))
    return merge(tiny_llama3, adapter, tmp_path_factory.mktemp("merged") / "llama3-tianji")

