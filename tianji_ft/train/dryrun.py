"""``tianji-ft train CONFIG --dry-run``: what training would see, without training.

Loads the config as training would (same TIANJI_* environment, same
``--cfg-options``), checks every record with the one training data check
(:mod:`tianji_ft.xtuner.datacheck`), then tokenizes and packs
through :func:`cached_process_hf_dataset`, so the real launch that follows
finds the packed dataset already cached.
"""

from __future__ import annotations

import copy
import itertools
import math

from tianji_ft.xtuner.datacheck import (apply_map_fn, check_training_data, environment, load_config,
                                        resolve_map_fn, source_records, train_dataset_config)
from tianji_ft.xtuner.dataset_cache import cached_process_hf_dataset

EXAMPLES = 2


def dry_run(config_path, env: dict, cfg_options: list[str], world_size: int | None = None) -> dict:
    """Resolve the config, check the data against it, count samples, packed rows, iterations and tokens.

    ``world_size`` defaults to ``env["WORLD_SIZE"]`` (1 when unset). Raises
    :class:`UserError` naming the first bad records when the data does not fit the config.
    """
    with environment(env):
        cfg = load_config(config_path, cfg_options)
        ds_cfg = train_dataset_config(cfg)
        checked = check_training_data(ds_cfg)
        from xtuner.registry import BUILDER

        tokenizer = BUILDER.build(ds_cfg["tokenizer"])
        examples = decoded_examples(list(itertools.islice(source_records(ds_cfg), EXAMPLES)), ds_cfg, tokenizer)
        packed = cached_process_hf_dataset(**{k: v for k, v in ds_cfg.items() if k != "type"})

    world_size = int(world_size or env.get("WORLD_SIZE") or 1)
    batch_size = int(cfg.train_dataloader.get("batch_size", 1))
    accumulate = int(cfg.get("optim_wrapper", {}).get("accumulative_counts", 1) or 1)
    iters = math.ceil(len(packed) / (batch_size * world_size))
    return {
        "config": str(config_path),
        "samples": checked.records,
        "packed_rows": len(packed),
        "iters_per_epoch": iters,
        "optimizer_steps_per_epoch": math.ceil(iters / accumulate),
        "tokens_per_epoch": int(sum(packed.length)),
        "max_length": int(ds_cfg["max_length"]),
        "batch_size": batch_size,
        "world_size": world_size,
        "accumulative_counts": accumulate,
        "problems": checked.problems,
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
