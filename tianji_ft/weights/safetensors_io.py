"""Tensors on disk: safetensors headers and byte ranges read without loading, shards planned and written.

Nothing here holds a model whole: a tensor is an :class:`Entry` (file, dtype,
shape, byte range), converted to and from fp32 a slice at a time, and an
unchanged tensor is copied into its shard by the kernel (``copy_file_range``).
"""

from __future__ import annotations

import errno
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from tianji_ft.core.errors import UserError
from tianji_ft.core.fsio import write_json

OUTPUT_DTYPES = {"bf16": "BF16", "fp16": "F16", "fp32": "F32", "auto": None}
TORCH_DTYPE_NAMES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
ITEM_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
              "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")
SLICE_BYTES = 4 << 20  # fp32 bytes of one slice of rows: bounds the memory of any tensor's merge
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack")

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


def write_shards(out_dir: Path, plan: list[ShardPlan], produce, progress=None) -> None:
    """Write the planned shards (and an index for more than one). ``produce(name, dtype)`` returns
    an :class:`Entry` to copy as stored, or an iterable of arrays whose bytes make the tensor;
    ``progress`` (a :class:`tianji_ft.core.progress.Progress`) hears of each tensor's bytes."""
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
                else:
                    written = 0
                    for part in data:
                        written += out.write(memoryview(part).cast("B"))
                    if written != nbytes:
                        raise AssertionError(f"{name}: wrote {written} bytes, planned {nbytes}")
                if progress is not None:
                    progress.update(nbytes)
    if len(plan) > 1:
        write_json(out_dir / "model.safetensors.index.json",
                   {"metadata": {"total_size": sum(s.nbytes for s in plan)}, "weight_map": weight_map})
