"""Per-GPU memory of a fine-tuning run, from the model's ``config.json`` alone (no weights, no torch).

Everything here is arithmetic on shapes, so a 70B config plans in milliseconds.
The rules and where they come from:

Model states (bytes per GPU; P parameters, T of them trainable, N = GPUs in all):

- With DeepSpeed (any ZeRO stage), DeepSpeed casts the module to 16 bits
  (2 bytes per weight) and keeps, per trainable parameter, gradients and
  optimizer states as its estimators count them. ZeRO-1/2
  (``estimate_zero2_model_states_mem_needs``, deepspeed/runtime/zero/stage_1_and_2.py:
  ``2 = params_16bit, 18 = 2_grads_16bit + 4_grads_32bit + 4_params_32bit +
  8_optimizer_states_32bit``): the fp32 gradient, fp32 master weight and the
  two AdamW moments are split over N from stage 1, the 16-bit gradient from
  stage 2. ZeRO-3 (``estimate_zero3_model_states_mem_needs``,
  deepspeed/runtime/zero/stage3.py): ``18 / N`` in all, 2 for the 16-bit weight
  partition and 16 for the fp32 gradient, master weight and moments (its
  offload figures split them so: 2 stay with ``offload_optimizer``, 18 move
  with both), plus the largest layer gathered whole, ``4 * largest_layer_params``.
  ``offload_optimizer`` moves gradients and optimizer states to CPU,
  ``offload_param`` (stage 3) the weights too. For full fine-tuning this is
  DeepSpeed's own estimate (tests/train/test_memory.py compares them).
- Without DeepSpeed (mmengine's AmpOptimWrapper: autocast, no master copy),
  weights, gradients and both AdamW moments are in the parameters' dtype:
  the config's ``torch_dtype`` (fp32 when unset) for full fine-tuning; fp32
  for LoRA and QLoRA, since XTuner's LoRA path calls peft's
  ``prepare_model_for_kbit_training``, which casts every fp16/bf16 parameter
  that is not 4-bit to fp32.
- QLoRA: each quantized linear weight of n elements takes bitsandbytes' nf4
  storage: n/2 bytes of 4-bit codes plus one absmax per block of 64; with
  double quantization the absmax are stored in 8 bits, with a second-level
  fp32 absmax per 256 blocks and one fp32 offset per tensor
  (``bitsandbytes.functional.quantize_4bit``). Embeddings, the output head,
  norms and biases stay unquantized (transformers keeps the output head out
  via ``get_keys_to_not_convert``).
- LoRA targets: what XTuner picks when the config names none
  (``xtuner.model.utils.find_all_linear_names``): every ``nn.Linear`` but
  ``lm_head``/``output_layer``; InternLM2's head is called ``output``, so it
  gets an adapter too. Each adapted linear (in, out) adds r * (in + out).

Activations (bytes per GPU, 16-bit; s = max_length, b = batch per GPU,
h = hidden, a = heads, L = layers, V = vocabulary, I = intermediate size):
Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models" (arXiv:2205.05198), eq. (1): per layer ``s*b*h*(34 + 5*a*s/h)``
for a 4h GeLU MLP. Its MLP share (2sbh input, 8sbh GeLU input, 8sbh GeLU
output, sbh dropout mask) is written here for the model's MLP: a gated (SwiGLU)
MLP of width I keeps four I-wide tensors (gate, up, activation, product), so a
layer is ``s*b*(18*h + 8*I) + 5*a*s*s*b``; for a 4h GeLU MLP the same code gives
eq. (1) exactly. The ``5*a*s*s*b`` term is the attention scores (softmax output,
dropout mask and output) of eager attention; flash-attention and SDPA do not
store them, so the figure is an upper bound there (``attention_scores`` says how
much). LoRA with dropout adds, per adapted linear, its dropped-out input (2
bytes) and mask (1 byte) per input feature, and the r-wide product (2 bytes).
The output layer keeps 16-bit logits and the fp32 copy the loss is computed on:
``6*s*b*V`` (the paper's cross-entropy term is the ``4*s*b*V`` of it).
Gradient checkpointing (XTuner's default) keeps each layer's input, ``2*s*b*h``
per layer (the paper's full recomputation figure), plus one layer's
activations while it is recomputed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from tianji_ft.core.errors import UserError

GIB = 1 << 30
DTYPE_BYTES = {"float32": 4, "float": 4, "fp32": 4, "float16": 2, "half": 2, "fp16": 2, "bfloat16": 2, "bf16": 2,
               "float64": 8}
# bitsandbytes' 4-bit layout (quantize_4bit): 64 weights per absmax; double quantization
# groups 256 absmax under one fp32 absmax.
NF4_BLOCKSIZE = 64
NESTED_BLOCKSIZE = 256
# find_all_linear_names leaves these out (XTuner 0.2.0).
LORA_EXCLUDED = ("lm_head", "output_layer")


@dataclass(frozen=True)
class Linear:
    name: str
    in_features: int
    out_features: int
    bias: bool = False

    @property
    def weights(self) -> int:
        return self.in_features * self.out_features

    @property
    def params(self) -> int:
        return self.weights + (self.out_features if self.bias else 0)


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only transformer as its ``config.json`` describes it."""

    model_type: str
    hidden_size: int
    num_layers: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    head_dim: int
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # bias on q, k, v and o (InternLM, InternLM2 "bias")
    qkv_bias: bool = False  # bias on q, k, v only (Qwen2)
    mlp_bias: bool = False
    gated_mlp: bool = True
    max_position_embeddings: int | None = None
    source: str = ""

    @classmethod
    def from_config(cls, cfg: dict, source: str = "") -> "ModelShape":
        """The shape of a LLaMA-style decoder (LLaMA, InternLM, InternLM2, Mistral, Qwen2) from its config dict."""
        missing = [k for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
                               "vocab_size") if not isinstance(cfg.get(k), int)]
        if missing:
            raise UserError(f"{source or 'config.json'}: no {', '.join(missing)}; the plan needs a decoder's shape "
                            "(hidden_size, num_hidden_layers, intermediate_size, num_attention_heads, vocab_size)")
        model_type = str(cfg.get("model_type") or "")
        heads = cfg["num_attention_heads"]
        # InternLM (v1) and InternLM2 name their bias switch "bias"; both configs default it to True.
        bias_default = model_type in ("internlm", "internlm2")
        return cls(
            model_type=model_type,
            hidden_size=cfg["hidden_size"],
            num_layers=cfg["num_hidden_layers"],
            intermediate_size=cfg["intermediate_size"],
            num_heads=heads,
            num_kv_heads=cfg.get("num_key_value_heads") or heads,
            vocab_size=cfg["vocab_size"],
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            attention_bias=bool(cfg.get("bias", bias_default) if model_type in ("internlm", "internlm2")
                                else cfg.get("attention_bias", False)),
            qkv_bias=model_type == "qwen2",
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            max_position_embeddings=cfg.get("max_position_embeddings"),
            source=source,
        )

    @classmethod
    def from_file(cls, path: str | Path) -> "ModelShape":
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{path}: no such file; the plan reads the model's shape from its config.json") from None
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        # Multimodal and nested configs keep the language model under text_config / llm_config.
        for key in ("text_config", "llm_config"):
            if isinstance(cfg.get(key), dict) and "hidden_size" not in cfg:
                cfg = cfg[key]
        return cls.from_config(cfg, str(path))

    # --- parameters ------------------------------------------------------------------
    @property
    def head_name(self) -> str:
        return "output" if self.model_type == "internlm2" else "lm_head"

    def layer_linears(self) -> list[Linear]:
        """The linear layers of one decoder layer, named as the model's own code names them."""
        h, i, hd = self.hidden_size, self.intermediate_size, self.head_dim
        q, kv = self.num_heads * hd, self.num_kv_heads * hd
        bias = self.attention_bias
        if self.model_type == "internlm2":
            return [Linear("wqkv", h, q + 2 * kv, bias), Linear("wo", q, h, bias),
                    Linear("w1", h, i, self.mlp_bias), Linear("w3", h, i, self.mlp_bias),
                    Linear("w2", i, h, self.mlp_bias)]
        qkv_bias = bias or self.qkv_bias
        mlp = ([Linear("gate_proj", h, i, self.mlp_bias), Linear("up_proj", h, i, self.mlp_bias)] if self.gated_mlp
               else [Linear("up_proj", h, i, self.mlp_bias)])
        return [Linear("q_proj", h, q, qkv_bias), Linear("k_proj", h, kv, qkv_bias), Linear("v_proj", h, kv, qkv_bias),
                Linear("o_proj", q, h, bias), *mlp, Linear("down_proj", i, h, self.mlp_bias)]

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def norm_params(self) -> int:
        """RMSNorm weights: two per layer and the final one."""
        return (2 * self.num_layers + 1) * self.hidden_size

    @property
    def total_params(self) -> int:
        per_layer = sum(lin.params for lin in self.layer_linears())
        return self.num_layers * per_layer + self.embedding_params + self.head_params + self.norm_params

    @property
    def largest_layer_params(self) -> int:
        """The most parameters one module holds itself (DeepSpeed's ``model_to_params``): usually the embedding."""
        return max([self.embedding_params, *(lin.params for lin in self.layer_linears())])

    def quantized_linears(self) -> list[Linear]:
        """The linears bitsandbytes quantizes: every one inside the decoder layers (not the output head)."""
        return self.layer_linears() * self.num_layers

    def lora_linears(self, target_modules=None) -> list[Linear]:
        """The linears a LoRA adapts: ``target_modules`` by name, or XTuner's choice when None."""
        layer = self.layer_linears() * self.num_layers
        candidates = layer + [Linear(self.head_name, self.hidden_size, self.vocab_size)]
        if target_modules is None:
            return [lin for lin in candidates if lin.name not in LORA_EXCLUDED]
        names = {target_modules} if isinstance(target_modules, str) else set(target_modules)
        if names == {"all-linear"}:  # peft's shorthand: every linear but the output head
            return layer
        return [lin for lin in candidates if lin.name in names]


def lora_params(linears: list[Linear], r: int) -> int:
    return sum(r * (lin.in_features + lin.out_features) for lin in linears)


def nf4_bytes(n: int, double_quant: bool = True) -> int:
    """Bytes bitsandbytes stores for an n-element weight in 4 bits (nf4 or fp4, blocksize 64)."""
    blocks = math.ceil(n / NF4_BLOCKSIZE)
    codes = (n + 1) // 2
    if not double_quant:
        return codes + 4 * blocks
    return codes + blocks + 4 * math.ceil(blocks / NESTED_BLOCKSIZE) + 4


# ------------------------------------------------------------------ model states

@dataclass(frozen=True)
class ZeroSetup:
    """DeepSpeed as a run uses it: ``stage`` None when DeepSpeed is off."""

    stage: int | None = None
    offload_optimizer: bool = False
    offload_param: bool = False

    @property
    def name(self) -> str:
        if self.stage is None:
            return "DeepSpeed off"
        offload = [w for w, on in (("optimizer", self.offload_optimizer), ("parameters", self.offload_param)) if on]
        return f"DeepSpeed ZeRO-{self.stage}" + (f" (offload {' and '.join(offload)} to CPU)" if offload else "")

    @classmethod
    def from_json(cls, path: str | Path | None) -> "ZeroSetup":
        if not path:
            return cls()
        try:
            cfg = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"DeepSpeed config {path}: {err}") from None
        zero = cfg.get("zero_optimization") or {}

        def offloaded(key: str) -> bool:
            return str((zero.get(key) or {}).get("device", "none")).lower() not in ("none", "")

        return cls(stage=int(zero.get("stage", 0)), offload_optimizer=offloaded("offload_optimizer"),
                   offload_param=offloaded("offload_param"))


def model_states(shape: ModelShape, method: str, zero: ZeroSetup, world_size: int, *, trainable: int = 0,
                 load_dtype_bytes: int = 4, double_quant: bool = True) -> dict:
    """Per-GPU bytes of weights, trainable (LoRA) parameters, gradients and optimizer states.

    ``method``: "full", "lora" or "qlora"; ``trainable``: the LoRA parameters
    (ignored for "full"). See the module docstring for the rules.
    """
    n = max(1, int(world_size))
    total = shape.total_params
    t = total if method == "full" else int(trainable)
    ds = zero.stage is not None
    stage = zero.stage or 0

    def split(value: float, from_stage: int) -> float:
        return value / n if ds and stage >= from_stage else value

    quantized = other = 0
    if method == "qlora":
        linears = shape.quantized_linears()
        quantized = sum(nf4_bytes(lin.weights, double_quant) for lin in linears)
        other = total - sum(lin.weights for lin in linears)
    elif method != "full":
        other = total
    if ds:
        param_bytes = 2
        frozen_bytes = 2
    else:
        param_bytes = load_dtype_bytes if method == "full" else 4
        frozen_bytes = 4  # prepare_model_for_kbit_training's fp32 cast
    on_gpu_params = not (ds and stage >= 3 and zero.offload_param)
    if method == "full":
        weights = split(param_bytes * total, 3) if on_gpu_params else 0
        adapters = 0.0
    else:
        weights = quantized + (split(frozen_bytes * other, 3) if on_gpu_params else 0)
        adapters = split(param_bytes * t, 3) if on_gpu_params else 0
    offload_opt = ds and zero.offload_optimizer and stage >= 1
    if ds:
        # DeepSpeed's accounting: stages 1-2 keep 16-bit gradients (split from stage 2) and an
        # fp32 gradient partition; ZeRO-3's estimate counts the fp32 partition alone.
        grads16 = 0 if stage >= 3 else split(2 * t, 2)
        gradients = 0 if offload_opt else grads16 + split(4 * t, 1)
        optimizer = 0 if offload_opt else split(12 * t, 1)
    else:
        gradients = param_bytes * t
        optimizer = 2 * param_bytes * t
    gathered = 4 * shape.largest_layer_params if ds and stage >= 3 else 0
    cpu = 0.0
    if offload_opt:
        cpu += grads16 + 16 * t / n
    if ds and stage >= 3 and zero.offload_param:
        cpu += 2 * (total if method == "full" else other + t) / n
    result = {
        "weights": int(weights),
        "quantized_weights": int(quantized),
        "lora_parameters": int(adapters),
        "gradients": int(gradients),
        "optimizer_states": int(optimizer),
        "gathered_layer": int(gathered),
        "cpu_offload_per_gpu": int(cpu),
    }
    result["total"] = sum(v for k, v in result.items() if k not in ("quantized_weights", "cpu_offload_per_gpu"))
    return result


# ------------------------------------------------------------------ activations

def activations(shape: ModelShape, batch_size: int, seq_len: int, *, lora: list[Linear] | None = None, r: int = 0,
                lora_dropout: bool = False) -> dict:
    """Per-GPU activation bytes for one micro-batch, with and without gradient checkpointing."""
    s, b, h = int(seq_len), int(batch_size), shape.hidden_size
    per_i = 8 if shape.gated_mlp else 4
    scores = 5 * shape.num_heads * s * s * b
    layer = s * b * (18 * h + per_i * shape.intermediate_size) + scores
    lora_layer = 0
    if lora:
        per_layer = [lin for lin in lora if lin.name != shape.head_name]
        n_layer = len(per_layer) / max(1, shape.num_layers)
        inputs = sum(lin.in_features for lin in per_layer) / max(1, shape.num_layers)
        lora_layer = int((3 * s * b * inputs if lora_dropout else 0) + 2 * s * b * r * n_layer)
    layer += lora_layer
    output = 6 * s * b * shape.vocab_size
    return {
        "per_layer": int(layer),
        "attention_scores_per_layer": int(scores),
        "lora_per_layer": int(lora_layer),
        "output_logits": int(output),
        "without_checkpointing": int(shape.num_layers * layer + output),
        "with_checkpointing": int(shape.num_layers * 2 * s * b * h + layer + output),
    }


# ------------------------------------------------------------------ sizes

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``80GB``, ``80G``, ``80GiB``, ``81920MiB`` or ``80`` (GiB) as bytes.

    GB and GiB both mean 2**30 bytes: GPU memory is quoted that way (an
    "80GB" card has 80 GiB).
    """
    m = _SIZE.match(str(text))
    if not m:
        raise UserError(f"--gpu-memory {text!r}: expected a size such as 80GB, 24GiB or 81920MiB")
    value, unit = float(m.group(1)), (m.group(2) or "g").lower()
    power = {"b": 0, "k": 1, "m": 2, "g": 3, "t": 4}[unit[0]]
    return int(value * (1 << (10 * power)))


def gib(n: float | None) -> str:
    """Bytes for people: GiB, or MiB below a tenth of one."""
    if n is None:
        return "?"
    return f"{n / GIB:.2f} GiB" if n >= GIB / 10 or n == 0 else f"{n / (1 << 20):.1f} MiB"


def count(n: int) -> str:
    """A parameter count for people: 7.74B, 151.0M, 12.3K."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:.{2 if unit == 'B' else 1}f}{unit}"
    return str(n)
