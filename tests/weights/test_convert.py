"""Checkpoint -> Hugging Face adapter or model, from real CPU training runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tianji_ft.cli import main
from tianji_ft.weights.convert import convert, pick_checkpoint, pth_to_hf_command
from tianji_ft.xtuner.runner import ENTRY_MODULE
from tianji_ft.core.errors import UserError
from tianji_ft.core.fsio import sha256_file


def checkpoint_state(path: Path) -> dict:
    """What XTuner's pth_to_hf loads from a .pth file or a DeepSpeed folder (fp32 for ZeRO)."""
    from xtuner.model.utils import guess_load_checkpoint

    return guess_load_checkpoint(str(path))


def test_pick_checkpoint_last_by_marker_by_number_and_by_iter(tmp_path):
    for n in (2, 10):
        (tmp_path / f"iter_{n}.pth").write_bytes(b"x")
    zero = tmp_path / "iter_6.pth"
    zero.mkdir()
    (zero / "mp_rank_00_model_states.pt").write_bytes(b"x")
    (tmp_path / "iter_8.pth").mkdir()  # an interrupted save: no model states
    assert pick_checkpoint(tmp_path) == tmp_path / "iter_10.pth"
    (tmp_path / "last_checkpoint").write_text("/elsewhere/moved/iter_6.pth")  # work dir moved since
    assert pick_checkpoint(tmp_path) == zero
    assert pick_checkpoint(tmp_path, 2) == tmp_path / "iter_2.pth"
    with pytest.raises(UserError, match=r"no iter_8\.pth; available: iter_2\.pth, iter_6\.pth, iter_10\.pth"):
        pick_checkpoint(tmp_path, 8)


def test_a_work_dir_without_checkpoint_is_one_line(tmp_path, capsys):
    (tmp_path / "tianji_run.json").write_text("{}")
    code = main(["convert", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "no checkpoint (iter_N.pth) found" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tianji_run.json"]


def test_a_changed_config_is_refused_before_anything_runs(tmp_path):
    config = tmp_path / "cfg.py"
    config.write_text("x = 1\n")
    manifest = {"config": {"path": str(config), "sha256": sha256_file(config)}, "lora": True, "cfg_options": []}
    (tmp_path / "tianji_run.json").write_text(json.dumps(manifest))
    (tmp_path / "iter_2.pth").write_bytes(b"x")
    config.write_text("x = 2\n")
    ran = []
    with pytest.raises(UserError, match="changed since"):
        convert(tmp_path, runner=lambda *a: ran.append(a) or 0)
    assert ran == [] and not (tmp_path / "adapter").exists()


def test_command_is_pth_to_hf_through_the_entry_module_without_the_quantization_option(tmp_path):
    cmd = pth_to_hf_command(Path("cfg.py"), Path("iter_4.pth"), tmp_path, ["model.llm.quantization_config=None",
                                                                           "model.lora.r=16"])
    assert cmd[1:4] == ["-m", ENTRY_MODULE, "xtuner.tools.model_converters.pth_to_hf"]
    assert cmd[4:7] == ["cfg.py", "iter_4.pth", str(tmp_path)]
    assert "--safe-serialization" in cmd and "--fp32" in cmd
    assert cmd[cmd.index("--cfg-options") + 1:] == ["model.lora.r=16"]


def test_a_failed_conversion_names_the_step_and_leaves_no_output(tmp_path):
    config = tmp_path / "cfg.py"
    config.write_text("x = 1\n")
    (tmp_path / "tianji_run.json").write_text(json.dumps(
        {"config": {"path": str(config), "sha256": sha256_file(config)}, "lora": True, "cfg_options": []}))
    (tmp_path / "iter_2.pth").write_bytes(b"x")
    with pytest.raises(UserError, match="step 'convert' failed with exit code 3"):
        convert(tmp_path, runner=lambda cmd, env, log: 3, quiet=True)
    assert not (tmp_path / "adapter").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def assert_adapter_equals_checkpoint(adapter: Path, checkpoint: Path) -> None:
    import torch
    from safetensors.torch import load_file

    got = load_file(adapter / "adapter_model.safetensors")
    want = {k.removeprefix("llm.").replace(".default.", "."): v for k, v in checkpoint_state(checkpoint).items()}
    assert set(got) == set(want) and any("lora_B" in k for k in got)
    for key, tensor in got.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, want[key].float()), key
    assert any(tensor.abs().max() > 0 for key, tensor in got.items() if "lora_B" in key)  # it trained


@pytest.mark.slow
def test_lora_run_from_pth_gives_adapter_tokenizer_and_manifest(run_lora_pth, tmp_path):
    out = convert(run_lora_pth, out_dir=tmp_path / "adapter")
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "tianji_run.json"} <= names
    assert not any(n.endswith(".bin") for n in names)
    manifest = json.loads((out / "tianji_run.json").read_text())
    assert manifest["checkpoint"] == str(run_lora_pth / "iter_8.pth") and manifest["lora"] is True
    assert manifest["converted_from"] == str(run_lora_pth) and manifest["template"] == "internlm2_chat"
    assert_adapter_equals_checkpoint(out, run_lora_pth / "iter_8.pth")
    base = Path(manifest["model"])
    assert (out / "tokenizer.json").read_bytes() == (base / "tokenizer.json").read_bytes()


@pytest.mark.slow
def test_lora_run_from_zero2_folder_and_an_earlier_iteration(run_lora_zero2, capsys):
    assert (run_lora_zero2 / "iter_4.pth").is_dir()
    code = main(["convert", str(run_lora_zero2), "--iter", "4"])
    out = run_lora_zero2 / "adapter"
    assert code == 0 and f"converted -> {out}" in capsys.readouterr().out
    assert json.loads((out / "tianji_run.json").read_text())["checkpoint"].endswith("iter_4.pth")
    assert_adapter_equals_checkpoint(out, run_lora_zero2 / "iter_4.pth")


@pytest.mark.slow
def test_full_fine_tune_from_zero3_folder_gives_a_loadable_model(run_full_zero3):
    import torch
    from transformers import AutoModelForCausalLM

    out = convert(run_full_zero3)
    assert out == run_full_zero3 / "merged"
    assert (run_full_zero3 / "iter_8.pth").is_dir()
    manifest = json.loads((out / "tianji_run.json").read_text())
    assert manifest["lora"] is False and not (out / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True, torch_dtype=torch.float32)
    got = model.state_dict()
    want = {k.removeprefix("llm."): v for k, v in checkpoint_state(run_full_zero3 / "iter_8.pth").items()}
    assert set(want) <= set(got)
    for key, tensor in want.items():
        assert torch.equal(got[key], tensor.float()), key  # the tiny base is fp32, kept as fp32
    base = AutoModelForCausalLM.from_pretrained(manifest["model"], trust_remote_code=True)
    assert not torch.equal(base.state_dict()["model.tok_embeddings.weight"], got["model.tok_embeddings.weight"])
    stop = json.loads((out / "tokenizer.json").read_text())
    stop_id = next(t["id"] for t in stop["added_tokens"] if t["content"] == "<|im_end|>")
    eos = json.loads((out / "generation_config.json").read_text())["eos_token_id"]
    assert stop_id in (eos if isinstance(eos, list) else [eos])


@pytest.mark.slow
def test_a_qlora_run_converts_on_a_machine_without_cuda(run_lora_pth, tmp_path):
    # A run trained on a GPU has the config's 4-bit quantization on and no override in its
    # manifest; converting it here (no CUDA, no bitsandbytes kernels) must still work.
    work = tmp_path / "gpu_run"
    work.mkdir()
    shutil.copy(run_lora_pth / "iter_4.pth", work / "iter_4.pth")
    manifest = json.loads((run_lora_pth / "tianji_run.json").read_text())
    manifest.update(cfg_options=[], quantized=True)
    (work / "tianji_run.json").write_text(json.dumps(manifest))
    out = convert(work)
    assert_adapter_equals_checkpoint(out, work / "iter_4.pth")
