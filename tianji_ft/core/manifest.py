"""The run manifest: what produced a work dir, read by every later command.

``WORK_DIR/tianji_run.json`` is written before training starts and updated
when it ends. Convert, merge, chat, eval, serve and export read the template
and system prompt from it, so none of them asks again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tianji_ft.core.errors import UserError
from tianji_ft.core.fsio import write_json

MANIFEST_NAME = "tianji_run.json"
# XTuner's output in a work dir (train and convert append to it).
TRAIN_LOG = "train.log"
TRACKED_PACKAGES = ("tianji_ft", "torch", "transformers", "xtuner", "mmengine", "deepspeed", "peft",
                    "bitsandbytes", "datasets", "accelerate")


def package_versions(names=TRACKED_PACKAGES) -> dict[str, str | None]:
    from importlib import metadata

    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def manifest_path(work_dir: str | Path) -> Path:
    return Path(work_dir) / MANIFEST_NAME


def write_manifest(work_dir: str | Path, manifest: dict) -> Path:
    path = manifest_path(work_dir)
    write_json(path, manifest)
    return path


def read_manifest(work_dir: str | Path, required: bool = True) -> dict | None:
    """The manifest of ``work_dir`` (or of the run a model dir was converted from)."""
    path = manifest_path(work_dir)
    if not path.is_file():
        if required:
            raise UserError(f"{work_dir}: no {MANIFEST_NAME}; it is written by 'tianji-ft train' "
                            "(pass the settings as flags for runs started another way)")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); "
                        "restore it or re-run training") from None


def model_manifest(model_dir: str | Path) -> dict:
    """The manifest copied into a converted or merged model folder (or an adapter), or {}."""
    return read_manifest(model_dir, required=False) or {}
