"""LoRA arithmetic: an adapter read as pairs, merged into its base a slice of a tensor at a time.

XTuner's merge loads the whole base model (in fp16, whatever its dtype) and
the adapter through PEFT. Here nothing is ever held whole: each tensor is
read from its file offset in slices of rows, merged as ``W + scale * B @ A``
in fp32, rounded once to the output dtype and written straight into a
pre-planned safetensors shard; tensors with no LoRA pair whose dtype does
not change are copied byte for byte by the kernel.

The work is done with numpy, not torch: importing torch alone takes over
0.6 GB of resident memory. numpy's fp32 matmul (OpenBLAS) and torch's (MKL)
both accumulate ``B @ A`` along the rank as one fused multiply-add chain per
element, so the result is bit-identical to PEFT's ``merge_and_unload`` in
fp32 (the tests and ``tools/bench_merge.py`` check it); fp32 -> bf16/fp16
rounding is round-to-nearest-even, as in torch.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from tianji_ft.core.errors import UserError
from tianji_ft.weights.safetensors_io import FLOAT_DTYPES, SLICE_BYTES, Entry, Scratch, from_f32, read_weights

ADAPTER_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_embedding_A|"
                         r"lora_embedding_B|lora_magnitude_vector)(?:\.[A-Za-z0-9_]+)??(?:\.weight)?$")



# --- the adapter ---------------------------------------------------------------------------------
@dataclass
class LoraPair:
    a: Entry
    b: Entry
    scale: float
    transpose: bool  # embeddings and fan_in_fan_out layers store W as (B @ A).T

    def delta_shape(self) -> tuple:
        shape = (self.b.shape[0], self.a.shape[1])
        return shape[::-1] if self.transpose else shape


@dataclass
class Adapter:
    path: Path
    config: dict
    pairs: dict[str, LoraPair]  # base tensor name -> its LoRA pair
    replaced: dict[str, Entry]  # base tensor name -> full replacement (modules_to_save, trained biases)


def _alpha_for(module: str, config: dict) -> float:
    for pattern, alpha in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?{pattern}$", module):
            return float(alpha)
    return float(config["lora_alpha"])


def load_adapter(adapter_dir: str | Path) -> Adapter:
    """Index an adapter saved by PEFT (or ``tianji-ft convert``) without loading its tensors."""
    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        raise UserError(f"{adapter_dir}: no adapter_config.json; pass the folder 'tianji-ft convert' wrote "
                        "for a LoRA run (a full fine-tune needs no merge)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("peft_type", "LORA") != "LORA":
        raise UserError(f"{adapter_dir}: peft_type {config.get('peft_type')} is not LoRA; only LoRA adapters merge")
    parts: dict[str, dict[str, Entry]] = {}
    replaced = {}
    for key, entry in read_weights(adapter_dir, prefix="adapter_model").items():
        match = ADAPTER_KEY.match(key)
        if match:
            parts.setdefault(match["module"], {})[match["part"]] = entry
        else:
            # modules_to_save copies, trained biases, and (save_embedding_layers) the embedding's base weights
            replaced[key.removeprefix("base_model.model.").replace(".base_layer.", ".")] = entry
    pairs = {}
    for module, found in parts.items():
        if config.get("use_dora") or "lora_magnitude_vector" in found:
            raise UserError(f"{adapter_dir}: DoRA adapters are not supported; merge with PEFT's merge_and_unload")
        embedding = "lora_embedding_A" in found
        a, b = (found.get("lora_embedding_A"), found.get("lora_embedding_B")) if embedding else \
            (found.get("lora_A"), found.get("lora_B"))
        if a is None or b is None:
            raise UserError(f"{adapter_dir}: {module} has only one of lora_A/lora_B; the adapter is incomplete")
        rank, alpha = a.shape[0], _alpha_for(module, config)
        scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        pairs[f"{module}.weight"] = LoraPair(a, b, scale, embedding or bool(config.get("fan_in_fan_out")))
    return Adapter(adapter_dir, config, pairs, replaced)


def check_fits(base: dict[str, Entry], adapter: Adapter, base_dir: Path) -> None:
    """Raise one line listing the tensors whose shapes differ, before anything is written."""
    problems = []
    wanted = [(n, p.delta_shape(), "adapter B@A") for n, p in adapter.pairs.items()]
    wanted += [(n, e.shape, "adapter") for n, e in adapter.replaced.items()]
    for name, shape, what in wanted:
        if name not in base:
            problems.append(f"{name}: not in base")
        elif tuple(base[name].shape) != tuple(shape):
            problems.append(f"{name}: base {list(base[name].shape)}, {what} {list(shape)}")
    if problems:
        trained_on = adapter.config.get("base_model_name_or_path") or "its base model"
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise UserError(f"{adapter.path} does not fit base {base_dir} ({len(problems)} tensor(s) differ): "
                        f"{'; '.join(problems[:3])}{more}; merge onto {trained_on}, the model it was trained on")


def tensor_slices(entry: Entry, out_dtype: str, pair: LoraPair | None = None):
    """The output bytes of ``entry`` (+ its LoRA delta), a slice of rows at a time.

    Each slice is written before the next is made, so the work arrays are reused.
    """
    import numpy as np

    if entry.dtype not in FLOAT_DTYPES and entry.dtype != out_dtype:
        raise UserError(f"{entry.file}: cannot convert {entry.dtype} tensor to {out_dtype}")
    rows, scratch = entry.rows(), Scratch()
    cols = math.prod(entry.shape[1:])
    step = max(1, SLICE_BYTES // max(1, cols * 4))
    if pair is not None:
        b, a = pair.b.read_f32(), pair.a.read_f32()
    for row0 in range(0, rows, step):
        row1 = min(rows, row0 + step)
        if pair is None and entry.dtype == out_dtype:
            yield entry.read_raw(row0, row1, scratch)
            continue
        weight = entry.read_f32(row0, row1, scratch).reshape(-1)
        if pair is not None:
            delta = scratch.get("delta", (row1 - row0) * cols, "float32").reshape(row1 - row0, cols)
            if pair.transpose:
                delta[...] = (b @ a[:, row0:row1]).T
            else:
                np.matmul(b[row0:row1], a, out=delta)
            # PEFT's order in fp32: delta * scaling, then W + delta; one rounding after.
            delta *= pair.scale
            delta += weight.reshape(delta.shape)
            weight = delta.reshape(-1)
        yield from_f32(weight, out_dtype, scratch)


def numpy_openblas() -> str | None:
    """The OpenBLAS library numpy itself loaded (scipy and others may map their own beside it)."""
    import os

    import numpy

    own = (os.path.dirname(numpy.__file__) + ".libs", os.path.join(os.path.dirname(numpy.__file__), ".libs"))
    paths = sorted({line.split()[-1] for line in open("/proc/self/maps") if "openblas" in line and ".so" in line})
    return next((p for p in paths if p.startswith(own)), paths[0] if paths else None)


@contextlib.contextmanager
def single_threaded_blas():
    """Run numpy's OpenBLAS on one thread meanwhile.

    Its worker threads spin between calls, and the rank-r products here are
    small and interleaved with single-threaded numpy work and file writes:
    on 2 cores the merge took 5.3 s with one thread and 10.9 s with two.
    """
    import ctypes

    import numpy  # noqa: F401  (loads OpenBLAS)

    lib = None
    with contextlib.suppress(OSError):
        path = numpy_openblas()
        lib = ctypes.CDLL(path) if path else None
    names = [("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
             ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
             ("openblas_get_num_threads", "openblas_set_num_threads")]
    funcs = next(((getattr(lib, g), getattr(lib, s)) for g, s in names
                  if lib is not None and hasattr(lib, g) and hasattr(lib, s)), None)
    if funcs is None:
        yield
        return
    before = funcs[0]()
    funcs[1](1)
    try:
        yield
    finally:
        funcs[1](before)
