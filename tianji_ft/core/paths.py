"""Where the project's own files live (configs, shipped data)."""

from __future__ import annotations

import os
from pathlib import Path

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
