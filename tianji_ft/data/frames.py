"""pandas and Hugging Face ``datasets`` for notebooks: DataFrames in and out, records as a Dataset.

Needs the ``data`` extra (``pip install 'tianji_ft[data]'``); nothing here imports torch.

    from tianji_ft.data import convert_dataframe, read_dataframe, to_hf_dataset
    tally = convert_dataframe("medqa", pd.read_excel("MedQA.xlsx", dtype=str), "medqa.jsonl")
    df = read_dataframe("medqa.jsonl")          # one row a record: system, input, output, turns, conversation
    ds = to_hf_dataset("medqa.jsonl")           # datasets.Dataset with a 'conversation' column
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tianji_ft.data.accounting import Tally
from tianji_ft.data.reader import iter_records


def read_dataframe(path: str | Path, encoding: str = "utf-8"):
    """The conversation records of ``path`` as a DataFrame, one row a record: the first turn's
    ``system``, ``input`` and ``output``, the number of ``turns``, and the whole ``conversation``."""
    import pandas as pd

    rows = []
    for _, record in iter_records(path, encoding):
        conversation = record.get("conversation") or [{}] if isinstance(record, dict) else [{}]
        first = conversation[0] if isinstance(conversation[0], dict) else {}
        rows.append({"system": first.get("system", ""), "input": first.get("input"), "output": first.get("output"),
                     "turns": len(conversation), "conversation": conversation})
    return pd.DataFrame(rows, columns=["system", "input", "output", "turns", "conversation"])


def convert_dataframe(kind: str, frame, out: str | Path, *, options: dict | None = None,
                      report: str | Path | None = None) -> Tally:
    """:func:`tianji_ft.data.convert_files` over the rows of a DataFrame (columns as a file's header).

    Cells are taken as text the way files are read (missing cells are empty), so a sheet read with
    ``pd.read_excel(..., dtype=str)`` converts exactly as the file itself would. Rejects name the
    rows by their position in the frame.
    """
    from tianji_ft.data.records import convert_files

    records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    with tempfile.TemporaryDirectory(prefix="tianji_ft_frame.") as tmp:
        source = Path(tmp) / "dataframe.jsonl"
        with open(source, "w", encoding="utf-8") as fh:
            for row in records:
                fh.write(json.dumps({str(k): v for k, v in row.items()}, ensure_ascii=False, default=str) + "\n")
        return convert_files(kind, [source], out, options=options, report=report)


def to_hf_dataset(path: str | Path, encoding: str = "utf-8"):
    """The records of ``path`` as a ``datasets.Dataset`` (one call, no hub access)."""
    from datasets import Dataset

    return Dataset.from_list([record for _, record in iter_records(path, encoding)])
