"""Fetch the model a config was written for, from ModelScope or Hugging Face.

Each config's ``tianji_meta.hub`` names the weights on both hubs; the files
go where the config looks for them when TIANJI_MODEL is unset, so a plain
``tianji-ft train NAME`` finds them. Both hubs' ``snapshot_download`` skip
files already complete and continue partial ones, so rerunning after an
interruption resumes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from tianji_ft.core.errors import UserError

SOURCES = ("modelscope", "huggingface")
# huggingface_hub comes with the install; modelscope is an extra package (set HF_ENDPOINT for a mirror)
DEFAULT_SOURCE = "huggingface"

# (repo_id, local_dir) -> local path of the snapshot
Downloader = Callable[[str, Path], str]


def _modelscope(repo_id: str, local_dir: Path) -> str:
    try:
        from modelscope import snapshot_download
    except ImportError:
        raise UserError("modelscope is not installed: pip install modelscope (or use --source huggingface)") from None
    try:
        return snapshot_download(repo_id, local_dir=str(local_dir))
    except TypeError:  # modelscope before 1.14 has no local_dir: files land in cache_dir/owner/name
        return snapshot_download(repo_id, cache_dir=str(local_dir.parent))


def _huggingface(repo_id: str, local_dir: Path) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id=repo_id, local_dir=str(local_dir))


DOWNLOADERS: dict[str, Downloader] = {"modelscope": _modelscope, "huggingface": _huggingface}


def model_target(name: str, source: str) -> tuple[str, Path]:
    """(hub repo id, default local folder) for a config name/path or a bare ``owner/model`` id."""
    from tianji_ft.configs.registry import config_meta, config_settings, list_configs, resolve_config

    if source not in SOURCES:
        raise UserError(f"unknown source '{source}'; use one of: {', '.join(SOURCES)}")
    try:
        path = resolve_config(name)
    except UserError:
        if name.count("/") == 1 and not name.endswith(".py"):
            return name, Path("models") / name.split("/")[1]
        raise UserError(f"unknown config '{name}': not one of {', '.join(list_configs())}, "
                        "and not a hub id like Shanghai_AI_Laboratory/internlm2-chat-7b") from None
    start = config_meta(path).get("start_from")
    if start:  # a preference config trains the merged SFT model of another config: that one needs the weights
        return model_target(start, source)
    repo_id = (config_meta(path).get("hub") or {}).get(source)
    if not repo_id:
        raise UserError(f"{path}: tianji_meta.hub names no {source} model; pass the hub id instead of the config")
    default = (config_settings(path).get("TIANJI_MODEL") or {}).get("default")
    return repo_id, Path(default) if default else Path("models") / repo_id.split("/")[-1]


def download_model(name: str, source: str = DEFAULT_SOURCE, out: str | os.PathLike | None = None,
                   downloader: Downloader | None = None) -> Path:
    """Download the model for config ``name`` (or hub id) into ``out``; return the local path."""
    repo_id, default_dir = model_target(name, source)
    local_dir = Path(out) if out is not None else default_dir
    fetch = downloader or DOWNLOADERS[source]
    try:
        result = fetch(repo_id, local_dir)
    except UserError:
        raise
    except Exception as err:  # hub clients raise many kinds; the user needs one line and a retry hint
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"downloading {repo_id} from {source} failed ({type(err).__name__}: {detail}); "
                        "check the network (or HF_ENDPOINT=https://hf-mirror.com) and rerun: it resumes") from None
    return Path(result or local_dir)
