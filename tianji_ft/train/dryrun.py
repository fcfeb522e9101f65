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
import sys

from tianji_ft.core import noise
from tianji_ft.xtuner.datacheck import (apply_map_fn, check_training_data, environment, is_preference_dataset,
                                        load_config, resolve_map_fn, source_records, train_dataset_config)
from tianji_ft.xtuner.dataset_cache import cached_process_hf_dataset

EXAMPLES = 2
# Records measured for truncation: all up to this many, else every k-th.
TRUNCATION_SAMPLE = 5000


def dry_run(config_path, env: dict, cfg_options: list[str], world_size: int | None = None) -> dict:
    """Resolve the config, check the data against it, count samples, packed rows, iterations and tokens.

    ``world_size`` defaults to ``env["WORLD_SIZE"]`` (1 when unset). Raises
    :class:`UserError` naming the first bad records when the data does not fit the config.
    """
    with environment(env):
        cfg = load_config(config_path, cfg_options)
        return data_report(cfg, config_path, env, world_size)


def data_report(cfg, config_path, env: dict, world_size: int | None = None) -> dict:
    """:func:`dry_run` for a config already loaded (call it inside :func:`environment` of ``env``)."""
    noise.quiet_mmengine()  # the report says what matters; -v shows mmengine's and XTuner's own lines
    ds_cfg = train_dataset_config(cfg)
    checked = check_training_data(ds_cfg)
    if is_preference_dataset(ds_cfg):  # DPO, ORPO: pairs, unpacked, laid out by XTuner's preference dataset
        from tianji_ft.train.dryrun_pairs import pairs_report

        return pairs_report(cfg, config_path, env, ds_cfg, checked, world_size)
    from xtuner.registry import BUILDER

    tokenizer = BUILDER.build(ds_cfg["tokenizer"])
    encode = record_encoder(ds_cfg, tokenizer)
    examples = [tokenizer.decode(encode(record)["input_ids"])
                for _, record in itertools.islice(source_records(ds_cfg), EXAMPLES)]
    truncation = truncation_report(ds_cfg, tokenizer, checked.records)
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
        "pack": bool(ds_cfg.get("pack_to_max_length", True)),
        "batch_size": batch_size,
        "world_size": world_size,
        "accumulative_counts": accumulate,
        "problems": checked.problems,
        "examples": examples,
        "truncation": truncation,
        "template_markers": template_markers(ds_cfg, tokenizer),
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


def record_encoder(ds_cfg, tokenizer, max_length: int | None = None):
    """``record -> {"input_ids", "labels"}`` as XTuner encodes it: mapped, templated, then
    ``xtuner.dataset.utils.encode_fn`` (``max_length`` defaults to the config's)."""
    from xtuner.dataset.utils import encode_fn
    from xtuner.registry import BUILDER

    map_fn = resolve_map_fn(ds_cfg.get("dataset_map_fn"))
    template_fn = ds_cfg.get("template_map_fn")
    if hasattr(template_fn, "keys"):
        template_fn = BUILDER.build(template_fn)
    limit = int(ds_cfg["max_length"]) if max_length is None else max_length
    with_output = ds_cfg.get("input_ids_with_output", True)

    def encode(record) -> dict:
        record = apply_map_fn(map_fn, record) if map_fn else copy.deepcopy(record)
        if template_fn is not None:
            record = {**record, **template_fn(record)}
        return encode_fn(record, tokenizer, limit, input_ids_with_output=with_output)

    return encode


def decoded_examples(records: list[tuple[str, object]], ds_cfg, tokenizer) -> list[str]:
    """The first records as the model will read them: mapped, templated, tokenized, decoded."""
    encode = record_encoder(ds_cfg, tokenizer)
    return [tokenizer.decode(encode(record)["input_ids"]) for _, record in records]


def template_markers(ds_cfg, tokenizer) -> dict[str, bool]:
    """The training template's stop words and suffix: is each one token of this tokenizer?

    A chat template's markers are the model's own special tokens; when the
    tokenizer splits one into pieces, the template was written for another family.
    """
    template = (ds_cfg.get("template_map_fn") or {}).get("template") if hasattr(
        ds_cfg.get("template_map_fn"), "get") else None
    if not hasattr(template, "get"):
        return {}
    words = [*(template.get("STOP_WORDS") or []), template.get("SUFFIX") or ""]
    unk = getattr(tokenizer, "unk_token_id", None)
    found = {}
    for word in dict.fromkeys(w for w in words if w and w.strip()):
        token_id = tokenizer.convert_tokens_to_ids(word)
        found[word] = token_id is not None and token_id != unk and tokenizer.convert_ids_to_tokens(token_id) == word
    return found


def truncation_report(ds_cfg, tokenizer, records: int, sample: int = TRUNCATION_SAMPLE) -> dict:
    """What ``max_length`` cuts: records longer than it, answer (label) tokens past it, and records
    left with no answer at all (XTuner drops those).

    Every record is encoded whole (XTuner's ``encode_fn`` truncates by keeping
    the first ``max_length`` tokens, so the cut is what lies past that); above
    ``sample`` records, every k-th is measured and the report says so.
    """
    from xtuner.utils import IGNORE_INDEX

    max_length = int(ds_cfg["max_length"])
    encode = record_encoder(ds_cfg, tokenizer, max_length=sys.maxsize)
    step = max(1, math.ceil(records / sample))
    out = {"max_length": max_length, "records": records, "measured": 0, "every": step, "truncated": 0,
           "answer_tokens": 0, "answer_tokens_lost": 0, "dropped": 0, "longest": 0}
    for i, (_, record) in enumerate(source_records(ds_cfg)):
        if i % step:
            continue
        try:
            encoded = encode(record)
        except Exception:  # the data check has named every record that cannot be trained on
            continue
        labels = encoded["labels"]
        answer = sum(1 for t in labels if t != IGNORE_INDEX)
        lost = sum(1 for t in labels[max_length:] if t != IGNORE_INDEX)
        out["measured"] += 1
        out["longest"] = max(out["longest"], len(labels))
        out["answer_tokens"] += answer
        if len(labels) > max_length:
            out["truncated"] += 1
            out["answer_tokens_lost"] += lost
            out["dropped"] += int(answer > 0 and lost == answer)
    return out
