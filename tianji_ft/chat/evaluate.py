"""``tianji-ft eval``: answer a test set, score it, and compare with a base model.

Every prompt is answered in a fresh context (its own record's earlier turns
only), in padded batches, with the seed set before each batch so a rerun
gives the same answers. Writes ``answers.jsonl``, ``metrics.json`` and
``report.md`` (the two models' answers side by side with ``--compare``).
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass
from pathlib import Path

from tianji_ft.chat.engine import GenerationParams
from tianji_ft.chat.metrics import answer_metrics
from tianji_ft.chat.report import write_report
from tianji_ft.core.errors import UserError
from tianji_ft.core.fsio import atomic_open, write_json
from tianji_ft.core.outputs import Output, check_outputs, mark
from tianji_ft.core.progress import Progress

EVAL_KIND = "eval"


@dataclass
class EvalItem:
    id: str
    messages: list[dict]  # ends with the user turn to answer
    reference: str | None = None
    meta: dict | None = None  # the record's "meta" (style, scene, ...): the judge reports by style and scene

    @property
    def prompt(self) -> str:
        return self.messages[-1]["content"]


def _records(path: Path) -> list[tuple[int, dict]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" or text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); for a text file of "
                            "prompts, one per line, use --prompts") from None
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON list of records")
        return list(enumerate(data, 1))
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError as err:
                hint = "; a text file of prompts, one per line, goes to --prompts" if lineno == 1 else \
                    "; fix or drop the line"
                raise UserError(f"{path}:{lineno}: not valid JSON ({err.msg}){hint}") from None
    return rows


def load_test_data(path: str | Path) -> list[EvalItem]:
    """Conversation records (XTuner format): the last turn is asked, its output is the reference."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; pass the test split, e.g. data/medqa_split/test.jsonl")
    items = []
    for where, record in _records(path):
        turns = record.get("conversation") if isinstance(record, dict) else None
        if not turns or not all(isinstance(t, dict) and isinstance(t.get("input"), str) for t in turns):
            raise UserError(f"{path}:{where}: expected {{\"conversation\": [{{\"input\": ..., \"output\": ...}}]}}; "
                            "convert it with 'tianji-ft data convert'")
        messages = [{"role": "system", "content": turns[0]["system"]}] if turns[0].get("system") else []
        for turn in turns[:-1]:
            messages += [{"role": "user", "content": turn["input"]},
                         {"role": "assistant", "content": turn.get("output") or ""}]
        messages.append({"role": "user", "content": turns[-1]["input"]})
        meta = record.get("meta") if isinstance(record.get("meta"), dict) else None
        items.append(EvalItem(str(len(items) + 1), messages, turns[-1].get("output"), meta))
    if not items:
        raise UserError(f"{path}: no records")
    return items


def load_prompts(path: str | Path) -> list[EvalItem]:
    """One prompt per non-empty line; no references."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; pass a text file with one prompt per line")
    if path.suffix.lower() in (".json", ".jsonl"):
        raise UserError(f"{path}: --prompts takes a text file with one prompt per line; for conversation records "
                        "(with reference answers) use --data")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise UserError(f"{path}: no prompts")
    return [EvalItem(str(i), [{"role": "user", "content": line}]) for i, line in enumerate(lines, 1)]


def answer_all(engine, items: list[EvalItem], params: GenerationParams, batch_size: int = 8,
               label: str = "answering", quiet: bool = False) -> list:
    """Every item's reply, ``batch_size`` at a time; progress (prompts, tokens/s) on stderr unless ``quiet``."""
    replies = []
    tokens = 0
    with Progress(label, len(items), unit="prompts", quiet=quiet, interval=5.0,
                  note=lambda elapsed: f"{tokens / elapsed:,.1f} tokens/s") as progress:
        for start in range(0, len(items), batch_size):
            batch = engine.chat_batch([item.messages for item in items[start:start + batch_size]], params)
            tokens += sum(reply.completion_tokens for reply in batch)
            replies += batch
            progress.update(len(batch))
    return replies


def _run_model(model, items, params, batch_size, label, quiet=False, **engine_kwargs):
    from tianji_ft.chat.engine import ChatEngine

    engine = ChatEngine(model, **engine_kwargs)
    info = {"model": str(model), "adapter": engine_kwargs.get("adapter"), "template": engine.prompter.name,
            "template_source": engine.prompter.source, "system": engine.prompter.system}
    try:
        replies = answer_all(engine, items, params, batch_size, label, quiet)
    finally:
        engine.close()
        device = engine.device
        del engine
        gc.collect()  # free the first model before the second loads
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
    return info, replies


def evaluate(model: str, items: list[EvalItem], out_dir: str | Path, *, adapter: str | None = None,
             template: str = "auto", system: str | None = None, compare: str | None = None,
             compare_adapter: str | None = None, params: GenerationParams | None = None,
             batch_size: int = 8, bits: int | None = None, device: str = "auto",
             data_file: str | Path | None = None, overwrite: bool = False, quiet: bool = False,
             judge=None) -> dict:
    """``judge`` (a :class:`tianji_ft.chat.eval_judge.JudgeSpec`, with ``compare``): an LLM judges model vs base."""
    params = params or GenerationParams(temperature=0.0)
    out_dir = Path(out_dir)
    if judge is not None:
        if not compare:
            raise UserError("--judge compares two models' answers: pass --compare BASE_MODEL, or judge earlier "
                            "eval folders with --judge-answers")
        judge.endpoint.api_key()  # a missing key stops here, before any model loads
    check_outputs([("model", model), ("adapter", adapter), ("compared model", compare),
                   ("compared adapter", compare_adapter), ("test data", data_file)],
                  [Output(out_dir, "-o", kind=EVAL_KIND)], overwrite=overwrite)
    runs = {"model": (model, adapter)}
    if compare:
        runs["base"] = (compare, compare_adapter)
    results = {}
    for key, (path, adp) in runs.items():
        info, replies = _run_model(path, items, params, batch_size, f"answering ({key})", quiet=quiet, adapter=adp,
                                   template=template, system=system, bits=bits, device=device)
        info["metrics"] = answer_metrics([r.text for r in replies], [r.finish_reason for r in replies],
                                         [r.completion_tokens for r in replies], [i.reference for i in items])
        results[key] = (info, replies)

    out_dir.mkdir(parents=True, exist_ok=True)
    mark(out_dir, EVAL_KIND)
    with atomic_open(out_dir / "answers.jsonl") as fh:
        for n, item in enumerate(items):
            row = {"id": item.id, "prompt": item.prompt, "reference": item.reference}
            if len(item.messages) > 1:  # the system prompt and earlier turns, so a later --judge-answers sees them
                row["context"] = item.messages[:-1]
            if item.meta:
                row["meta"] = item.meta
            for key, (_, replies) in results.items():
                prefix = "" if key == "model" else "base_"
                reply = replies[n]
                row.update({f"{prefix}answer": reply.text, f"{prefix}finish_reason": reply.finish_reason,
                            f"{prefix}tokens": reply.completion_tokens})
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary = {key: info for key, (info, _) in results.items()}
    summary["settings"] = {"prompts": len(items), "batch_size": batch_size, **vars(params)}
    summary["settings"]["stop"] = list(params.stop)
    judged = None
    if judge is not None:
        from tianji_ft.chat.eval_judge import judge_replies

        judged = judge_replies(out_dir, items, results["model"][1], results["base"][1], judge)
        summary["judge"] = judged.summary
    write_json(out_dir / "metrics.json", summary)
    write_report(out_dir / "report.md", items, {k: v for k, v in results.items()}, summary["settings"], judge=judged)
    return summary
