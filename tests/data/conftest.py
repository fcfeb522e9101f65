"""Fixtures for the data tests: the project's own small fixture files, and
XTuner's map functions loaded straight from their files (no torch import)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def read_jsonl():
    def read(path) -> list:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    return read


@pytest.fixture(scope="session")
def xtuner_map_fns():
    """XTuner's dataset map fns by name, loaded from the installed files.

    Importing ``xtuner.dataset`` pulls in torch; the map-fn files themselves
    use only json and re, so they are loaded on their own.
    """
    spec = importlib.util.find_spec("xtuner")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("xtuner is not installed")
    folder = Path(spec.submodule_search_locations[0]) / "dataset" / "map_fns" / "dataset_map_fns"
    fns = {}
    for name, file in (("msagent_react_map_fn", "msagent_map_fn.py"), ("oasst1_map_fn", "oasst1_map_fn.py")):
        module_spec = importlib.util.spec_from_file_location(f"_xtuner_{file[:-3]}", folder / file)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        fns[name] = getattr(module, name)
    return fns
