"""Fixtures for the web demo tests: the taught tiny model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

APP_FILE = Path(__file__).resolve().parents[2] / "tianji_ft" / "web" / "app.py"


def _taught_module():
    path = Path(__file__).resolve().parents[1] / "chat" / "taught_model.py"
    spec = importlib.util.spec_from_file_location("tianji_taught_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


taught = _taught_module()


@pytest.fixture(scope="session")
def wishes():
    return taught.wishes()


@pytest.fixture(scope="session")
def taught_model_dir(tmp_path_factory) -> Path:
    import torch

    torch.set_num_threads(1)
    return taught.taught_model(tmp_path_factory.getbasetemp())


@pytest.fixture
def app(taught_model_dir, monkeypatch):
    """``app(*flags)``: an AppTest of the real app file, started as ``streamlit run app.py -- MODEL flags``."""
    from streamlit.testing.v1 import AppTest

    def start(*flags):
        monkeypatch.setattr("sys.argv", [str(APP_FILE), str(taught_model_dir), "--device", "cpu", *flags])
        at = AppTest.from_file(str(APP_FILE), default_timeout=120)
        at.run()
        assert not at.exception, at.exception
        return at

    return start
