"""Mix several datasets into one, with per-source caps or ratios, seeded.

A spec is a JSON file::

    {"output": "mixed.jsonl", "seed": 42,
     "sources": [
       {"name": "firefly", "path": "firefly-train-1.1M.jsonl", "kind": "firefly", "cap": 50000},
       {"name": "ruozhiba", "path": "ruozhiba_qa.json", "kind": "alpaca", "ratio": 1.0},
       {"path": "ours.jsonl", "kind": "conversation", "options": {}}]}

Relative paths are resolved against the spec file's folder. ``kind`` is a
converter name (``conversation`` for already-converted files, ``preference``
for preference records; one spec mixes one of the two formats); ``path`` may
be a list of files or folders; ``options`` are the converter's options.
``cap`` keeps at most that many records, ``ratio`` that fraction of them,
neither keeps all; which ones is a seeded random choice.

Streaming, in two passes: the first converts and counts every source, the
second converts again and writes the chosen records, interleaved in a
seeded random order across sources (each source keeps its own order).
Records a converter rejects go to the rejects file; records left out by a
cap or ratio are counted in the report under ``NAME: not sampled`` (they
are still in the source, so they are not copied).
"""

from __future__ import annotations

import json
import random
from array import array
from collections import deque
from pathlib import Path
from typing import Any, Iterator

from tianji_ft.data.accounting import (RejectSink, Rejected, Tally, outputs_of, rejects_path, report_kept,
                                       screened, settle)
from tianji_ft.data.records import check_fields
from tianji_ft.data.registry import get_converter
from tianji_ft.data.reader import check_encoding
from tianji_ft.data.schema import show
from tianji_ft.data.writer import check_output_path, RecordWriter
from tianji_ft.data.sources import expand_sources, read_rows
from tianji_ft.core.errors import UserError
from tianji_ft.core.progress import Progress
from tianji_ft.core.outputs import check_outputs

_SPEC_KEYS = {"output", "seed", "sources"}
_SOURCE_KEYS = {"name", "path", "kind", "cap", "ratio", "options", "encoding", "sheet"}
_EXAMPLE = "see data/mix/llama3_chinese.json"


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "boolean"), (str, "string"), (int, "number"), (float, "number"),
                       (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return "null"


def _keys(keys) -> str:
    return ", ".join(sorted(show(k) for k in keys))


class Source:
    def __init__(self, spec_path: Path, i: int, entry: dict):
        where = f"{spec_path}: sources[{i}]"
        if not isinstance(entry, dict):
            raise UserError(f"{where}: must be an object with 'path' and 'kind', not a JSON {_json_type(entry)}")
        unknown = set(entry) - _SOURCE_KEYS
        if unknown:
            raise UserError(f"{where}: unknown key(s) {_keys(unknown)}; allowed: {_keys(_SOURCE_KEYS)}")
        for key in ("path", "kind"):
            if key not in entry:
                raise UserError(f"{where}: missing '{key}'")
        paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
        if not paths or not all(isinstance(p, str) and p.strip() for p in paths):
            raise UserError(f"{where}: 'path' must be a file or folder name, or a non-empty list of them, "
                            f"not {show(json.dumps(entry['path'], ensure_ascii=False))}")
        self.paths = [spec_path.parent / p for p in paths]
        if not isinstance(entry["kind"], str):
            raise UserError(f"{where}: 'kind' must be a converter name (text), not a JSON {_json_type(entry['kind'])}")
        try:
            self.converter = get_converter(entry["kind"])
        except UserError as err:
            raise UserError(f"{where}: {err}") from None
        options = entry.get("options")
        if options is not None and not isinstance(options, dict):
            raise UserError(f"{where}: 'options' must be an object of converter options, "
                            f"not a JSON {_json_type(options)}")
        self.options = dict(options or {})
        bad = set(self.options) - set(self.converter.defaults())
        if bad:
            raise UserError(f"{where}: option(s) {_keys(bad)} do not apply to '{entry['kind']}'")
        name = entry.get("name")
        if name is not None and not isinstance(name, str):
            raise UserError(f"{where}: 'name' must be text, not a JSON {_json_type(name)}")
        self.name = show(name or Path(paths[0]).stem)
        self.cap, self.ratio = entry.get("cap"), entry.get("ratio")
        if self.cap is not None and self.ratio is not None:
            raise UserError(f"{where}: give 'cap' or 'ratio', not both")
        if self.cap is not None and (not isinstance(self.cap, int) or isinstance(self.cap, bool) or self.cap < 0):
            raise UserError(f"{where}: 'cap' must be a whole number >= 0, got {show(json.dumps(self.cap))}")
        if self.ratio is not None and (not isinstance(self.ratio, (int, float)) or isinstance(self.ratio, bool)
                                       or not 0 <= self.ratio <= 1):
            raise UserError(f"{where}: 'ratio' must be a number from 0 to 1, got {show(json.dumps(self.ratio))}")
        self.encoding = entry.get("encoding", "utf-8")
        if not isinstance(self.encoding, str):
            raise UserError(f"{where}: 'encoding' must be text such as \"gb18030\", "
                            f"not a JSON {_json_type(self.encoding)}")
        try:
            check_encoding(self.encoding)
        except UserError as err:
            raise UserError(f"{where}: 'encoding': {err}") from None
        self.sheet = entry.get("sheet")
        if self.sheet is not None and not isinstance(self.sheet, str):
            raise UserError(f"{where}: 'sheet' must be a sheet name (text), not a JSON {_json_type(self.sheet)}")
        self.files: list[Path] = []
        self.good = 0

    def results(self, notes=None) -> Iterator[tuple[Path, int, object, object]]:
        """(file, index, row, result) for every row of every file of this source."""
        options = dict(self.options)
        if self.converter.takes_notes():
            options["notes"] = notes
        fields = self.converter.required_fields(options)
        for path in self.files:
            origins: deque = deque()

            def rows(path=path):
                for index, row in read_rows(path, self.encoding, self.sheet):
                    if index == 0:
                        check_fields(path, row, fields, self.converter.hint)
                    origins.append((index, row))
                    yield [row]

            for result in screened(rows(), lambda rows: self.converter.func(rows, **options)):
                index, row = origins.popleft()
                yield path, index, row, result

    def keep_count(self) -> int:
        if self.cap is not None:
            return min(self.cap, self.good)
        if self.ratio is not None:
            return round(self.ratio * self.good)
        return self.good


def load_spec(path: str | Path) -> dict:
    """The spec at ``path``, checked for shape: every mistake is one line naming the file and the key."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such spec file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder; give the mix spec file (.json)") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; save the mix spec as UTF-8 JSON") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}:{err.colno}: malformed JSON: {err.msg}") from None
    except RecursionError:
        raise UserError(f"{path}: malformed JSON: nested too deeply for a mix spec") from None
    if not isinstance(spec, dict):
        raise UserError(f"{path}: a mix spec is a JSON object with a 'sources' list, not a JSON {_json_type(spec)} "
                        f"({_EXAMPLE})")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise UserError(f"{path}: unknown key(s) {_keys(unknown)}; allowed: {_keys(_SPEC_KEYS)}")
    if "sources" not in spec:
        raise UserError(f"{path}: missing 'sources', the list of datasets to mix ({_EXAMPLE})")
    if not isinstance(spec["sources"], list):
        raise UserError(f"{path}: 'sources' must be a list of sources, not a JSON {_json_type(spec['sources'])} "
                        f"({_EXAMPLE})")
    if not spec["sources"]:
        raise UserError(f"{path}: 'sources' is empty; a mix spec is an object with a non-empty 'sources' list "
                        f"({_EXAMPLE})")
    output = spec.get("output")
    if output is not None and not isinstance(output, str):
        raise UserError(f"{path}: 'output' must be a file name (text), not a JSON {_json_type(output)}")
    seed = spec.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise UserError(f"{path}: 'seed' must be a whole number, not {show(json.dumps(seed))}")
    return spec


def mix(spec_path: str | Path, *, output: str | Path | None = None, seed: int | None = None,
        report: str | Path | None = None, quiet: bool = True) -> tuple[Tally, Path]:
    """Build the mixed dataset described by ``spec_path``; return the tally and output path.

    Outputs (OUT, its rejects file, ``report``) that are, hold or lie inside
    the spec, a source file or each other are refused before anything is
    written; a mix that keeps no record raises
    :class:`~tianji_ft.data.accounting.NoRecordKept` (exit code 3).
    """
    spec_path = Path(spec_path)
    spec = load_spec(spec_path)
    if output is None and not spec.get("output"):
        raise UserError(f"{spec_path}: no 'output' in the spec; add one or pass -o")
    out = check_output_path(Path(output) if output is not None else spec_path.parent / spec["output"])
    seed = seed if seed is not None else spec.get("seed", 0)
    sources = [Source(spec_path, i, entry) for i, entry in enumerate(spec["sources"])]
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise UserError(f"{spec_path}: source names must differ; give each a 'name'")
    made: dict = {}  # each format's first source
    for s in sources:
        made.setdefault(s.converter.produces, s)
    if len(made) > 1:
        shown = " and ".join(f"'{s.name}' makes {kind} records" for kind, s in made.items())
        raise UserError(f"{spec_path}: {shown}; XTuner reads one format per file: mix them in separate specs")
    skip = [p for p in (out, rejects_path(out), report) if p is not None]
    for s in sources:
        s.files = expand_sources(s.paths, exclude=skip)
    check_outputs([("mix spec", spec_path)] + [("input", f) for s in sources for f in s.files],
                  outputs_of(out, report))
    tally = Tally()
    with RejectSink(rejects_path(out)) as sink:
        with Progress(f"mix {out.name} (reading)", None, unit="records", quiet=quiet) as progress:
            for s in sources:  # pass 1: convert and count
                _convert_source(s, tally, sink, progress)
        rng = random.Random(seed)
        chosen = []
        for s in sources:
            keep = s.keep_count()
            flags = bytearray(s.good)
            for i in rng.sample(range(s.good), keep):
                flags[i] = 1
            chosen.append(flags)
            if s.good - keep:
                tally.reject(f"{s.name}: not sampled", s.good - keep)
        order = array("H", (i for i, s in enumerate(sources) for _ in range(s.keep_count())))
        rng.shuffle(order)
        streams = [_chosen_records(s, flags) for s, flags in zip(sources, chosen)]
        with RecordWriter(out) as writer:  # pass 2: write the chosen ones, interleaved
            for i in order:
                writer.write(next(streams[i]))
            settle(writer, sink, tally)
    report_kept(report, tally, out, rejects_path(out))
    return tally, out


def _convert_source(source: Source, tally: Tally, sink: RejectSink, progress: Progress) -> None:
    """Pass 1 over one source: count its good records, log its rejects."""
    for path, index, row, result in source.results(tally.notes):
        tally.read += 1
        progress.update()
        if isinstance(result, Rejected):
            tally.reject(f"{source.name}: {result.reason}")
            sink.add(path, index, result.reason, row, result.detail, source_name=source.name)
        else:
            source.good += 1


def _chosen_records(source: Source, flags: bytearray) -> Iterator[dict]:
    good = 0
    for _, _, _, result in source.results():
        if not isinstance(result, Rejected):
            if flags[good]:
                yield result
            good += 1
