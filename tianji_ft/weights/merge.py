"""The merged model folder: ``W + scale * B @ A`` for every LoRA pair, safetensors shards, the
base's files, the tokenizer, a ``generation_config.json`` that stops on the template's tokens, and
the run manifest. See :mod:`tianji_ft.weights.lora` for the arithmetic and
:mod:`tianji_ft.weights.safetensors_io` for how tensors move without being loaded whole.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
from pathlib import Path

from tianji_ft.core.errors import UserError
from tianji_ft.core.fsio import atomic_dir, write_json
from tianji_ft.core.manifest import MANIFEST_NAME, model_manifest, write_manifest
from tianji_ft.core.outputs import Output, check_outputs
from tianji_ft.core.paths import local_model_dir
from tianji_ft.core.progress import Progress
from tianji_ft.core.templates import trained_template
from tianji_ft.weights.lora import check_fits, load_adapter, single_threaded_blas, tensor_slices
from tianji_ft.weights.modelfile import generation_config
from tianji_ft.weights.safetensors_io import (FLOAT_DTYPES, OUTPUT_DTYPES, TORCH_DTYPE_NAMES, WEIGHT_SUFFIXES,
                                              plan_shards, read_weights, write_shards)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json")

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
                overwrite: bool = False, quiet: bool = True) -> Path:
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
            with single_threaded_blas(), Progress("merge", needed, unit="B", quiet=quiet) as progress:
                write_shards(tmp, plan, produce, progress)
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
          max_shard_size: str | int = "2GB", overwrite: bool = False, quiet: bool = True) -> Path:
    """Merge the LoRA adapter ``adapter_dir`` into ``base_dir``; write the model to ``out_dir``.

    ``quiet=False`` shows progress on stderr (bytes written; a bar on a terminal)."""
    return write_model(base_dir, out_dir, adapter_dir, dtype=dtype, max_shard_size=max_shard_size,
                       overwrite=overwrite, quiet=quiet)
