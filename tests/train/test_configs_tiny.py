"""Every config in the pack trains end to end with --tiny on CPU (slow).

QLoRA configs fall back to plain LoRA where bitsandbytes cannot quantize
(the launcher says so); their quantization settings are checked against the
seeds in tests/configs/test_config_load.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tianji_ft.configs.registry import config_meta, list_configs, resolve_config
from tianji_ft.core.manifest import read_manifest
from tianji_ft.train.live import last_progress
from tianji_ft.xtuner.runner import launch_env, tool_command
from tianji_ft.core.paths import CONFIGS_DIR, PROJECT_ROOT


def iterations(log: str) -> int:
    done = [int(m) for m in re.findall(r"Iter\(train\) \[\s*(\d+)/", log)]
    return max(done, default=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_configs())
def test_config_trains_with_tiny(name, tmp_path):
    wd = tmp_path / "wd"
    proc = subprocess.run([sys.executable, "-m", "tianji_ft", "train", name, "--tiny", "--work-dir", str(wd),
                           "--epochs", "1"], capture_output=True, text=True, timeout=900)
    log = (wd / "train.log").read_text() if (wd / "train.log").is_file() else ""
    assert proc.returncode == 0, proc.stderr[-1500:] + log[-3000:]
    assert iterations(log) >= 2
    # the foreground run showed its progress as it went (tianji_ft.train.live), on stderr
    last = last_progress(wd / "train.log")  # the last iteration mmengine logged, as the user saw it
    assert "[tianji-ft] training started" in proc.stderr
    assert f"iter {last['iter']}/{last['max_iters']} (" in proc.stderr and f"loss {last['loss']:.4f}" in proc.stderr
    meta = config_meta(resolve_config(name))
    if meta.get("quantized"):
        assert "training plain LoRA instead of QLoRA" in proc.stdout
    manifest = read_manifest(wd)
    assert manifest["exit_code"] == 0 and manifest["template"] == meta["template"]
    assert manifest["last_checkpoint"] and os.path.exists(manifest["last_checkpoint"])


@pytest.mark.slow
def test_xtuner_train_reads_settings_from_environment_variables_only(tmp_path):
    """The same config file, no flags: TIANJI_* variables choose model, data, epochs and work dir."""
    from tianji_ft.models.tiny import ensure_tiny_model

    wd = tmp_path / "plain"
    env = launch_env(extra={
        "TIANJI_MODEL": str(ensure_tiny_model("internlm2")),
        "TIANJI_DATA": str(PROJECT_ROOT / "data" / "demo" / "wishes.jsonl"),
        "TIANJI_WORK_DIR": str(wd), "TIANJI_EPOCHS": "1", "TIANJI_MAX_LENGTH": "256",
        "TIANJI_WARMUP_RATIO": "0", "TIANJI_EVAL_MAX_NEW_TOKENS": "8", "TIANJI_ACCUM": "1",
    })
    config = CONFIGS_DIR / "internlm2_chat_7b_full_wishes_e1.py"
    # Without CUDA the compatibility entry point stands in for `xtuner train`.
    cmd = tool_command("train", [str(config), "--deepspeed", str(CONFIGS_DIR / "deepspeed" / "zero3_cpu_bf16.json")])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (wd / "last_checkpoint").is_file()
    dumped = next(wd.glob("*/vis_data/config.py")).read_text()
    assert env["TIANJI_MODEL"] in dumped and "max_epochs = 1" in dumped
