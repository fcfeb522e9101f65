"""Statistics of a converted file: sizes, length percentiles, empties, duplicates.

Lengths are per record, all turns' system + input + output together, in
characters (and in tokens when a tokenizer is given: transformers is
imported only then). ``plot_lengths`` draws a histogram with matplotlib's
Agg backend (imported only then), as one of :data:`PLOT_SUFFIXES`.

Records with problems (:func:`~tianji_ft.data.schema.record_problems`, a
lone surrogate included) are counted as ``invalid_records``; their lengths
still count.

A file of preference records (:mod:`tianji_ft.data.preference`) gets its own
counts: user turns per prompt, prompt/chosen/rejected lengths, pairs whose two
answers are the same, pairs whose chosen answer is the longer one (DPO learns
length as readily as quality), duplicate pairs and pairs for a prompt seen
before. A file mixing both formats is refused in one line.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tianji_ft.data.dedupe import exact_key, preference_key, prompt_key
from tianji_ft.data.preference import PREFERENCE, mixed_error, preference_problems, record_kind, sniff
from tianji_ft.data.reader import check_encoding, iter_records
from tianji_ft.data.schema import _SURROGATE, record_problems, show
from tianji_ft.core.errors import UserError

PERCENTILES = (50, 90, 95, 99)
PLOT_SUFFIXES = (".png", ".svg", ".pdf", ".jpg", ".jpeg")


def check_plot_path(path: str | Path) -> Path:
    """``path`` when its suffix names an image type the plot can be written as; else a one-line error."""
    path = Path(path)
    if path.suffix.lower() not in PLOT_SUFFIXES:
        got = f"'{show(path.suffix)}'" if path.suffix else "no suffix"
        raise UserError(f"--plot {path}: unsupported image type ({got}); end the name in "
                        + ", ".join(PLOT_SUFFIXES[:-1]) + f" or {PLOT_SUFFIXES[-1]}")
    return path


def percentiles(values, points=PERCENTILES) -> dict:
    """Nearest-rank percentiles plus min, mean and max (all 0 for no values)."""
    ordered = sorted(values)
    if not ordered:
        return {"min": 0, "mean": 0, **{f"p{p}": 0 for p in points}, "max": 0}
    n = len(ordered)
    out: dict[str, Any] = {"min": ordered[0], "mean": round(sum(ordered) / n, 1)}
    for p in points:
        out[f"p{p}"] = ordered[max(math.ceil(p / 100 * n) - 1, 0)]
    out["max"] = ordered[-1]
    return out


def _record_text(record: Any) -> str:
    turns = record.get("conversation") if isinstance(record, dict) else None
    if not isinstance(turns, list):
        return ""
    return "\n".join(str(t.get(k, "")) for t in turns if isinstance(t, dict) for k in ("system", "input", "output")
                     if t.get(k))


@dataclass
class DatasetStats:
    summary: dict  # JSON-ready: counts and percentiles
    chars: array  # characters per record
    tokens: array | None  # tokens per record, when a tokenizer was given


def dataset_stats(path: str | Path, tokenizer: str | None = None, encoding: str = "utf-8",
                  batch: int = 512) -> DatasetStats:
    """Counts and length distributions of one converted file."""
    check_encoding(encoding)
    kind, first = sniff(path, encoding)
    if kind == PREFERENCE:
        return _preference_stats(path, first, tokenizer, encoding, batch)
    chars = array("l")
    tokens = array("l")
    turns_per_record = array("l")
    empty = {"system": 0, "input": 0, "output": 0}
    seen: set[bytes] = set()
    duplicates = invalid = 0
    tok = _load_tokenizer(tokenizer) if tokenizer else None
    pending: list[str] = []
    for index, record in iter_records(path, encoding):
        if record_problems(record):
            invalid += 1
            if record_kind(record) == PREFERENCE:
                raise mixed_error(path, index, PREFERENCE, "conversation", first)
        key = exact_key(record)
        duplicates += key in seen
        seen.add(key)
        turns = record.get("conversation") if isinstance(record, dict) else None
        turns = turns if isinstance(turns, list) else []
        turns_per_record.append(len(turns))
        for turn in turns:
            if isinstance(turn, dict):
                for k in empty:
                    if k in turn and not str(turn[k]).strip():
                        empty[k] += 1
        text = _record_text(record)
        chars.append(len(text))
        if tok is not None:
            pending.append(_SURROGATE.sub("\ufffd", text))  # tokenizers take Unicode only
            if len(pending) >= batch:
                tokens.extend(_count_tokens(tok, pending))
                pending.clear()
    if tok is not None and pending:
        tokens.extend(_count_tokens(tok, pending))
    stats = {
        "file": str(path),
        "records": len(chars),
        "turns": int(sum(turns_per_record)),
        "turns_per_record": percentiles(turns_per_record),
        "chars": percentiles(chars),
        "empty_fields": empty,
        "exact_duplicates": duplicates,
        "invalid_records": invalid,
    }
    if tok is not None:
        stats["tokens"] = percentiles(tokens)
    return DatasetStats(stats, chars, tokens if tok is not None else None)


def _text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    return "\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in messages)


def _preference_stats(path: str | Path, first: int | None, tokenizer: str | None, encoding: str,
                      batch: int) -> DatasetStats:
    parts = ("prompt", "chosen", "rejected")
    chars = {part: array("l") for part in parts}
    tokens = {part: array("l") for part in parts}
    user_turns = array("l")
    counts = dict.fromkeys(("with_system", "identical_answers", "chosen_longer", "exact_duplicates",
                            "same_prompt", "invalid_records"), 0)
    seen: set[bytes] = set()
    prompts: set[bytes] = set()
    tok = _load_tokenizer(tokenizer) if tokenizer else None
    pending: list[str] = []
    for index, record in iter_records(path, encoding):
        kind = record_kind(record)
        if kind is not None and kind != PREFERENCE:
            raise mixed_error(path, index, kind, PREFERENCE, first)
        counts["invalid_records"] += bool(preference_problems(record))
        key, pkey = preference_key(record), prompt_key(record)  # the keys dedupe uses
        record = record if isinstance(record, dict) else {}
        counts["exact_duplicates"] += key in seen
        if pkey is not None and key not in seen:
            counts["same_prompt"] += pkey in prompts
            prompts.add(pkey)
        seen.add(key)
        prompt = record.get("prompt") if isinstance(record.get("prompt"), list) else []
        user_turns.append(sum(isinstance(m, dict) and m.get("role") == "user" for m in prompt))
        counts["with_system"] += any(isinstance(m, dict) and m.get("role") == "system" for m in prompt)
        texts = [_text(record.get(part)) for part in parts]
        for part, text in zip(parts, texts):
            chars[part].append(len(text))
        chosen = record.get("chosen")
        counts["identical_answers"] += chosen is not None and chosen == record.get("rejected")
        counts["chosen_longer"] += len(texts[1]) > len(texts[2])
        if tok is not None:
            pending.extend(_SURROGATE.sub("\ufffd", text) for text in texts)
            if len(pending) >= batch * 3:
                _spread(_count_tokens(tok, pending), tokens)
                pending.clear()
    if tok is not None and pending:
        _spread(_count_tokens(tok, pending), tokens)
    total = array("l", map(sum, zip(*chars.values())))
    stats: dict[str, Any] = {"file": str(path), "format": PREFERENCE, "records": len(total),
                             "prompt_turns": percentiles(user_turns), "chars": percentiles(total),
                             **{f"{part}_chars": percentiles(chars[part]) for part in parts}}
    token_total = None
    if tok is not None:
        token_total = array("l", map(sum, zip(*tokens.values())))
        stats["tokens"] = percentiles(token_total)
        stats.update({f"{part}_tokens": percentiles(tokens[part]) for part in parts})
    stats.update(counts)
    return DatasetStats(stats, total, token_total)


def _spread(counts: list[int], into: dict) -> None:
    """Token counts of (prompt, chosen, rejected) triples into the three arrays."""
    for i, part in enumerate(into):
        into[part].extend(counts[i::3])


def _load_tokenizer(path: str):
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise UserError("--tokenizer needs transformers; install it (pip install transformers)") from None
    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot load a tokenizer: {str(err).splitlines()[0]}") from None


def _count_tokens(tok, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]


def plot_lengths(stats: DatasetStats, out: str | Path) -> Path:
    """Write a length histogram (characters, and tokens when counted) to ``out``."""
    out = check_plot_path(out)
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and no GUI toolkit import
    import matplotlib.pyplot as plt

    from tianji_ft.core.fsio import atomic_open

    series = [(name, values) for name, values in (("chars", stats.chars), ("tokens", stats.tokens))
              if values is not None]
    summary = stats.summary
    fig, axes = plt.subplots(1, len(series), figsize=(6 * len(series), 4), squeeze=False)
    for ax, (name, values) in zip(axes[0], series):
        ax.hist(list(values), bins=min(50, max(len(values), 1)), color="#4c72b0")
        ax.set_xlabel(f"{name} per record")
        ax.set_ylabel("records")
        ax.set_title(f"{Path(summary['file']).name}: {name} (p50 {summary[name]['p50']}, p99 {summary[name]['p99']})")
    fig.tight_layout()
    try:
        with atomic_open(out, "wb") as fh:
            fig.savefig(fh, format=out.suffix.lower().lstrip("."))
    finally:
        plt.close(fig)
    return out


def format_stats(stats: dict) -> str:
    """A short human-readable report."""
    if stats.get("format") == PREFERENCE:
        return _format_preference(stats)
    lines = [f"{stats['file']}: {stats['records']} records, {stats['turns']} turns"]
    for name in ("turns_per_record", "chars", "tokens"):
        if name in stats:
            lines.append(f"  {name:17} " + "  ".join(f"{k} {v}" for k, v in stats[name].items()))
    lines.append("  empty fields      " + "  ".join(f"{k} {v}" for k, v in stats["empty_fields"].items()))
    lines.append(f"  exact duplicates  {stats['exact_duplicates']}")
    lines.append(f"  invalid records   {stats['invalid_records']}")
    return "\n".join(lines)


def _format_preference(stats: dict) -> str:
    n = stats["records"]
    lines = [f"{stats['file']}: {n} preference records (prompt, chosen, rejected)"]
    for name in ("prompt_turns", "prompt_chars", "chosen_chars", "rejected_chars", "chars", "prompt_tokens",
                 "chosen_tokens", "rejected_tokens", "tokens"):
        if name in stats:
            lines.append(f"  {name:17} " + "  ".join(f"{k} {v}" for k, v in stats[name].items()))
    share = f" ({stats['chosen_longer'] / n:.0%})" if n else ""
    lines += [f"  with system       {stats['with_system']}",
              f"  chosen longer     {stats['chosen_longer']}{share}",
              f"  same answers      {stats['identical_answers']}",
              f"  exact duplicates  {stats['exact_duplicates']}",
              f"  same prompt       {stats['same_prompt']} (other pairs for a prompt seen before)",
              f"  invalid records   {stats['invalid_records']}"]
    return "\n".join(lines)
