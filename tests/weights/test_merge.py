"""The shard-by-shard LoRA merge against PEFT's merge_and_unload."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tianji_ft.cli import main
from tianji_ft.weights.merge import merge, write_model
from tianji_ft.weights.safetensors_io import from_f32, read_weights, to_f32
from tianji_ft.core.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def peft_reference(base: Path, adapter: Path) -> dict:
    """PEFT's merge_and_unload computed in fp32 (tensors not yet rounded)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, trust_remote_code=True, torch_dtype=torch.float32)
    return PeftModel.from_pretrained(model, adapter).merge_and_unload().state_dict()


def load_output(out: Path) -> dict:
    from safetensors.torch import load_file

    tensors = {}
    for path in sorted(out.glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def assert_equal_to_reference(out: Path, reference: dict, dtype: str) -> None:
    import torch

    got = load_output(out)
    assert set(got) == set(reference)
    for name, tensor in got.items():
        assert tensor.dtype == getattr(torch, TORCH_DTYPES[dtype]), name
        want = reference[name].to(tensor.dtype)
        assert torch.equal(tensor, want), f"{name}: max abs diff {(tensor.float() - want.float()).abs().max()}"


def test_bf16_and_fp16_rounding_is_torchs_round_to_nearest_even():
    import numpy as np
    import torch

    values = torch.cat([torch.randn(100_000) * 1000, torch.tensor([1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 65519.0,
                                                                     70000.0, float("inf"), -0.0])])
    raw = values.numpy().view(np.uint8)
    bf16 = from_f32(to_f32(raw.copy(), "F32"), "BF16")
    assert np.array_equal(bf16, values.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16))
    fp16 = from_f32(to_f32(raw.copy(), "F32"), "F16")
    assert np.array_equal(fp16.view(np.uint16), values.to(torch.float16).view(torch.int16).numpy().view(np.uint16))
    back = to_f32(bf16.view(np.uint8), "BF16")
    assert np.array_equal(back, values.to(torch.bfloat16).float().numpy())


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_merge_equals_peft_in_fp32_rounded_once(tiny_llama3, llama3_adapter, tmp_path, dtype):
    out = merge(tiny_llama3, llama3_adapter, tmp_path / "merged", dtype=dtype)
    assert_equal_to_reference(out, peft_reference(tiny_llama3, llama3_adapter), dtype)
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == TORCH_DTYPES[dtype]


@pytest.mark.slow
def test_embedding_lora_rslora_alpha_pattern_and_modules_to_save(tiny_llama3, tmp_path, lora_adapter_factory):
    adapter = lora_adapter_factory(tiny_llama3, tmp_path / "adapter", seed=3, r=4, lora_alpha=8, use_rslora=True,
                           target_modules=["embed_tokens", "q_proj", "v_proj", "down_proj"],
                           alpha_pattern={"down_proj": 32}, modules_to_save=["lm_head"])
    import torch
    from safetensors.torch import load_file, save_file

    # modules_to_save copies lm_head unchanged; make it differ so replacing it is visible.
    weights = load_file(adapter / "adapter_model.safetensors")
    key = next(k for k in weights if "lm_head" in k)
    weights[key] = weights[key] + torch.randn_like(weights[key])
    save_file(weights, adapter / "adapter_model.safetensors", metadata={"format": "pt"})
    out = merge(tiny_llama3, adapter, tmp_path / "merged", dtype="fp32")
    assert_equal_to_reference(out, peft_reference(tiny_llama3, adapter), "fp32")


@pytest.mark.slow
def test_a_bin_checkpoint_base_merges_the_same(tiny_llama3, llama3_adapter, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    base = tmp_path / "base_bin"  # as XTuner's own merge writes models (no --safe-serialization)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama3, torch_dtype=torch.bfloat16)
    model.save_pretrained(base, safe_serialization=False, max_shard_size="400KB")
    shutil.copy(tiny_llama3 / "tokenizer.json", base / "tokenizer.json")
    assert (base / "pytorch_model.bin.index.json").is_file()
    out = merge(base, llama3_adapter, tmp_path / "merged", dtype="bf16")
    assert_equal_to_reference(out, peft_reference(base, llama3_adapter), "bf16")


@pytest.mark.slow
def test_merged_model_generates_like_base_plus_adapter(tiny_llama3, llama3_adapter, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = merge(tiny_llama3, llama3_adapter, tmp_path / "merged", dtype="fp32")
    tokenizer = AutoTokenizer.from_pretrained(out)
    merged = AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32)
    unmerged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_llama3, torch_dtype=torch.float32), llama3_adapter)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama3, torch_dtype=torch.float32)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "祝姐姐生日快乐"}], add_generation_prompt=True,
                                        return_tensors="pt")
    with torch.no_grad():
        got, want, before = merged(ids).logits, unmerged(ids).logits, base(ids).logits
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    assert not torch.allclose(before, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())  # the adapter matters
    kwargs = dict(max_new_tokens=16, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert merged.generate(ids, **kwargs).tolist() == unmerged.generate(ids, **kwargs).tolist()


@pytest.mark.slow
def test_auto_keeps_the_base_dtype_and_copies_unmerged_tensors_exactly(tiny_llama3, llama3_adapter, tmp_path):
    bf16_base = write_model(tiny_llama3, tmp_path / "base_bf16", dtype="bf16")
    out = merge(bf16_base, llama3_adapter, tmp_path / "merged", dtype="auto")
    base, merged = read_weights(bf16_base), read_weights(out)
    assert {e.dtype for e in merged.values()} == {"BF16"}
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    norm = "model.norm.weight"  # no LoRA pair: copied byte for byte
    assert (merged[norm].read_raw() == base[norm].read_raw()).all()
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not (merged[q].read_raw() == base[q].read_raw()).all()


@pytest.mark.slow
def test_sharding_writes_an_index_and_loads(tiny_llama3, llama3_adapter, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out = merge(tiny_llama3, llama3_adapter, tmp_path / "merged", dtype="fp32", max_shard_size="300KB")
    shards = sorted(out.glob("model-*.safetensors"))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(shards) > 2 and not (out / "model.safetensors").exists()
    assert set(index["weight_map"].values()) == {p.name for p in shards}
    entries = read_weights(out)
    assert index["metadata"]["total_size"] == sum(e.end - e.start for e in entries.values())
    for shard in shards:  # over the limit only when one tensor alone is
        sizes = [e.end - e.start for e in entries.values() if e.file == shard]
        assert sum(sizes) <= 300_000 or len(sizes) == 1
    single = merge(tiny_llama3, llama3_adapter, tmp_path / "single", dtype="fp32")
    a = AutoModelForCausalLM.from_pretrained(out).state_dict()
    b = AutoModelForCausalLM.from_pretrained(single).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["internlm2", "llama3", "internlm"])
def test_generation_config_stops_at_the_templates_stop_token(family, tmp_path, lora_adapter_factory):
    from tianji_ft.models.tiny import FAMILIES, ensure_tiny_model
    from tokenizers import Tokenizer

    base = tmp_path / "base"
    shutil.copytree(ensure_tiny_model(family), base)
    eos = json.loads((base / "config.json").read_text())["eos_token_id"]
    (base / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))  # as a hub model ships
    adapter = lora_adapter_factory(base, tmp_path / "adapter", r=2)
    out = merge(base, adapter, tmp_path / "merged")
    stop = Tokenizer.from_file(str(base / "tokenizer.json")).token_to_id(FAMILIES[family]["stop"])
    got = json.loads((out / "generation_config.json").read_text())["eos_token_id"]
    got = got if isinstance(got, list) else [got]
    assert stop in got and eos in got


@pytest.mark.slow
def test_adapter_for_another_base_is_one_line_listing_shapes(tiny_llama3, llama3_adapter, tmp_path, capsys,
                                                             lora_adapter_factory):
    from tianji_ft.models.tiny import ensure_tiny_model

    other = ensure_tiny_model("internlm2")
    out = tmp_path / "merged"
    code = main(["merge", str(other), str(llama3_adapter), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "does not fit base" in err and "_proj.weight: not in base" in err and "and 11 more" in err
    wider = write_model(tiny_llama3, tmp_path / "wider", dtype="fp32")  # same names, one shape changed
    config = json.loads((wider / "config.json").read_text())
    adapter = lora_adapter_factory(tiny_llama3, tmp_path / "adapter_r2", r=2, target_modules=["q_proj"])
    from safetensors.torch import load_file, save_file

    weights = load_file(adapter / "adapter_model.safetensors")
    key = next(k for k in weights if "layers.1.self_attn.q_proj.lora_A" in k)
    weights[key] = weights[key][:, :64].contiguous()
    save_file(weights, adapter / "adapter_model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"q_proj\.weight: base \[128, 128\], adapter B@A \[128, 64\]"):
        merge(wider, adapter, out)
    assert config["hidden_size"] == 128 and not out.exists()


def test_a_full_disk_leaves_nothing_behind(tiny_llama3, llama3_adapter, tmp_path, monkeypatch):
    import errno

    from tianji_ft.weights import merge as merge_module

    real = merge_module.tensor_slices
    calls = []

    def fill_up(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(merge_module, "tensor_slices", fill_up)
    out = tmp_path / "out" / "merged"
    with pytest.raises(UserError, match="disk full") as err:
        merge(tiny_llama3, llama3_adapter, out, dtype="fp32")
    assert "\n" not in str(err.value)
    assert not out.exists() and list(out.parent.iterdir()) == []


@pytest.mark.slow
def test_a_write_that_fails_for_real_exits_with_one_line_and_no_output(tiny_llama3, llama3_adapter, tmp_path):
    import resource
    import signal

    def limit_file_size():  # writes past 200 kB fail with EFBIG, as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    out = tmp_path / "merged"
    proc = subprocess.run([sys.executable, "-m", "tianji_ft", "merge", str(tiny_llama3), str(llama3_adapter),
                           "-o", str(out), "--dtype", "fp32"], capture_output=True, text=True,
                          preexec_fn=limit_file_size, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "disk full" in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_merge_never_imports_torch(tiny_llama3, llama3_adapter, tmp_path):
    code = ("import sys; from tianji_ft.weights.merge import merge; "
            f"merge({str(tiny_llama3)!r}, {str(llama3_adapter)!r}, {str(tmp_path / 'm')!r}, dtype='bf16'); "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_a_hub_id_not_downloaded_says_how_to_get_it(llama3_adapter, tmp_path, capsys):
    code = main(["merge", "tianji-tests/no-such-model-7b", str(llama3_adapter), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "huggingface-cli download tianji-tests/no-such-model-7b" in err


def test_cli_merge_rejects_a_folder_without_adapter(tiny_llama3, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["merge", str(tiny_llama3), str(tmp_path / "empty"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "no adapter_config.json" in err and not (tmp_path / "out").exists()


def test_merge_takes_the_base_from_the_adapters_manifest_and_names_the_next_step(tiny_llama3, llama3_adapter,
                                                                                   tmp_path, capsys):
    import shutil

    adapter = tmp_path / "adapter"
    shutil.copytree(llama3_adapter, adapter)
    assert main(["merge", str(adapter), "-o", str(tmp_path / "no_manifest")]) == 2
    assert "no run manifest names its base model" in capsys.readouterr().err
    (adapter / "tianji_run.json").write_text(json.dumps({"model": str(tiny_llama3), "template": "llama3_chat"}))
    assert main(["merge", str(adapter), "-o", str(tmp_path / "merged"), "-q"]) == 0
    out = capsys.readouterr().out
    assert f"next: tianji-ft chat {tmp_path / 'merged'}" in out
    assert (tmp_path / "merged" / "config.json").is_file()
