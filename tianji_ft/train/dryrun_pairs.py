"""``train --dry-run`` for a preference config (DPO, ORPO): the pairs as XTuner's preference dataset reads them.

XTuner's ``build_preference_dataset`` lays each pair out with the tokenizer's
chat template and never packs without varlen attention, so a pair is one
iteration row of two sequences (chosen, rejected), each cut at
``max_length``. The report has the keys of :func:`tianji_ft.train.dryrun.data_report`.
"""

from __future__ import annotations

import math

from tianji_ft.xtuner.datacheck import apply_map_fn, resolve_map_fn, source_records

EXAMPLES = 2
SAMPLE = 5000  # pairs measured: all up to this many, else every k-th


def pairs_report(cfg, config_path, env: dict, ds_cfg, checked, world_size: int | None = None) -> dict:
    """Counts, tokens and truncation of the preference pairs the config trains on (data already checked)."""
    from xtuner.dataset.preference_dataset import tokenize
    from xtuner.registry import BUILDER
    from xtuner.utils import IGNORE_INDEX

    tokenizer = BUILDER.build(ds_cfg["tokenizer"])
    max_length = int(ds_cfg["max_length"])
    map_fn = resolve_map_fn(ds_cfg.get("dataset_map_fn"))
    step = max(1, math.ceil(checked.records / SAMPLE))
    trunc = {"max_length": max_length, "records": checked.records, "measured": 0, "every": step, "truncated": 0,
             "answer_tokens": 0, "answer_tokens_lost": 0, "dropped": 0, "longest": 0}
    tokens, examples = 0, []
    for i, (_, record) in enumerate(source_records(ds_cfg)):
        if i % step:
            continue
        pair = apply_map_fn(map_fn, record) if map_fn else record
        whole = tokenize(pair, tokenizer, max_length=2**31)  # uncut, to see what max_length cuts
        if len(examples) < EXAMPLES:
            examples.append(tokenizer.decode(whole["chosen_ids"]))
        trunc["measured"] += 1
        lost_all = cut = False
        for side in ("chosen", "rejected"):
            labels = whole[f"{side}_labels"]
            answer = sum(1 for t in labels if t != IGNORE_INDEX)
            lost = sum(1 for t in labels[max_length:] if t != IGNORE_INDEX)
            tokens += min(len(labels), max_length)
            trunc["longest"] = max(trunc["longest"], len(labels))
            trunc["answer_tokens"] += answer
            trunc["answer_tokens_lost"] += lost
            lost_all = lost_all or (answer > 0 and lost == answer)
            cut = cut or len(labels) > max_length
        trunc["truncated"] += int(cut)  # pairs with a side longer than max_length
        trunc["dropped"] += int(lost_all)  # a side with no answer left: the pair teaches nothing
    tokens_per_epoch = round(tokens * checked.records / max(1, trunc["measured"]))

    world_size = int(world_size or env.get("WORLD_SIZE") or 1)
    batch_size = int(cfg.train_dataloader.get("batch_size", 1))
    accumulate = int(cfg.get("optim_wrapper", {}).get("accumulative_counts", 1) or 1)
    iters = math.ceil(checked.records / (batch_size * world_size))
    return {
        "config": str(config_path),
        "samples": checked.records,
        "packed_rows": checked.records,
        "iters_per_epoch": iters,
        "optimizer_steps_per_epoch": math.ceil(iters / accumulate),
        "tokens_per_epoch": tokens_per_epoch,
        "max_length": max_length,
        "pack": False,
        "batch_size": batch_size,
        "world_size": world_size,
        "accumulative_counts": accumulate,
        "problems": checked.problems,
        "examples": examples,
        "truncation": trunc,
        "template_markers": {},
        "dataset_cache": None,
    }
