"""``tianji-ft train CONFIG --dry-run``: what training would see, without training.

Loads the config as training would (same TIANJI_* environment, same
``--cfg-options``), checks every record the way XTuner's
``check-custom-dataset`` checks its first few, then tokenizes and packs
through :func:`cached_process_hf_dataset`, so the real launch that follows
finds the packed dataset already cached.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
from pathlib import Path
from typing import Iterator

from tianji_ft.configs.dataset_cache import cached_process_hf_dataset, resolve_data_files
from tianji_ft.utils.errors import UserError

PROBLEMS_SHOWN = 3
EXAMPLES = 2


def dry_run(config_path, env: dict, cfg_options: list[str], world_size: int | None = None) -> dict:
    """Resolve the config, check the data against it, count samples, packed rows, iterations and tokens.

    ``world_size`` defaults to ``env["WORLD_SIZE"]`` (1 when unset). Raises
    :class:`UserError` naming the first bad records when the data does not fit the config.
    """
    with _environment(env):
        cfg = load_config(config_path, cfg_options)
        ds_cfg = train_dataset_config(cfg)
        from xtuner.registry import BUILDER

        tokenizer = BUILDER.build(ds_cfg["tokenizer"])
        records = list(source_records(ds_cfg))
        if ds_cfg.get("max_dataset_length") is not None:
            records = records[: int(ds_cfg["max_dataset_length"])]
        problems = check_records(records, ds_cfg.get("dataset_map_fn"), ds_cfg.get("template_map_fn") is not None)
        if problems:
            raise UserError(problem_line(problems))
        examples = decoded_examples(records[:EXAMPLES], ds_cfg, tokenizer)
        packed = cached_process_hf_dataset(**{k: v for k, v in ds_cfg.items() if k != "type"})

    world_size = int(world_size or env.get("WORLD_SIZE") or 1)
    batch_size = int(cfg.train_dataloader.get("batch_size", 1))
    accumulate = int(cfg.get("optim_wrapper", {}).get("accumulative_counts", 1) or 1)
    iters = math.ceil(len(packed) / (batch_size * world_size))
    return {
        "config": str(config_path),
        "samples": len(records),
        "packed_rows": len(packed),
        "iters_per_epoch": iters,
        "optimizer_steps_per_epoch": math.ceil(iters / accumulate),
        "tokens_per_epoch": int(sum(packed.length)),
        "max_length": int(ds_cfg["max_length"]),
        "batch_size": batch_size,
        "world_size": world_size,
        "accumulative_counts": accumulate,
        "problems": problems,
        "examples": examples,
        "dataset_cache": getattr(packed, "tianji_cache", None),
    }


def format_report(result: dict) -> str:
    """The dry run's findings as the lines ``tianji-ft train --dry-run`` prints."""
    cache = result.get("dataset_cache") or {}
    lines = [
        f"config: {result['config']}",
        f"samples: {result['samples']}",
        f"packed rows: {result['packed_rows']} (max_length {result['max_length']})",
        f"iterations per epoch: {result['iters_per_epoch']} "
        f"(batch {result['batch_size']} x {result['world_size']} process(es))",
        f"optimizer steps per epoch: {result['optimizer_steps_per_epoch']} "
        f"(accumulating {result['accumulative_counts']})",
        f"tokens per epoch: {result['tokens_per_epoch']}",
    ]
    if cache:
        lines.append(f"tokenized dataset: {'reused' if cache.get('hit') else 'built and cached'} ({cache.get('path')})")
    for i, text in enumerate(result["examples"], 1):
        lines += [f"--- example {i} ---", text.rstrip()]
    return "\n".join(lines)


# ------------------------------------------------------------------ config

@contextlib.contextmanager
def _environment(env: dict) -> Iterator[None]:
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
    """(where, record) for every training record, in the order XTuner reads them.

    Local JSON/JSONL files are read directly so a record is named by file
    and line (and a malformed line is reported, not fatal to the check);
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
    for i, row in enumerate(dataset, 1):
        yield f"record {i}", row


class BadJson:
    """Stands in for a record that is not valid JSON; ``check_records`` reports it."""

    def __init__(self, message: str):
        self.message = message


def json_file_records(path: Path, field: str | None = None) -> Iterator[tuple[str, object]]:
    text = path.read_text(encoding="utf-8-sig")
    if field or text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            yield f"{path}:{err.lineno}", BadJson(f"invalid JSON ({err.msg})")
            return
        if field:
            data = data.get(field) if isinstance(data, dict) else None
            if not isinstance(data, list):
                yield str(path), BadJson(f"no list under field {field!r}")
                return
        for i, record in enumerate(data if isinstance(data, list) else [data]):
            yield f"{path}[{i}]", record
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{lineno}", json.loads(line)
        except json.JSONDecodeError as err:
            yield f"{path}:{lineno}", BadJson(f"invalid JSON ({err.msg} at column {err.colno})")


def conversation_problem(record, input_optional: bool = False) -> str | None:
    """Why ``record`` is not in XTuner's conversation format (``check-custom-dataset``'s test), or None.

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


def check_records(records: list[tuple[str, object]], dataset_map_fn=None, templated: bool = True) -> list[str]:
    """``where: what`` for every record that XTuner would reject or silently drop, in file order.

    ``templated``: a template_map_fn runs after the map fn (it supplies
    missing inputs).
    """
    map_fn = resolve_map_fn(dataset_map_fn)
    parsed = [r for _, r in records if not isinstance(r, BadJson)]
    if map_fn is not None and parsed and all(conversation_problem(r) is None for r in parsed):
        return ["dataset_map_fn is set but every record is already in XTuner's conversation format; "
                "set dataset_map_fn=None"]
    problems = []
    for where, record in records:
        if isinstance(record, BadJson):
            problems.append(f"{where}: {record.message}")
        elif map_fn is None:
            problem = conversation_problem(record)
            if problem:
                hint = isinstance(record, dict) and "conversation" not in record
                problems.append(f"{where}: {problem}" + ("; convert the data or set dataset_map_fn" if hint else ""))
        elif not isinstance(record, dict):
            problems.append(f"{where}: not a JSON object")
        else:
            try:
                problem = conversation_problem(apply_map_fn(map_fn, record), input_optional=templated)
            except Exception as err:
                problems.append(f"{where}: dataset_map_fn failed: {_one_line(err)}")
                continue
            if problem:
                problems.append(f"{where}: after dataset_map_fn, {problem}")
    return problems


def problem_line(problems: list[str]) -> str:
    shown = "; ".join(problems[:PROBLEMS_SHOWN])
    rest = len(problems) - PROBLEMS_SHOWN
    more = f" (and {rest} more)" if rest > 0 else ""
    return f"{len(problems)} bad record(s) in the training data: {shown}{more}"


def decoded_examples(records: list[tuple[str, object]], ds_cfg, tokenizer) -> list[str]:
    """The first records as the model will read them: mapped, templated, tokenized, decoded."""
    from xtuner.dataset.utils import encode_fn
    from xtuner.registry import BUILDER

    map_fn = resolve_map_fn(ds_cfg.get("dataset_map_fn"))
    template_fn = ds_cfg.get("template_map_fn")
    if hasattr(template_fn, "keys"):
        template_fn = BUILDER.build(template_fn)
    examples = []
    for _, record in records:
        record = apply_map_fn(map_fn, record) if map_fn else copy.deepcopy(record)
        if template_fn is not None:
            record = {**record, **template_fn(record)}
        encoded = encode_fn(record, tokenizer, int(ds_cfg["max_length"]),
                            input_ids_with_output=ds_cfg.get("input_ids_with_output", True))
        examples.append(tokenizer.decode(encoded["input_ids"]))
    return examples


def _one_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"
