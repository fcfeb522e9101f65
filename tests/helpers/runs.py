"""Real training runs and PEFT adapters for the tests (the fixtures that build them are in tests/conftest.py)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest  # train_tiny uses its MonkeyPatch

# --- checkpoints, adapters and merged models (convert / merge / export tests) --------------------
LORA_CONFIG = "internlm2_chat_7b_qlora_wishes_e3"
FULL_CONFIG = "internlm2_chat_7b_full_wishes_e1"


def train_tiny(work_dir: Path, config: str, deepspeed: str) -> Path:
    """A real XTuner run of ``config`` on the tiny InternLM2 model: 8 iterations, a checkpoint every 2."""
    from tianji_ft.train.train import TrainRequest, train

    request = TrainRequest(config=config, tiny=True, work_dir=str(work_dir), deepspeed=deepspeed,
                           settings={"TIANJI_SAVE_STEPS": "2", "TIANJI_MAX_LENGTH": "128"})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        assert train(request, out=io.StringIO()) == 0
    return work_dir


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
