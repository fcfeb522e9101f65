"""Dataset converters and tools for XTuner's conversation format, and for its
preference format (prompt / chosen / rejected, for DPO and ORPO: ``preference``).

A library first (the ``tianji-ft data`` command calls these same functions)::

    from tianji_ft.data import convert_files, split_file
    tally = convert_files("medqa", ["MedInfo2019-QA-Medications.xlsx"], "medqa.jsonl")
    print(tally.line())                      # read 690, written ..., rejected ... (placeholder answer: ...)
    split_file("medqa.jsonl", "medqa_split", test_ratio=0.3, seed=42)

    from tianji_ft.data.converters import firefly   # iterator in, iterator out
    records = list(firefly([{"kind": "Couplet", "input": "上联：春风得意", "target": "秋水长天"}]))

Importing this package is cheap: names are loaded on first use, and nothing
here imports torch, transformers, xtuner or pandas.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "convert_files": "records", "process": "records",
    "get_converter": "registry", "all_converters": "registry", "converter": "registry",
    "Rejected": "accounting", "Tally": "accounting", "NoRecordKept": "accounting",
    "record_problems": "schema", "preference_problems": "preference", "make_preference": "preference",
    "iter_records": "reader", "write_records": "writer", "RecordWriter": "writer",
    "read_rows": "sources",
    "validate_files": "validate", "split_file": "split", "dedupe_file": "dedupe",
    "dataset_stats": "stats", "clean_file": "wishes",
    "read_dataframe": "frames", "convert_dataframe": "frames", "to_hf_dataset": "frames",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
