"""A training checkpoint -> a Hugging Face adapter (LoRA run) or model (full fine-tune).

XTuner's ``pth_to_hf`` does the conversion; this picks the checkpoint, gives
it exactly the run's config, settings and overrides (from the manifest), and
finishes the output: safetensors, the tokenizer, the base model's dtype for a
full model, and the manifest for the steps after.

``pth_to_hf`` always runs with the config's 4-bit quantization dropped
(``compat.drop_quantization_config``): the adapter's weights do not depend on
it, a quantized model cannot be built without CUDA, and without it the base
model is built on the meta device (no memory) instead of being loaded in full.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from tianji_ft.core.layout import converted_dir
from tianji_ft.core.errors import UserError
from tianji_ft.core.fsio import atomic_dir, sha256_file
from tianji_ft.core.outputs import Output, check_outputs
from tianji_ft.xtuner.compat import DROP_QUANTIZATION_ENV
from tianji_ft.core.manifest import TRAIN_LOG, manifest_path, read_manifest, write_manifest
from tianji_ft.xtuner.runner import launch_env, run_step, tool_command

CHECKPOINT = re.compile(r"^(iter|epoch)_(\d+)\.pth$")
CONVERT_LOG = "convert.log"


def checkpoints(work_dir: Path) -> dict[int, Path]:
    """``iter_N.pth`` files or DeepSpeed folders of ``work_dir`` by N."""
    found = {}
    for path in work_dir.iterdir() if work_dir.is_dir() else ():
        match = CHECKPOINT.match(path.name)
        if match and (path.is_file() or any(path.glob("*model_states.pt"))):
            found[int(match.group(2))] = path
    return dict(sorted(found.items()))


def pick_checkpoint(work_dir: str | Path, iteration: int | None = None) -> Path:
    """``iter_{iteration}.pth``, else the one mmengine's ``last_checkpoint`` names, else the newest."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        raise UserError(f"{work_dir}: no such work dir; pass the folder training wrote to (--work-dir)")
    found = checkpoints(work_dir)
    if not found and (work_dir / "config.json").is_file():
        kind = "an adapter" if (work_dir / "adapter_config.json").is_file() else "a model folder"
        raise UserError(f"{work_dir} is {kind} already, not a training work dir: nothing to convert; "
                        f"chat with it: tianji-ft chat {work_dir}")
    if not found and (work_dir / "adapter_config.json").is_file():
        raise UserError(f"{work_dir} is a converted adapter already, not a training work dir: nothing to convert; "
                        f"merge it (tianji-ft merge {work_dir} -o MERGED) or chat with it (tianji-ft chat {work_dir})")
    if not found:
        raise UserError(f"{work_dir}: no checkpoint (iter_N.pth) found; training saves one every save_steps "
                        "iterations and at the end; let it finish or lower TIANJI_SAVE_STEPS")
    if iteration is not None:
        if iteration not in found:
            raise UserError(f"{work_dir}: no iter_{iteration}.pth; available: "
                            f"{', '.join(p.name for p in found.values())}")
        return found[iteration]
    marker = work_dir / "last_checkpoint"
    if marker.is_file():
        named = work_dir / Path(marker.read_text().strip()).name  # the work dir may have moved
        if named in found.values():
            return named
    return found[max(found)]


def _config_path(work_dir: Path, manifest: dict) -> Path:
    config = manifest.get("config") or {}
    path = Path(config.get("path", ""))
    if not path.is_file():
        raise UserError(f"{work_dir}: the run's config {path} is gone; restore it (tianji_run.json names it)")
    if config.get("sha256") and sha256_file(path) != config["sha256"]:
        raise UserError(f"{path} changed since {work_dir} was trained (sha256 differs); the checkpoint only "
                        "loads into the model it was saved from: restore the config file as it was")
    return path


def pth_to_hf_command(config: Path, checkpoint: Path, out: Path, cfg_options: list[str]) -> list[str]:
    # The run's overrides, minus its quantization switch: the child drops it anyway.
    options = [o for o in cfg_options if not o.startswith("model.llm.quantization_config")]
    args = [str(config), str(checkpoint), str(out), "--safe-serialization", "--fp32", "--max-shard-size", "2GB"]
    if options:
        args += ["--cfg-options", *options]
    return tool_command("pth_to_hf", args)


def _base_dtype(model: str | None) -> str:
    import json

    from tianji_ft.core.paths import local_model_dir

    try:
        config = local_model_dir(model or "") / "config.json"
    except UserError:
        return "bf16"
    if config.is_file():
        name = json.loads(config.read_text(encoding="utf-8")).get("torch_dtype")
        return {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(name, "bf16")
    return "bf16"


def convert(work_dir: str | Path, iteration: int | None = None, out_dir: str | Path | None = None,
            runner=None, quiet: bool = False, overwrite: bool = False) -> Path:
    """Convert a checkpoint of ``work_dir``; return the output folder.

    LoRA runs give the adapter (fp32, ``adapter_model.safetensors``) plus the
    base tokenizer; full fine-tunes give the model in the base model's dtype.
    """
    from tianji_ft.weights.merge import copy_tokenizer, write_model

    work_dir = Path(work_dir).resolve()
    checkpoint = pick_checkpoint(work_dir, iteration)
    manifest = read_manifest(work_dir)
    config = _config_path(work_dir, manifest)
    full = not manifest.get("lora", True) or "model.lora=None" in manifest.get("cfg_options", [])
    out_dir = Path(out_dir) if out_dir else converted_dir(work_dir, full)
    kind = "model" if full else "adapter"
    # The work dir itself is where the default output goes; what must survive in it are the checkpoints.
    base = manifest.get("model")
    check_outputs([("checkpoint", checkpoint), ("run config", config), ("run manifest", manifest_path(work_dir)),
                   ("training log", work_dir / TRAIN_LOG),
                   ("base model", base if base and Path(base).exists() else None),
                   *[("checkpoint", p) for pattern in ("iter_*.pth", "epoch_*.pth")
                     for p in sorted(work_dir.glob(pattern))]],
                  [Output(out_dir, "-o", kind=kind)], overwrite=overwrite)
    env = launch_env(extra={**(manifest.get("env") or {}), DROP_QUANTIZATION_ENV: "1"})
    with atomic_dir(out_dir, kind, overwrite) as tmp:
        raw = tmp / "pth_to_hf"
        cmd = pth_to_hf_command(config, checkpoint, raw, list(manifest.get("cfg_options") or []))
        run_step("convert", cmd, env, work_dir / CONVERT_LOG, runner=runner, quiet=quiet)
        if (raw / "adapter_config.json").is_file():
            for path in raw.iterdir():
                shutil.move(str(path), tmp / path.name)
                os.chmod(tmp / path.name, 0o644)  # PEFT leaves its safetensors private (0600)
            base = Path(manifest.get("model") or "")
            if base.is_dir():
                copy_tokenizer(base, tmp)
            else:
                from transformers import AutoTokenizer

                AutoTokenizer.from_pretrained(manifest["model"], trust_remote_code=True).save_pretrained(tmp)
        else:
            # pth_to_hf wrote fp32 (its other choice is fp16, even for bf16 models).
            model = tmp / "model"
            write_model(raw, model, dtype=_base_dtype(manifest.get("model")), template=manifest.get("template"))
            for path in model.iterdir():
                shutil.move(str(path), tmp / path.name)
            model.rmdir()
        shutil.rmtree(raw)
        converted = dict(manifest, converted_from=str(work_dir), checkpoint=str(checkpoint),
                         lora=(tmp / "adapter_config.json").is_file())
        converted.pop("command", None)
        write_manifest(tmp, converted)
    return out_dir

