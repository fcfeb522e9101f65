"""Shared fixtures: the real dataset samples beside the project, tiny models."""

from __future__ import annotations

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
