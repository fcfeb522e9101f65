"""The one data check for XTuner training: every record the config will train on, before a model loads.

Records XTuner reads as they are must pass the strict check that ``tianji-ft
data validate`` applies (:func:`tianji_ft.data.schema.record_problems`);
records that go through a ``dataset_map_fn`` must come out of it in a shape
XTuner trains on. A preference config (DPO, ORPO: XTuner's
``build_preference_dataset``) trains on preference records, checked by
:func:`tianji_ft.data.preference.preference_problems`. ``train --dry-run``, every training process
(:mod:`tianji_ft.xtuner.entry`, before XTuner starts) and the pipeline's data
stage all call :func:`check_training_data`, so they agree on every file.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tianji_ft.core.errors import UserError
from tianji_ft.data.preference import is_preference, preference_problems
from tianji_ft.data.reader import iter_json_values
from tianji_ft.data.schema import record_problems
from tianji_ft.xtuner.dataset_cache import resolve_data_files

PROBLEMS_SHOWN = 3
PROBLEMS_KEPT = 20


@dataclass
class DataCheck:
    records: int = 0
    bad_records: int = 0
    problems: list[str] = field(default_factory=list)  # the first PROBLEMS_KEPT, ``where: what``

    def line(self) -> str:
        """The verdict as one line (empty when the data is fine)."""
        if self.records == 0:
            return "no training record in the data; check --data (an empty file or an empty array?)"
        if not self.bad_records:
            return ""
        shown = "; ".join(self.problems[:PROBLEMS_SHOWN])
        rest = self.bad_records - min(PROBLEMS_SHOWN, len(self.problems))
        more = f" (and {rest} more)" if rest > 0 else ""
        return (f"{self.bad_records} bad record(s) of {self.records} in the training data: {shown}{more}; "
                f"'tianji-ft data validate' lists them all")


def check_training_data(ds_cfg) -> DataCheck:
    """Every training record through the one record check, streaming; raise one line if any is bad or none is left.

    Records XTuner reads as they are must pass the strict check that
    ``tianji-ft data validate`` applies (:func:`tianji_ft.data.schema.record_problems`);
    records that go through a ``dataset_map_fn`` must come out of it in a
    shape XTuner trains on. Used by ``train --dry-run``, by every real
    training process before XTuner starts (``tianji_ft.xtuner.entry``) and by
    the pipeline's data stage.
    """
    map_fn = resolve_map_fn(ds_cfg.get("dataset_map_fn"))
    templated = ds_cfg.get("template_map_fn") is not None
    preference = is_preference_dataset(ds_cfg)
    final_problems = preference_problems if preference else record_problems
    limit = ds_cfg.get("max_dataset_length")
    result, already_converted = DataCheck(), map_fn is not None
    for where, record in itertools.islice(source_records(ds_cfg), int(limit) if limit is not None else None):
        result.records += 1
        if preference:
            problems = preference_record_check(record, map_fn)
        else:
            problems = record_check(record, map_fn, templated)
        if already_converted and final_problems(record):
            already_converted = False
        if problems:
            result.bad_records += 1
            if len(result.problems) < PROBLEMS_KEPT:
                result.problems += [f"{where}: {p}" for p in problems]
    if already_converted and result.records:
        shape = "a preference record" if preference else "in XTuner's conversation format"
        raise UserError(f"dataset_map_fn is set but every record is already {shape}; set dataset_map_fn=None")
    line = result.line()
    if line:
        raise UserError(line)
    return result


def check_config_data(config_path, cfg_options: list[str]) -> DataCheck:
    """:func:`check_training_data` for a config file, as ``xtuner.tools.train`` will load it."""
    return check_training_data(train_dataset_config(load_config(config_path, cfg_options)))


def check_plan_data(env: dict, config_path, cfg_options: list[str]) -> DataCheck:
    """:func:`check_config_data` in a training process's environment (``env``: its TIANJI_* settings)."""
    with environment(env):
        return check_config_data(config_path, cfg_options)


# ------------------------------------------------------------------ config

@contextlib.contextmanager
def environment(env: dict) -> Iterator[None]:
    """``env`` in ``os.environ`` while the config runs and the data is cached, as in the training process."""
    saved = dict(os.environ)
    os.environ.update({k: str(v) for k, v in env.items()})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def parse_cfg_options(cfg_options: list[str]) -> dict:
    """``KEY=VALUE`` strings parsed the way ``xtuner train --cfg-options`` (mmengine's DictAction) parses them."""
    from mmengine.config import DictAction

    options = {}
    for item in cfg_options or []:
        if "=" not in item:
            raise UserError(f"--cfg-options {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        options[key] = DictAction._parse_iterable(value)
    return options


def load_config(config_path, cfg_options: list[str]):
    from mmengine.config import Config

    path = Path(config_path)
    if not path.is_file():
        raise UserError(f"config {config_path} not found")
    try:
        cfg = Config.fromfile(str(path))
    except Exception as err:
        raise UserError(f"config {config_path} does not load: {_one_line(err)}") from err
    options = parse_cfg_options(cfg_options)
    if options:
        cfg.merge_from_dict(options)
    return cfg


def train_dataset_config(cfg) -> dict:
    if cfg.get("framework", "mmengine").lower() == "huggingface":
        ds_cfg = cfg.get("train_dataset")
    else:
        ds_cfg = (cfg.get("train_dataloader") or {}).get("dataset")
    if not ds_cfg or "dataset" not in ds_cfg or "tokenizer" not in ds_cfg or "max_length" not in ds_cfg:
        raise UserError("the config has no train_dataloader.dataset with dataset, tokenizer and max_length; "
                        "is it an XTuner fine-tuning config?")
    return ds_cfg


# ------------------------------------------------------------------ records

def source_records(ds_cfg) -> Iterator[tuple[str, object]]:
    """(where, record) for every training record, in the order XTuner reads them, streaming.

    Local JSON/JSONL files are read with the data tools' reader, so a record
    is named ``file:index`` exactly as ``tianji-ft data validate`` names it;
    anything else is read through the datasets library and named by index.
    """
    dataset_cfg = ds_cfg["dataset"]
    is_config = hasattr(dataset_cfg, "keys")
    if is_config and dataset_cfg.get("path") == "json" and dataset_cfg.get("data_files") is not None:
        for path in resolve_data_files(dataset_cfg["data_files"]):
            yield from json_file_records(path, dataset_cfg.get("field"))
        return
    from xtuner.dataset.huggingface import build_origin_dataset

    try:
        dataset = build_origin_dataset(dataset_cfg, ds_cfg.get("split", "train"))
    except Exception as err:
        raise UserError(f"the training data does not load: {_one_line(err)}") from err
    for i, row in enumerate(dataset):
        yield f"record {i}", row


def json_file_records(path: Path, field: str | None = None) -> Iterator[tuple[str, object]]:
    if field:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
        data = data.get(field) if isinstance(data, dict) else None
        if not isinstance(data, list):
            raise UserError(f"{path}: no list under field {field!r}")
        for i, record in enumerate(data):
            yield f"{path}:{i}", record
        return
    for index, record in iter_json_values(path):
        yield f"{path}:{index}", record


def record_check(record, map_fn=None, templated: bool = True) -> list[str]:
    """What keeps ``record`` from training: the strict check for records XTuner reads as they are,
    XTuner's own needs after a ``dataset_map_fn`` (a template may fill in a missing input)."""
    if map_fn is None and is_preference(record):
        return ["a preference record (prompt/chosen/rejected) in a supervised config; train preference pairs "
                "with a DPO or ORPO config ('tianji-ft configs list', METHOD ...+dpo/+orpo)"]
    if map_fn is None:
        return record_problems(record)
    if not isinstance(record, dict):
        return ["not a JSON object"]
    try:
        problem = conversation_problem(apply_map_fn(map_fn, record), input_optional=templated)
    except Exception as err:
        return [f"dataset_map_fn failed: {_one_line(err)}"]
    return [f"after dataset_map_fn, {problem}"] if problem else []


def is_preference_dataset(ds_cfg) -> bool:
    """Whether the config trains on preference pairs (XTuner's ``build_preference_dataset`` and its arguments)."""
    builder = ds_cfg.get("type")
    name = getattr(builder, "__name__", None) or str(builder)
    return name.endswith("build_preference_dataset") or "is_dpo" in ds_cfg or "is_reward" in ds_cfg


def preference_record_check(record, map_fn=None) -> list[str]:
    """What keeps ``record`` from preference training: the preference record check, after ``map_fn`` if set."""
    if map_fn is None and isinstance(record, dict) and "conversation" in record and not is_preference(record):
        return ["a conversation record in a preference (DPO/ORPO) config; it needs prompt/chosen/rejected pairs "
                "(tianji-ft synth pairs, or tianji-ft data convert to a preference kind)"]
    if map_fn is None:
        return preference_problems(record)
    if not isinstance(record, dict):
        return ["not a JSON object"]
    try:
        mapped = apply_map_fn(map_fn, record)
    except Exception as err:
        return [f"dataset_map_fn failed: {_one_line(err)}"]
    return [f"after dataset_map_fn, {p}" for p in preference_problems(mapped)]


def conversation_problem(record, input_optional: bool = False) -> str | None:
    """Why a mapped ``record`` is not in XTuner's conversation format (``check-custom-dataset``'s test), or None.

    ``input_optional``: a turn may lack 'input' (the template fills in an
    empty one), as XTuner's own map fns produce for tool-response turns.
    """
    if not isinstance(record, dict):
        return "not a JSON object"
    if "conversation" not in record:
        return f"no 'conversation' (fields: {', '.join(sorted(map(str, record))) or 'none'})"
    conversation = record["conversation"]
    if not isinstance(conversation, list):
        return f"'conversation' is {type(conversation).__name__}, not a list"
    if not conversation:
        return "'conversation' is empty (XTuner would drop the record silently)"
    for i, turn in enumerate(conversation, 1):
        if not isinstance(turn, dict):
            return f"turn {i} is {type(turn).__name__}, not an object"
        for key in ("input", "output"):
            if key == "input" and input_optional and turn.get(key) is None:
                continue
            if key not in turn:
                return f"turn {i} has no '{key}'"
            if not isinstance(turn[key], str):
                return f"turn {i} '{key}' is {type(turn[key]).__name__}, not a string"
        if turn.get("system") is not None and not isinstance(turn["system"], str):
            return f"turn {i} 'system' is {type(turn['system']).__name__}, not a string"
    return None


def resolve_map_fn(dataset_map_fn):
    """The callable behind a config's ``dataset_map_fn`` (a function, a MAP_FUNC name or a dotted path)."""
    if dataset_map_fn is None or callable(dataset_map_fn):
        return dataset_map_fn
    from mmengine.utils.misc import get_object_from_string
    from xtuner.registry import MAP_FUNC

    fn = MAP_FUNC.get(dataset_map_fn) or get_object_from_string(dataset_map_fn)
    if fn is None:
        raise UserError(f"dataset_map_fn {dataset_map_fn!r} is neither registered in XTuner's MAP_FUNC nor importable")
    return fn


def apply_map_fn(map_fn, record) -> dict:
    """``record`` after ``map_fn``, merged the way ``Dataset.map`` merges a returned dict."""
    return {**record, **map_fn(copy.deepcopy(record))}


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"
