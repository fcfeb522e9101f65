"""Shared fixtures: the real dataset samples beside the project, tiny models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = PROJECT_ROOT.parent / "shared" / "data" / "samples"


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The read-only real samples (``../shared/data/samples``); skip where absent."""
    if not SAMPLES_DIR.is_dir():
        pytest.skip(f"real dataset samples not found at {SAMPLES_DIR} (only present beside the team's checkout)")
    return SAMPLES_DIR


def _load_taught_module():
    spec = importlib.util.spec_from_file_location("tianji_taught_model",
                                                  Path(__file__).parent / "chat" / "taught_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


taught = _load_taught_module()


@pytest.fixture(scope="session")
def wishes():
    return taught.wishes()


@pytest.fixture(scope="session")
def taught_model_dir(tmp_path_factory) -> Path:
    """The tiny InternLM2 model taught to answer the demo wishes and stop (with a run manifest)."""
    import torch

    torch.set_num_threads(1)
    return taught.taught_model(tmp_path_factory.getbasetemp())
