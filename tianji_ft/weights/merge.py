"""Merge a LoRA adapter into its base model a slice of a tensor at a time.

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
import errno
import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from tianji_ft.core.manifest import MANIFEST_NAME, model_manifest, write_manifest
from tianji_ft.core.templates import trained_template
from tianji_ft.weights.modelfile import generation_config
from tianji_ft.core.errors import UserError
from tianji_ft.core.fsio import atomic_dir, write_json
from tianji_ft.core.outputs import Output, check_outputs
from tianji_ft.core.paths import local_model_dir

OUTPUT_DTYPES = {"bf16": "BF16", "fp16": "F16", "fp32": "F32", "auto": None}
TORCH_DTYPE_NAMES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
ITEM_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
              "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
SLICE_BYTES = 4 << 20  # fp32 bytes of one slice of rows: bounds the memory of any tensor's merge
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json")
ADAPTER_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_embedding_A|"
                         r"lora_embedding_B|lora_magnitude_vector)(?:\.[A-Za-z0-9_]+)??(?:\.weight)?$")


# --- tensors on disk ----------------------------------------------------------------------------
@dataclass
class Entry:
    """One stored tensor: a byte range of a safetensors file, or a ``.bin`` tensor (torch-loaded)."""

    file: Path
    dtype: str
    shape: tuple
    start: int = 0
    end: int = 0
    loaded: object = None  # the torch tensor, for .bin checkpoints

    @property
    def raw(self) -> bool:
        return self.loaded is None

    def rows(self):
        return self.shape[0] if self.shape else 1

    def read_raw(self, row0: int = 0, row1: int | None = None, scratch: Scratch | None = None):
        """Bytes of rows ``row0:row1`` as a uint8 array."""
        row1 = self.rows() if row1 is None else row1
        if not self.raw:
            import torch

            part = self.loaded[row0:row1] if self.shape else self.loaded
            return part.contiguous().view(torch.uint8).numpy().reshape(-1)
        size = math.prod(self.shape[1:]) * ITEM_SIZES[self.dtype]
        buf = (scratch or Scratch()).get("raw", (row1 - row0) * size, "uint8")
        with open(self.file, "rb") as fh:
            fh.seek(self.start + row0 * size)
            done = 0
            while done < len(buf):
                n = fh.readinto(memoryview(buf)[done:])
                if not n:
                    raise UserError(f"{self.file}: ends early (truncated download?); fetch the file again")
                done += n
        return buf

    def read_f32(self, row0: int = 0, row1: int | None = None, scratch: Scratch | None = None):
        raw = self.read_raw(row0, row1, scratch)
        return to_f32(raw, self.dtype, scratch and scratch.get("f32", raw.size // ITEM_SIZES[self.dtype],
                                                               "float32")).reshape(-1, *self.shape[1:])


class Scratch:
    """Work arrays reused from slice to slice: fresh ones would be faulted in page by page each time."""

    def __init__(self):
        self.arrays = {}

    def get(self, key: str, size: int, dtype: str):
        import numpy as np

        array = self.arrays.get(key)
        if array is None or array.size < size or array.dtype != dtype:
            array = self.arrays[key] = np.empty(size, dtype=dtype)
        return array[:size]


def to_f32(raw, dtype: str, out=None):
    import numpy as np

    if dtype == "BF16":  # bf16 is the top half of an fp32
        out = np.empty(raw.size // 2, dtype=np.uint32) if out is None else out.view(np.uint32)
        np.left_shift(raw.view(np.uint16), 16, out=out, dtype=np.uint32)
        return out.view(np.float32)
    values = raw.view({"F32": np.float32, "F16": np.float16, "F64": np.float64}[dtype])
    if out is None:
        return values.astype(np.float32)
    out[...] = values
    return out


def from_f32(values, dtype: str, scratch: Scratch | None = None):
    """fp32 -> ``dtype``, rounded to nearest even as torch rounds; ``values`` is used up."""
    import numpy as np

    scratch = scratch or Scratch()
    if dtype == "F32":
        return values
    if dtype != "BF16":
        out = scratch.get("out", values.size, {"F16": "float16", "F64": "float64"}[dtype])
        with np.errstate(over="ignore"):  # beyond fp16's range is inf, as in torch
            out[...] = values
        return out
    nans = np.isnan(values) if values.size and np.isnan(values.max()) else None
    bits = values.view(np.uint32)
    bias = np.right_shift(bits, 16, out=scratch.get("bias", bits.size, "uint32"))
    bias &= 1
    bias += 0x7FFF
    bits += bias
    bits >>= 16
    out = scratch.get("out", bits.size, "uint16")
    out[...] = bits
    if nans is not None:
        out[nans] = 0x7FC0
    return out


def read_safetensors_header(path: Path) -> dict[str, Entry]:
    try:
        with open(path, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
    except (ValueError, UnicodeDecodeError, MemoryError):
        raise UserError(f"{path}: not a safetensors file (bad header); fetch or write it again") from None
    header.pop("__metadata__", None)
    items = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    return {name: Entry(path, info["dtype"], tuple(info["shape"]), 8 + size + info["data_offsets"][0],
                        8 + size + info["data_offsets"][1]) for name, info in items}


def _bin_entries(path: Path) -> dict[str, Entry]:
    import torch

    names = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
             torch.bool: "BOOL"}
    state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    return {name: Entry(path, names[t.dtype], tuple(t.shape), loaded=t) for name, t in state.items()}


def read_weights(model_dir: str | Path, prefix: str = "model") -> dict[str, Entry]:
    """Every tensor of ``model_dir`` (safetensors, sharded or not, else .bin), in file order."""
    model_dir = Path(model_dir)
    bin_prefix = "pytorch_model" if prefix == "model" else prefix
    for name, reader in ((f"{prefix}.safetensors", read_safetensors_header), (f"{bin_prefix}.bin", _bin_entries)):
        index = model_dir / f"{name}.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            entries = {}
            for shard in sorted(set(weight_map.values())):
                entries.update(reader(model_dir / shard))
            return entries
        if (model_dir / name).is_file():
            return reader(model_dir / name)
    raise UserError(f"{model_dir}: no {prefix}.safetensors or {bin_prefix}.bin weights found")


@dataclass
class ShardPlan:
    file: str
    tensors: list  # (name, dtype, shape, nbytes), in write order

    @property
    def nbytes(self) -> int:
        return sum(t[3] for t in self.tensors)


def plan_shards(tensors: list[tuple[str, str, tuple]], max_bytes: int) -> list[ShardPlan]:
    """Split tensors, in order, into shards of at most ``max_bytes`` (a larger tensor gets its own)."""
    shards: list[list] = [[]]
    size = 0
    for name, dtype, shape in tensors:
        nbytes = math.prod(shape) * ITEM_SIZES[dtype]
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, dtype, tuple(shape), nbytes))
        size += nbytes
    n = len(shards)
    # Widest dtypes first, so every tensor starts aligned to its item size.
    return [ShardPlan("model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors",
                      sorted(s, key=lambda t: -ITEM_SIZES[t[1]])) for i, s in enumerate(shards)]


def _copy_range(src: Entry, out) -> None:
    out.flush()
    with open(src.file, "rb") as fh:
        offset, left = src.start, src.end - src.start
        while left:
            try:
                n = os.copy_file_range(fh.fileno(), out.fileno(), min(left, 1 << 30), offset)
            except OSError as err:
                # Another file system (EXDEV on many kernels) or no kernel support: copy through memory.
                if err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                n = _copy_through_memory(fh, out, offset, min(left, 1 << 24))
            if n == 0:
                raise UserError(f"{src.file}: ends early (truncated download?); fetch the file again")
            offset, left = offset + n, left - n


def _copy_through_memory(fh, out, offset: int, size: int) -> int:
    block = os.pread(fh.fileno(), size, offset)
    out.write(block)
    out.flush()
    return len(block)


def write_shards(out_dir: Path, plan: list[ShardPlan], produce) -> None:
    """Write the planned shards (and an index for more than one). ``produce(name, dtype)`` returns
    an :class:`Entry` to copy as stored, or an iterable of arrays whose bytes make the tensor."""
    weight_map = {}
    for shard in plan:
        header, offset = {}, 0
        for name, dtype, shape, nbytes in shard.tensors:
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            weight_map[name] = shard.file
        header["__metadata__"] = {"format": "pt"}
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        with open(out_dir / shard.file, "wb") as out:
            out.write(len(blob).to_bytes(8, "little") + blob)
            for name, dtype, shape, nbytes in shard.tensors:
                data = produce(name, dtype)
                if isinstance(data, Entry):
                    _copy_range(data, out)
                    continue
                written = 0
                for part in data:
                    written += out.write(memoryview(part).cast("B"))
                if written != nbytes:
                    raise AssertionError(f"{name}: wrote {written} bytes, planned {nbytes}")
    if len(plan) > 1:
        write_json(out_dir / "model.safetensors.index.json",
                   {"metadata": {"total_size": sum(s.nbytes for s in plan)}, "weight_map": weight_map})


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
        paths = {line.split()[-1] for line in open("/proc/self/maps") if "openblas" in line and ".so" in line}
        for path in paths:
            lib = ctypes.CDLL(path)
            break
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


# --- the merged model folder ---------------------------------------------------------------------
def parse_size(text: str | int) -> int:
    """'2GB', '500MB', '300MiB' or a byte count -> bytes (decimal units, as transformers reads them)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise UserError(f"size {text!r} not understood; write it like 2GB or 500MB")
    unit = (match.group(2) or "B").upper()
    power = "BKMGT".index(unit[0])
    return int(float(match.group(1)) * (1024 if "I" in unit else 1000) ** power)


def copy_tokenizer(src: Path, dst: Path) -> list[str]:
    """Copy the tokenizer files (and any remote tokenizer code) of ``src`` into ``dst``."""
    copied = []
    for path in sorted(Path(src).iterdir()):
        if path.is_file() and (path.name in TOKENIZER_FILES or path.name.startswith("tokenization_")):
            shutil.copy2(path, Path(dst) / path.name)
            copied.append(path.name)
    return copied


def _copy_model_files(base_dir: Path, dst: Path) -> None:
    # config, remote modeling code, tokenizer, README...: everything but weights.
    for path in sorted(base_dir.iterdir()):
        if not path.is_file() or path.name.endswith(WEIGHT_SUFFIXES) or path.name.endswith(".index.json"):
            continue
        if path.name in ("generation_config.json", MANIFEST_NAME) or path.name.startswith("."):
            continue
        shutil.copy2(path, dst / path.name)


MODEL_KIND = "model"


def write_model(base_dir: str | Path, out_dir: str | Path, adapter_dir: str | Path | None = None,
                dtype: str = "auto", max_shard_size: str | int = "2GB", template: str | None = None,
                overwrite: bool = False) -> Path:
    """Write ``base_dir`` (+ the merged adapter, if any) to ``out_dir`` in ``dtype`` as safetensors shards.

    ``template`` (XTuner's name) picks the stop tokens; by default the adapter's or base's manifest says.
    """
    base_dir, out_dir = local_model_dir(base_dir), Path(out_dir)
    if dtype not in OUTPUT_DTYPES:
        raise UserError(f"--dtype {dtype!r}: choose one of {', '.join(OUTPUT_DTYPES)}")
    if not (base_dir / "config.json").is_file():
        raise UserError(f"{base_dir}: no config.json; pass a Hugging Face model folder as BASE")
    check_outputs({"base model": base_dir, "adapter": adapter_dir}, [Output(out_dir, "-o", kind=MODEL_KIND)],
                  overwrite=overwrite)
    base = read_weights(base_dir)
    adapter = load_adapter(adapter_dir) if adapter_dir is not None else None
    if adapter is not None:
        check_fits(base, adapter, base_dir)
    target = OUTPUT_DTYPES[dtype]
    plan = plan_shards([(name, target if target and e.dtype in FLOAT_DTYPES else e.dtype, e.shape)
                        for name, e in base.items()], parse_size(max_shard_size))
    needed = sum(s.nbytes for s in plan)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out_dir.parent).free
    if needed > free:
        raise UserError(f"{out_dir.parent}: {needed / 1e9:.2f} GB needed for the model, "
                        f"{free / 1e9:.2f} GB free; free some space or write elsewhere with -o")

    def produce(name: str, out_dtype: str):
        source = adapter.replaced.get(name, base[name]) if adapter is not None else base[name]
        pair = adapter.pairs.get(name) if adapter is not None else None
        if pair is None and source.dtype == out_dtype and source.raw:
            return source  # unchanged: copied byte for byte
        return tensor_slices(source, out_dtype, pair)

    try:
        with atomic_dir(out_dir, MODEL_KIND, overwrite) as tmp:
            with single_threaded_blas():
                write_shards(tmp, plan, produce)
            _copy_model_files(base_dir, tmp)
            if adapter is not None:
                copy_tokenizer(adapter.path, tmp)
            config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
            if target is not None:
                config["torch_dtype"] = TORCH_DTYPE_NAMES[target]
            write_json(tmp / "config.json", config)
            template = template or trained_template(*(p for p in (adapter_dir, base_dir) if p is not None))
            write_json(tmp / "generation_config.json", generation_config(base_dir, tmp, template))
            manifest = model_manifest(adapter_dir if adapter_dir is not None else base_dir)
            if manifest or adapter_dir is not None:
                manifest = dict(manifest, template=manifest.get("template") or template)
                if adapter_dir is not None:
                    manifest["merged_from"] = {"base": str(base_dir.resolve()),
                                               "adapter": str(Path(adapter_dir).resolve()), "dtype": dtype}
                write_manifest(tmp, manifest)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise UserError(f"{out_dir}: disk full while writing ({err.strerror}); nothing was left behind; "
                            f"free {needed / 1e9:.1f} GB or more and retry") from None
        raise
    return out_dir


def merge(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path, dtype: str = "auto",
          max_shard_size: str | int = "2GB", overwrite: bool = False) -> Path:
    """Merge the LoRA adapter ``adapter_dir`` into ``base_dir``; write the model to ``out_dir``."""
    return write_model(base_dir, out_dir, adapter_dir, dtype=dtype, max_shard_size=max_shard_size,
                       overwrite=overwrite)
