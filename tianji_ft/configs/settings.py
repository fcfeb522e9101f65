"""The run settings every config in ``xtuner_configs`` reads from the environment.

One list serves both ways of running a config: ``xtuner train
xtuner_configs/X.py`` reads the environment variables directly, and our own
commands map their flags onto the same variables (``env_from_values``), so a
flag and its variable can never mean different things.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping


@dataclass(frozen=True)
class Setting:
    flag: str  # command-line flag, e.g. "--max-length"
    env: str  # environment variable the config reads, e.g. "TIANJI_MAX_LENGTH"
    kind: str  # "str" | "paths" | "int" | "float" | "json_list" | "bool"
    help: str
    var: str  # the config variable it sets, e.g. "max_length"

    @property
    def dest(self) -> str:
        """The argparse attribute name for ``flag``."""
        return self.flag.lstrip("-").replace("-", "_")

    def to_env(self, value: Any) -> str:
        """Encode a Python value the way the config decodes it."""
        if self.kind == "paths":
            items = [value] if isinstance(value, (str, os.PathLike)) else list(value)
            return os.pathsep.join(os.fspath(p) for p in items)
        if self.kind == "json_list":
            items = [value] if isinstance(value, str) else list(value)
            return json.dumps([str(v) for v in items], ensure_ascii=False)
        if self.kind == "bool":
            return "1" if value else "0"
        return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


SETTINGS: tuple[Setting, ...] = (
    Setting("--model", "TIANJI_MODEL", "str", "model folder (or hub id) for tokenizer, model and evaluation hook", "pretrained_model_name_or_path"),
    Setting("--data", "TIANJI_DATA", "paths", "training data file(s), .json/.jsonl, local only", "data_files"),
    Setting("--work-dir", "TIANJI_WORK_DIR", "str", "where checkpoints and logs go (default: work_dirs/CONFIG_NAME)", "work_dir"),
    Setting("--epochs", "TIANJI_EPOCHS", "int", "passes over the data", "max_epochs"),
    Setting("--batch-size", "TIANJI_BATCH_SIZE", "int", "samples per GPU per step", "batch_size"),
    Setting("--accum", "TIANJI_ACCUM", "int", "gradient accumulation steps", "accumulative_counts"),
    Setting("--max-length", "TIANJI_MAX_LENGTH", "int", "tokens per sample (packed sample when packing)", "max_length"),
    Setting("--lr", "TIANJI_LR", "float", "peak learning rate", "lr"),
    Setting("--system", "TIANJI_SYSTEM", "str", "system prompt used by the evaluation hook", "SYSTEM"),
    Setting("--eval-prompts", "TIANJI_EVAL_PROMPTS", "json_list", "prompts the evaluation hook answers during training", "evaluation_inputs"),
    Setting("--save-steps", "TIANJI_SAVE_STEPS", "int", "save a checkpoint every N iterations", "save_steps"),
    Setting("--save-total-limit", "TIANJI_SAVE_TOTAL_LIMIT", "int", "checkpoints kept (-1: all)", "save_total_limit"),
    Setting("--eval-freq", "TIANJI_EVAL_FREQ", "int", "run the evaluation prompts every N iterations", "evaluation_freq"),
    Setting("--eval-max-new-tokens", "TIANJI_EVAL_MAX_NEW_TOKENS", "int", "longest answer the evaluation hook generates", "evaluation_max_new_tokens"),
    Setting("--warmup-ratio", "TIANJI_WARMUP_RATIO", "float", "fraction of training spent warming up the learning rate (0: none)", "warmup_ratio"),
    Setting("--seed", "TIANJI_SEED", "int", "random seed (data order, packing, initialisation)", "seed"),
    Setting("--pack", "TIANJI_PACK", "bool", "pack short samples into max_length sequences", "pack_to_max_length"),
    Setting("--report-to", "TIANJI_REPORT_TO", "str", "experiment tracking: none, tensorboard, wandb, or tensorboard,wandb",
            "report_to"),
)

BY_ENV: dict[str, Setting] = {s.env: s for s in SETTINGS}
BY_DEST: dict[str, Setting] = {s.dest: s for s in SETTINGS}


def add_arguments(parser: argparse.ArgumentParser, settings: Iterable[Setting] = SETTINGS) -> None:
    """Add one optional flag per setting; unset flags stay ``None`` (the config's default)."""
    group = parser.add_argument_group("config settings (default: the config's own value; same as the TIANJI_* variables)")
    for s in settings:
        help_text = f"{s.help} [{s.env}]"
        if s.kind == "bool":
            group.add_argument(s.flag, dest=s.dest, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif s.kind in ("paths", "json_list"):
            group.add_argument(s.flag, dest=s.dest, nargs="+", default=None, metavar="X", help=help_text)
        else:
            py_type = {"int": int, "float": float}.get(s.kind, str)
            group.add_argument(s.flag, dest=s.dest, type=py_type, default=None, metavar="X", help=help_text)


def env_from_values(values: Mapping[str, Any] | argparse.Namespace) -> dict[str, str]:
    """Environment variables for the settings given (by flag dest) and not ``None``."""
    if isinstance(values, argparse.Namespace):
        values = vars(values)
    return {s.env: s.to_env(values[s.dest]) for s in SETTINGS if values.get(s.dest) is not None}
