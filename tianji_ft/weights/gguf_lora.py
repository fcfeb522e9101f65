"""A PEFT LoRA adapter -> a llama.cpp GGUF LoRA, as llama.cpp's ``convert_lora_to_gguf.py`` writes one.

Each LoRA pair becomes ``<gguf tensor name>.lora_a`` / ``.lora_b`` beside the
base tensor it changes, with ``general.type = adapter`` and ``adapter.type =
lora``. The base GGUF changes the rows of q and k (llama.cpp's rotary layout)
and splits InternLM2's fused ``wqkv``; ``lora_b`` maps into those same rows,
so its rows are split and permuted the same way, while ``lora_a`` (shared by
q, k and v of a fused layer) is written as it is. The adapter's scale (alpha
over rank, rsLoRA, ``alpha_pattern``) is folded into ``lora_b`` and
``adapter.lora.alpha`` is the rank, so llama.cpp's ``alpha / rank`` is 1.
A base model plus a 20 MB adapter then behaves as the merged model.
"""

from __future__ import annotations

import json
from pathlib import Path

from tianji_ft.core.errors import UserError
from tianji_ft.weights.gguf import ARCHITECTURES, _permute_rows, _write_tensor_slices
from tianji_ft.weights.lora import load_adapter
from tianji_ft.weights.safetensors_io import to_f32


def _values(entry):
    return to_f32(entry.read_raw(0, entry.rows()), entry.dtype).reshape(entry.shape)


def _lora_tensors(adapter, config: dict, arch: str) -> list[tuple[str, object]]:
    """(HF tensor name + .lora_a/.lora_b, float32 values) with the base GGUF's row changes applied to B."""
    import numpy as np

    n_head = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_head
    head_dim = config["hidden_size"] // n_head
    out = []
    for name, pair in sorted(adapter.pairs.items()):
        if pair.transpose:
            raise UserError(f"{adapter.path}: {name} is an embedding or fan_in_fan_out LoRA, which llama.cpp's "
                            "GGUF LoRA cannot carry; merge the adapter (tianji-ft merge) and export the model")
        a, b = _values(pair.a), _values(pair.b) * np.float32(pair.scale)
        if arch == "internlm2" and name.endswith(".attention.wqkv.weight"):
            grouped = b.reshape(n_kv, n_head // n_kv + 2, head_dim, -1)
            prefix = name[: -len("wqkv.weight")]
            parts = {"wq": _permute_rows(grouped[:, :-2].reshape(n_head * head_dim, -1), n_head),
                     "wk": _permute_rows(grouped[:, -2].reshape(n_kv * head_dim, -1), n_kv),
                     "wv": grouped[:, -1].reshape(n_kv * head_dim, -1)}
            for part, part_b in parts.items():
                out += [(f"{prefix}{part}.weight.lora_a", a), (f"{prefix}{part}.weight.lora_b", part_b)]
            continue
        if ".q_proj." in name:
            b = _permute_rows(b, n_head)
        elif ".k_proj." in name:
            b = _permute_rows(b, n_kv)
        out += [(f"{name}.lora_a", a), (f"{name}.lora_b", b)]
    return out


def write_lora_gguf(adapter_dir: str | Path, base_dir: str | Path, path: str | Path, name: str | None = None,
                    dtype: str = "f16") -> Path:
    """Write the LoRA adapter in ``adapter_dir`` (trained on ``base_dir``) as a GGUF LoRA at ``path``."""
    import gguf
    import numpy as np

    adapter_dir, base_dir, path = Path(adapter_dir), Path(base_dir), Path(path)
    config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    arch = ARCHITECTURES[(config.get("architectures") or ["?"])[0]]
    adapter = load_adapter(adapter_dir)
    if adapter.replaced:
        whole = ", ".join(sorted(adapter.replaced)[:3])
        raise UserError(f"{adapter_dir}: the adapter replaces whole tensors ({whole}), which a GGUF LoRA cannot "
                        "carry; merge it (tianji-ft merge) and export the model")
    ranks = {pair.a.shape[0] for pair in adapter.pairs.values()}
    if len(ranks) != 1:
        raise UserError(f"{adapter_dir}: LoRA ranks differ across layers ({sorted(ranks)}); llama.cpp's GGUF LoRA "
                        "has one alpha for all; merge the adapter and export the model")
    gguf_arch = {"llama": gguf.MODEL_ARCH.LLAMA, "internlm2": gguf.MODEL_ARCH.INTERNLM2}[arch]
    names = gguf.get_tensor_name_map(gguf_arch, config["num_hidden_layers"])
    qtype = {"f16": gguf.GGMLQuantizationType.F16, "f32": gguf.GGMLQuantizationType.F32}[dtype]
    tensors = []
    for hf_name, values in _lora_tensors(adapter, config, arch):
        base_name, part = hf_name.rsplit(".", 1)
        hf_base = base_name.removeprefix("base_model.model.")
        new_name = names.get_name(hf_base, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise UserError(f"{adapter_dir}: {hf_base} has no GGUF name for an {arch} model")
        tensors.append((f"{new_name}.{part}", values))

    writer = gguf.GGUFWriter(path, arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(name or adapter_dir.name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(ranks.pop()))
    for new_name, values in tensors:
        nbytes = values.size * (2 if dtype == "f16" else 4)
        writer.add_tensor_info(new_name, values.shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, values in tensors:
        _write_tensor_slices(writer, [gguf.quants.quantize(np.ascontiguousarray(values), qtype)])
    writer.close()
    return path
