"""Where the project's own files live (configs, shipped data)."""

from __future__ import annotations

import os
from pathlib import Path

from tianji_ft.core.errors import UserError

PACKAGE_DIR = Path(__file__).resolve().parent.parent
PROJECT_ROOT = PACKAGE_DIR.parent
# Shipped data and configs sit beside the package in a checkout; an
# installed copy can point elsewhere with these variables.
DATA_DIR = Path(os.environ.get("TIANJI_FT_DATA_DIR", PROJECT_ROOT / "data"))
CONFIGS_DIR = Path(os.environ.get("TIANJI_FT_CONFIGS_DIR", PROJECT_ROOT / "xtuner_configs"))


def cache_dir() -> Path:
    """Per-user cache (tiny models, tokenized datasets); ``TIANJI_FT_CACHE`` overrides."""
    base = os.environ.get("TIANJI_FT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tianji_ft"
    )
    return Path(base)


def local_model_dir(model: str | Path) -> Path:
    """``model`` itself, or for a hub id (the manifest's default model) its copy in the Hugging Face cache."""
    path = Path(model)
    if path.is_dir():
        return path
    if str(model).count("/") != 1 or path.is_absolute() or str(model).startswith((".", "~")):
        raise UserError(f"{model}: no such model folder; check the path")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(model), local_files_only=True))
    except Exception:  # not cached (or no huggingface_hub): say how to get it
        raise UserError(f"{model}: not a folder, and not in the Hugging Face cache; download it first "
                        f"(huggingface-cli download {model} --local-dir models/{path.name}) and pass the folder") \
            from None
