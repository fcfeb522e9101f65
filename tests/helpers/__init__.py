"""Test helpers, importable as ``helpers`` (pytest's pythonpath): tiny runs, adapters, the taught model, fixtures."""

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
