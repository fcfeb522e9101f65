"""Per-GPU memory from config.json: DeepSpeed's own estimators, bitsandbytes' storage, peft's LoRA count.

The model shapes are real ones (InternLM2-7B, Llama-3-8B, InternLM-7B), kept in
model_shapes.json and written as config.json files; their parameter counts are
taken from transformers building the same shapes on the meta device, not from
the code under test.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
from pathlib import Path

import pytest

from tianji_ft.core.errors import UserError
from tianji_ft.train.memory import ModelShape, ZeroSetup, activations, lora_params, model_states, nf4_bytes, parse_size

GIB = 2**30
# Hand-written config.json shapes of real models (the hub repository each copies is in "_shape_of").
SHAPES = json.loads((Path(__file__).with_name("model_shapes.json")).read_text(encoding="utf-8"))
# (GPUs per node, nodes)
LAYOUTS = [(1, 1), (2, 1), (8, 1), (8, 2), (4, 4)]


def write_config(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(SHAPES[name]), encoding="utf-8")
    return folder


def meta_counts(name: str) -> tuple[int, int]:
    """(total parameters, DeepSpeed's largest layer) of the same shape built by transformers on the meta device.

    InternLM2's fused wqkv holds as many weights as LLaMA's q, k and v; InternLM
    (v1) is LLaMA with a bias on q, k, v and o (``attention_bias``).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    s = SHAPES[name]
    config = LlamaConfig(hidden_size=s["hidden_size"], num_hidden_layers=s["num_hidden_layers"],
                         intermediate_size=s["intermediate_size"], num_attention_heads=s["num_attention_heads"],
                         num_key_value_heads=s.get("num_key_value_heads", s["num_attention_heads"]),
                         vocab_size=s["vocab_size"], attention_bias=bool(s.get("bias")), tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    unique = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in unique.values())
    # deepspeed.runtime.zero.stage3.model_to_params, without data_ptr (0 for every meta tensor)
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return total, largest


def deepspeed_per_gpu(stage: int, total: int, largest: int, gpus: int, nodes: int) -> dict[tuple[bool, bool], float]:
    """{(offload_optimizer, offload_param): GiB per GPU} as DeepSpeed's *_all_cold estimator prints it."""
    if stage == 2:
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs_all_cold as estimate
        args = (total,)
    else:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs_all_cold as estimate
        args = (total, largest)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        estimate(*args, num_gpus_per_node=gpus, num_nodes=nodes)
    rows = {}
    for line in out.getvalue().splitlines():
        m = re.match(r"^\s*([\d.]+)GB \|\s*([\d.]+)GB \| (.*)$", line)
        if not m:
            continue
        opts = dict(kv.strip().split("=", 1) for kv in m.group(3).split(","))
        key = (opts["offload_optimizer"] != "none", opts.get("offload_param", "none") != "none")
        rows[key] = float(m.group(2))
    assert rows, out.getvalue()
    return rows


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_parameter_counts_from_config_json_equal_transformers(name, tmp_path):
    shape = ModelShape.from_file(write_config(tmp_path / name, name))
    total, largest = meta_counts(name)
    assert shape.total_params == total
    assert shape.largest_layer_params == largest


def test_known_parameter_counts():
    """The published sizes: Llama-3-8B 8,030,261,248; InternLM2-7B 7,737,708,544."""
    assert ModelShape.from_config(SHAPES["llama3-8b"]).total_params == 8_030_261_248
    assert ModelShape.from_config(SHAPES["internlm2-7b"]).total_params == 7_737_708_544


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("gpus,nodes", LAYOUTS)
def test_full_finetune_model_states_match_deepspeeds_estimators(name, gpus, nodes, tmp_path):
    pytest.importorskip("deepspeed")
    shape = ModelShape.from_file(write_config(tmp_path / name, name))
    total, largest = meta_counts(name)
    world = gpus * nodes
    cases = [(2, (False, False)), (2, (True, False)), (3, (False, False)), (3, (True, False)), (3, (True, True))]
    for stage, (offload_opt, offload_param) in cases:
        expected = deepspeed_per_gpu(stage, total, largest, gpus, nodes)[(offload_opt, offload_param)]
        zero = ZeroSetup(stage=stage, offload_optimizer=offload_opt, offload_param=offload_param)
        ours = model_states(shape, "full", zero, world)["total"] / GIB
        # DeepSpeed prints two decimals: compare within 5% (and 0.01 GiB of rounding)
        assert abs(ours - expected) <= 0.05 * expected + 0.01, (name, world, zero, ours, expected)


def test_model_states_follow_the_stage_and_offload_rules():
    shape = ModelShape.from_config(SHAPES["internlm2-7b"])
    p = shape.total_params
    z2 = model_states(shape, "full", ZeroSetup(stage=2), 8)
    assert z2["weights"] == 2 * p and z2["gradients"] == int(2 * p / 8 + 4 * p / 8)
    assert z2["optimizer_states"] == int(12 * p / 8)
    z1 = model_states(shape, "full", ZeroSetup(stage=1), 8)
    assert z1["gradients"] == int(2 * p + 4 * p / 8)  # stage 1 keeps the whole 16-bit gradient
    z3 = model_states(shape, "full", ZeroSetup(stage=3, offload_optimizer=True, offload_param=True), 8)
    assert z3["weights"] == z3["gradients"] == z3["optimizer_states"] == 0
    assert z3["gathered_layer"] == 4 * shape.largest_layer_params and z3["cpu_offload_per_gpu"] > 0
    plain = model_states(shape, "full", ZeroSetup(), 1, load_dtype_bytes=4)  # AmpOptimWrapper, fp32
    assert plain["total"] == 16 * p
    bf16 = model_states(shape, "full", ZeroSetup(), 1, load_dtype_bytes=2)
    assert bf16["total"] == 8 * p


# ---- QLoRA: bitsandbytes' 4-bit storage -------------------------------------------------------

def bnb_rule(n: int) -> int:
    """bitsandbytes nf4 with double quantization, written out: 4 bits a weight, one 8-bit absmax per
    64 weights, one fp32 absmax per 256 of those, one fp32 offset per tensor."""
    blocks = -(-n // 64)
    return -(-n // 2) + blocks + 4 * -(-blocks // 256) + 4


@pytest.mark.parametrize("rows,cols", [(64, 64), (300, 12295), (1, 63), (4096, 129)])
def test_the_rule_is_what_bitsandbytes_stores(rows, cols):
    torch = pytest.importorskip("torch")
    functional = pytest.importorskip("bitsandbytes.functional")
    weight = torch.randn(rows, cols, dtype=torch.float16)
    packed, state = functional.quantize_4bit(weight, blocksize=64, compress_statistics=True, quant_type="nf4")
    stored = sum(t.numel() * t.element_size() for t in (packed, state.absmax, state.state2.absmax, state.offset))
    assert stored == bnb_rule(weight.numel()) == nf4_bytes(weight.numel())


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_qlora_weights_are_4bit_linears_plus_16bit_rest(name, tmp_path):
    shape = ModelShape.from_file(write_config(tmp_path / name, name))
    s = SHAPES[name]
    h, i, layers = s["hidden_size"], s["intermediate_size"], s["num_hidden_layers"]
    kv = s.get("num_key_value_heads", s["num_attention_heads"]) * h // s["num_attention_heads"]
    # every linear in a decoder layer (q, k, v, o, gate, up, down; InternLM2 fuses q, k and v)
    sizes = [h * h, h * kv, h * kv, h * h, h * i, h * i, i * h]
    if name == "internlm2-7b":
        sizes = [h * (h + 2 * kv), h * h, h * i, h * i, i * h]
    quantized = layers * sum(bnb_rule(n) for n in sizes)
    total, _ = meta_counts(name)
    rest = total - layers * sum(sizes)  # embeddings, output head, norms, biases
    states = model_states(shape, "qlora", ZeroSetup(stage=2), 1, trainable=0)
    assert states["quantized_weights"] == quantized
    assert states["weights"] == quantized + 2 * rest  # DeepSpeed keeps the rest in 16 bits
    assert 2.9 < quantized / GIB < 3.9  # ~0.52 bytes per weight of a 7-8B model's 6-7B linear weights


# ---- LoRA: what XTuner adapts ------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("family", ["internlm2", "llama3", "internlm"])
def test_lora_parameters_equal_peft_on_xtuners_targets(family):
    """XTuner's find_all_linear_names + peft on the tiny model vs the count from its config.json alone."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from xtuner.model.utils import find_all_linear_names

    from tianji_ft.models.tiny import ensure_tiny_model

    folder = ensure_tiny_model(family)
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, torch_dtype=torch.float32)
    shape = ModelShape.from_file(folder)
    assert shape.total_params == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    targets = find_all_linear_names(model)
    peft_model = get_peft_model(model, LoraConfig(r=64, lora_alpha=16, target_modules=targets, task_type="CAUSAL_LM"))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert lora_params(shape.lora_linears(None), 64) == trainable
    assert ("output" in targets) == (family == "internlm2")  # XTuner adapts InternLM2's head too


# ---- activations ---------------------------------------------------------------------------

def test_activations_reduce_to_korthikanti_eq1_for_a_4h_gelu_mlp():
    """sbh(34 + 5as/h) per layer (arXiv:2205.05198 eq. 1), 2sbh per layer with full recomputation."""
    gpt = ModelShape(model_type="gpt", hidden_size=2048, num_layers=24, intermediate_size=4 * 2048, num_heads=16,
                     num_kv_heads=16, vocab_size=50257, head_dim=128, gated_mlp=False)
    s, b, h, a, L, v = 1024, 4, 2048, 16, 24, 50257
    acts = activations(gpt, b, s)
    per_layer = s * b * h * (34 + 5 * a * s / h)
    assert acts["per_layer"] == per_layer
    assert acts["without_checkpointing"] == L * per_layer + 6 * s * b * v
    assert acts["with_checkpointing"] == L * 2 * s * b * h + per_layer + 6 * s * b * v
    gated = activations(ModelShape.from_config(SHAPES["llama3-8b"]), 1, 2048)
    assert gated["per_layer"] == 2048 * (18 * 4096 + 8 * 14336) + 5 * 32 * 2048 * 2048


def test_lora_dropout_adds_its_inputs_and_masks():
    shape = ModelShape.from_config(SHAPES["internlm2-7b"])
    targets = shape.lora_linears(None)
    base = activations(shape, 1, 1024)
    with_lora = activations(shape, 1, 1024, lora=targets, r=64, lora_dropout=True)
    inputs = 4096 * 4 + 14336  # wqkv, wo, w1, w3 read h features; w2 reads the intermediate
    assert with_lora["lora_per_layer"] == 3 * 1024 * inputs + 2 * 1024 * 64 * 5
    assert with_lora["per_layer"] == base["per_layer"] + with_lora["lora_per_layer"]


def test_gpu_sizes():
    assert parse_size("80GB") == parse_size("80GiB") == parse_size("80") == 80 * GIB
    assert parse_size("81920MiB") == 80 * GIB and parse_size("24 gb") == 24 * GIB
    with pytest.raises(UserError, match="--gpu-memory"):
        parse_size("lots")


def test_a_config_without_a_shape_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(UserError, match="num_hidden_layers"):
        ModelShape.from_file(tmp_path)
    assert math.isclose(nf4_bytes(64, double_quant=False), 32 + 4)
