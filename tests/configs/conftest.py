"""Fixtures for the config-pack tests: a clean TIANJI_* environment and a
loader for the rendered configs (mmengine + xtuner imported once)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from tianji_ft.core.paths import CONFIGS_DIR



@pytest.fixture(autouse=True)
def _no_tianji_env(monkeypatch):
    # A developer's exported TIANJI_* settings must not leak into the defaults under test.
    for key in list(os.environ):
        if key.startswith("TIANJI_"):
            monkeypatch.delenv(key)


@contextlib.contextmanager
def _environ(extra: dict[str, str]):
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def load_config():
    """``load_config(name, env={})`` -> mmengine Config, read with those variables set."""
    Config = pytest.importorskip("mmengine.config").Config

    def load(name: str, env: dict[str, str] | None = None):
        with _environ(env or {}):
            return Config.fromfile(str(CONFIGS_DIR / f"{name}.py"))

    return load


@pytest.fixture(scope="session")
def prompt_templates():
    return pytest.importorskip("xtuner.utils").PROMPT_TEMPLATE


@pytest.fixture(scope="session")
def configs_dir() -> Path:
    return CONFIGS_DIR
