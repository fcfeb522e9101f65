"""Merge a LoRA adapter into its base model one tensor at a time.

XTuner's merge loads the whole base model (in fp16, whatever its dtype) and
the adapter through PEFT, so it needs about twice the model size in RAM. Here
the base shards are never loaded whole: every tensor is read from its file
offset, merged as ``W + scale * B @ A`` in fp32, rounded once to the output
dtype and written straight into a pre-planned safetensors shard; tensors
without a LoRA pair whose dtype does not change are copied byte for byte.
Peak memory is the largest single tensor (in fp32) plus the interpreter.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from tianji_ft.launch.modelfile import model_manifest, stop_words, template_name
from tianji_ft.utils.errors import UserError
from tianji_ft.utils.fsio import atomic_dir, write_json

OUTPUT_DTYPES = {"bf16": "BF16", "fp16": "F16", "fp32": "F32", "auto": None}
TORCH_DTYPE_NAMES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json")
ADAPTER_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_embedding_A|"
                         r"lora_embedding_B|lora_magnitude_vector)(?:\.[A-Za-z0-9_]+)??(?:\.weight)?$")

# --- safetensors, read and written one tensor at a time ------------------------------------
# safe_open memory-maps a whole shard, and every page it touches counts in
# the process's resident set until the shard is closed; reading each tensor
# from its offset with plain reads keeps only that tensor in memory.
ITEM_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
              "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
CHUNK = 64 << 20


def torch_dtype(name: str):
    import torch

    return {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
            "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
            "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}[name]


@dataclass
class Entry:
    """One stored tensor: a byte range of a safetensors file, or a lazily loaded ``.bin`` tensor."""

    file: Path
    dtype: str
    shape: tuple
    start: int = 0
    end: int = 0
    loaded: object = None  # the tensor itself, for .bin checkpoints (memory-mapped by torch.load)

    @property
    def raw(self) -> bool:
        return self.loaded is None

    def read(self):
        if not self.raw:
            return self.loaded
        import torch

        buf = torch.empty(self.end - self.start, dtype=torch.uint8)
        view = memoryview(buf.numpy())
        with open(self.file, "rb") as fh:
            fh.seek(self.start)
            done = 0
            while done < len(view):
                n = fh.readinto(view[done:done + CHUNK])
                if not n:
                    raise UserError(f"{self.file}: ends early (truncated download?); fetch the file again")
                done += n
        return buf.view(torch_dtype(self.dtype)).reshape(self.shape)


def read_safetensors_header(path: Path) -> dict[str, Entry]:
    try:
        with open(path, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{path}: not a safetensors file (bad header); fetch or write it again") from None
    header.pop("__metadata__", None)
    items = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    return {name: Entry(path, info["dtype"], tuple(info["shape"]), 8 + size + info["data_offsets"][0],
                        8 + size + info["data_offsets"][1]) for name, info in items}


def _bin_entries(path: Path) -> dict[str, Entry]:
    import torch

    names = {v: k for k, v in ((n, torch_dtype(n)) for n in ITEM_SIZES)}
    state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    return {name: Entry(path, names[t.dtype], tuple(t.shape), loaded=t) for name, t in state.items()}


def read_weights(model_dir: Path, prefix: str) -> dict[str, Entry]:
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
            n = os.copy_file_range(fh.fileno(), out.fileno(), min(left, 1 << 30), offset)
            if n == 0:
                raise UserError(f"{src.file}: ends early (truncated download?); fetch the file again")
            offset += n
            left -= n


def write_shards(out_dir: Path, plan: list[ShardPlan], produce) -> None:
    """Write the planned shards (and the index for more than one); ``produce(name, dtype)``
    returns the tensor, or an :class:`Entry` to copy as it is stored."""
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
                data = data.contiguous()
                assert tuple(data.shape) == shape and data.numel() * data.element_size() == nbytes, name
                if nbytes:
                    import torch

                    out.write(memoryview(data.reshape(-1).view(torch.uint8).numpy()))
    if len(plan) > 1:
        write_json(out_dir / "model.safetensors.index.json",
                   {"metadata": {"total_size": sum(s.nbytes for s in plan)}, "weight_map": weight_map})


@dataclass
class LoraPair:
    a: Entry
    b: Entry
    scale: float
    transpose: bool  # embeddings and fan_in_fan_out layers store W transposed to B @ A


@dataclass
class Adapter:
    path: Path
    config: dict
    pairs: dict[str, LoraPair]        # base tensor name -> its LoRA pair
    replaced: dict[str, Entry]    # base tensor name -> full replacement (modules_to_save, biases)


def parse_size(text: str) -> int:
    """'2GB', '500MB', '300MiB' or a byte count -> bytes (decimal units, as transformers reads them)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*", str(text), re.IGNORECASE)
    if not match:
        raise UserError(f"size {text!r} not understood; write it like 2GB or 500MB")
    unit = (match.group(2) or "B").upper()
    base = 1024 if "I" in unit else 1000
    power = "BKMGT".index(unit[0]) if unit[0] != "B" else 0
    return int(float(match.group(1)) * base ** power)


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
    if config.get("use_dora"):
        raise UserError(f"{adapter_dir}: DoRA adapters are not supported; merge with PEFT's merge_and_unload")
    entries = read_weights(adapter_dir, prefix="adapter_model")
    parts: dict[str, dict[str, Entry]] = {}
    replaced = {}
    for key, entry in entries.items():
        match = ADAPTER_KEY.match(key)
        if match:
            parts.setdefault(match["module"], {})[match["part"]] = entry
        else:
            replaced[key.removeprefix("base_model.model.")] = entry
    pairs = {}
    for module, found in parts.items():
        if "lora_magnitude_vector" in found:
            raise UserError(f"{adapter_dir}: DoRA adapters are not supported; merge with PEFT's merge_and_unload")
        embedding = "lora_embedding_A" in found
        a, b = (found.get("lora_embedding_A"), found.get("lora_embedding_B")) if embedding else \
            (found.get("lora_A"), found.get("lora_B"))
        if a is None or b is None:
            raise UserError(f"{adapter_dir}: {module} has only one of lora_A/lora_B; the adapter is incomplete")
        rank = a.shape[0]
        alpha = _alpha_for(module, config)
        scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        pairs[f"{module}.weight"] = LoraPair(a, b, scale, embedding or bool(config.get("fan_in_fan_out")))
    return Adapter(adapter_dir, config, pairs, replaced)


def _check_matches(base: dict[str, Entry], adapter: Adapter, base_dir: Path) -> None:
    problems = []
    for name, pair in adapter.pairs.items():
        delta = (pair.b.shape[0], pair.a.shape[1])
        delta = delta[::-1] if pair.transpose else delta
        if name not in base:
            problems.append(f"{name}: not in base")
        elif tuple(base[name].shape) != delta:
            problems.append(f"{name}: base {list(base[name].shape)}, adapter B@A {list(delta)}")
    for name, entry in adapter.replaced.items():
        if name not in base:
            problems.append(f"{name}: not in base")
        elif base[name].shape != entry.shape:
            problems.append(f"{name}: base {list(base[name].shape)}, adapter {list(entry.shape)}")
    if problems:
        trained_on = adapter.config.get("base_model_name_or_path") or "its base model"
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise UserError(f"{adapter.path} does not fit base {base_dir} ({len(problems)} tensor(s)): "
                        f"{'; '.join(problems[:3])}{more}; merge onto {trained_on}, the model it was trained on")


def _merged_tensor(entry: Entry, pair: LoraPair | None, out_dtype: str):
    import torch

    weight = entry.read()
    if pair is None:
        return weight.to(torch_dtype(out_dtype))
    b = pair.b.read().to(torch.float32)
    a = pair.a.read().to(torch.float32)
    delta = b @ a
    if pair.transpose:
        delta = delta.T
    # Same operation order as PEFT's merge in fp32 (delta * scaling, then
    # W + delta), so the result is bit-identical before the one rounding.
    merged = weight.to(torch.float32) + delta * pair.scale
    return merged.to(torch_dtype(out_dtype))


def _output_dtype(entry: Entry, dtype: str | None) -> str:
    if dtype is None or entry.dtype not in FLOAT_DTYPES:
        return entry.dtype
    return dtype


def stop_token_ids(model_dir: Path, words: list[str]) -> list[int]:
    """Ids of those ``words`` that are single tokens in the tokenizer of ``model_dir``."""
    ids = []
    tokenizer_json = model_dir / "tokenizer.json"
    config_json = model_dir / "tokenizer_config.json"
    table: dict[str, int] = {}
    if tokenizer_json.is_file():
        data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        table.update({t["content"]: t["id"] for t in data.get("added_tokens", [])})
        vocab = data.get("model", {}).get("vocab")
        if isinstance(vocab, dict):
            table.update({w: i for w, i in vocab.items() if w in words})
    if config_json.is_file():
        decoder = json.loads(config_json.read_text(encoding="utf-8")).get("added_tokens_decoder", {})
        table.update({t["content"]: int(i) for i, t in decoder.items()})
    for word in words:
        if word in table:
            ids.append(table[word])
    return ids


def generation_config(base_dir: Path, tokenizer_dir: Path, template: str | None) -> dict:
    """The base's generation config with the template's stop tokens added to ``eos_token_id``."""
    path = base_dir / "generation_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    model_config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if config.get(key) is None and model_config.get(key) is not None:
            config[key] = model_config[key]
    eos = config.get("eos_token_id")
    eos = [] if eos is None else list(eos) if isinstance(eos, list) else [eos]
    if template:
        eos += [i for i in stop_token_ids(tokenizer_dir, stop_words(template)) if i not in eos]
    config["eos_token_id"] = eos[0] if len(eos) == 1 else eos
    return config


def copy_tokenizer(src: Path, dst: Path) -> list[str]:
    """Copy the tokenizer files (and any remote tokenizer code) of ``src`` into ``dst``."""
    copied = []
    for path in sorted(src.iterdir()):
        if path.is_file() and (path.name in TOKENIZER_FILES or path.name.startswith("tokenization_")):
            shutil.copy2(path, dst / path.name)
            copied.append(path.name)
    return copied


def _copy_model_files(base_dir: Path, dst: Path) -> None:
    # config, remote modeling code, tokenizer, README...: everything but weights.
    for path in sorted(base_dir.iterdir()):
        if not path.is_file() or path.name.endswith(WEIGHT_SUFFIXES) or path.name.endswith(".index.json"):
            continue
        if path.name in ("generation_config.json", "tianji_run.json") or path.name.startswith("."):
            continue
        shutil.copy2(path, dst / path.name)


def write_model(base_dir: str | Path, out_dir: str | Path, adapter_dir: str | Path | None = None,
                dtype: str = "auto", max_shard_size: str | int = "2GB") -> Path:
    """Write ``base_dir`` (+ the merged adapter, if any) to ``out_dir`` in ``dtype`` as safetensors shards."""
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    if dtype not in OUTPUT_DTYPES:
        raise UserError(f"--dtype {dtype!r}: choose one of {', '.join(OUTPUT_DTYPES)}")
    if not (base_dir / "config.json").is_file():
        raise UserError(f"{base_dir}: no config.json; pass a Hugging Face model folder as BASE")
    for src in (base_dir, adapter_dir):
        if src is not None and out_dir.resolve() == Path(src).resolve():
            raise UserError(f"{out_dir}: the output must be a new folder, not an input")
    base = read_weights(base_dir, prefix="model")
    adapter = load_adapter(adapter_dir) if adapter_dir is not None else None
    if adapter is not None:
        _check_matches(base, adapter, base_dir)
    target = OUTPUT_DTYPES[dtype]
    plan = plan_shards([(name, _output_dtype(e, target), e.shape) for name, e in base.items()],
                           parse_size(max_shard_size))
    needed = sum(s.nbytes for s in plan)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out_dir.parent).free
    if needed > free:
        raise UserError(f"{out_dir.parent}: {needed / 1e9:.2f} GB needed for the merged model, "
                        f"{free / 1e9:.2f} GB free; free some space or write elsewhere with -o")

    def produce(name: str, out_dtype: str):
        entry = base[name]
        if adapter is not None and name in adapter.replaced:
            return adapter.replaced[name].read().to(torch_dtype(out_dtype))
        pair = adapter.pairs.get(name) if adapter is not None else None
        if pair is None and entry.dtype == out_dtype and entry.raw:
            return entry  # unchanged: copied byte for byte
        return _merged_tensor(entry, pair, out_dtype)

    try:
        with atomic_dir(out_dir) as tmp:
            write_shards(tmp, plan, produce)
            _copy_model_files(base_dir, tmp)
            if adapter is not None:
                copy_tokenizer(adapter.path, tmp)
            config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
            if target is not None:
                config["torch_dtype"] = TORCH_DTYPE_NAMES[target]
            write_json(tmp / "config.json", config)
            template = template_name(*(p for p in (adapter_dir, base_dir) if p is not None))
            write_json(tmp / "generation_config.json", generation_config(base_dir, tmp, template))
            manifest = model_manifest(adapter_dir) if adapter_dir is not None else model_manifest(base_dir)
            if manifest or adapter_dir is not None:
                manifest = dict(manifest, template=manifest.get("template") or template)
                if adapter_dir is not None:
                    manifest["merged_from"] = {"base": str(base_dir.resolve()),
                                               "adapter": str(Path(adapter_dir).resolve()), "dtype": dtype}
                write_json(tmp / "tianji_run.json", manifest)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise UserError(f"{out_dir}: disk full while writing ({err.strerror}); nothing was left behind; "
                            f"free {needed / 1e9:.1f} GB or more and retry") from None
        raise
    return out_dir


def merge(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path, dtype: str = "auto",
          max_shard_size: str | int = "2GB") -> Path:
    """Merge the LoRA adapter ``adapter_dir`` into ``base_dir``; write the model to ``out_dir``."""
    return write_model(base_dir, out_dir, adapter_dir, dtype=dtype, max_shard_size=max_shard_size)
