"""Shared fixtures for the launch tests."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

# --- checkpoints, adapters and merged models (convert / merge / export tests) --------------------
LORA_CONFIG = "internlm2_chat_7b_qlora_wishes_e3"
FULL_CONFIG = "internlm2_chat_7b_full_wishes_e1"


def train_tiny(work_dir: Path, config: str, deepspeed: str) -> Path:
    """A real XTuner run of ``config`` on the tiny InternLM2 model: 8 iterations, a checkpoint every 2."""
    from tianji_ft.launch.train import TrainRequest, train

    request = TrainRequest(config=config, tiny=True, work_dir=str(work_dir), deepspeed=deepspeed,
                           settings={"TIANJI_SAVE_STEPS": "2", "TIANJI_MAX_LENGTH": "128"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        assert train(request, out=io.StringIO()) == 0
    return work_dir


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


def make_adapter(base: Path, out: Path, seed: int = 0, **lora) -> Path:
    """A PEFT LoRA adapter for ``base`` with random (nonzero) A and B, saved as PEFT saves it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, trust_remote_code=True, torch_dtype=torch.float32)
    options = dict(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM") | lora
    peft_model = get_peft_model(model, LoraConfig(**options))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name:
                param.normal_(0, 0.05)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def lora_adapter_factory():
    """``make_adapter(base, out, seed=0, **LoraConfig options)`` for tests that need their own adapter."""
    return make_adapter


@pytest.fixture(scope="session")
def tiny_llama3() -> Path:
    from tianji_ft.launch.tiny import ensure_tiny_model

    return ensure_tiny_model("llama3")


@pytest.fixture(scope="session")
def llama3_adapter(tiny_llama3, tmp_path_factory) -> Path:
    return make_adapter(tiny_llama3, tmp_path_factory.mktemp("adapters") / "llama3")


@pytest.fixture(scope="session")
def llama3_merged(tiny_llama3, llama3_adapter, tmp_path_factory) -> Path:
    """The tiny Llama-3 merged with a random adapter (fp32), with a run manifest naming a system prompt."""
    from tianji_ft.launch.merge import merge

    adapter = tmp_path_factory.mktemp("adapters") / "llama3_with_manifest"
    shutil.copytree(llama3_adapter, adapter)
    (adapter / "tianji_run.json").write_text(json.dumps(
        {"template": "llama3_chat", "family": "llama3", "system": "你是一位送祝福的大师。", "lora": True},
        ensure_ascii=False))
    return merge(tiny_llama3, adapter, tmp_path_factory.mktemp("merged") / "llama3-tianji")
