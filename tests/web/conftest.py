"""Fixtures for the web demo tests: the taught tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

APP_FILE = Path(__file__).resolve().parents[2] / "tianji_ft" / "web" / "app.py"





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
