"""``tianji-ft eval --judge``: an LLM compares two models' answers to the same prompts.

Model A is this run's model (or the first eval folder), model B the
``--compare`` model (or the second folder, or the first folder's base
answers). The judge's verdicts go to ``judgments.jsonl``; its rates to
``metrics.json`` under ``judge`` and to ``report.md``, beside the other metrics.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from tianji_ft.chat.engine import Reply
from tianji_ft.chat.evaluate import EVAL_KIND, EvalItem
from tianji_ft.chat.report import write_report
from tianji_ft.core.errors import UserError
from tianji_ft.core.fsio import atomic_open, write_json
from tianji_ft.core.outputs import Output, check_outputs, mark
from tianji_ft.synth.judge import JudgeEndpoint, JudgePair, JudgeResult, judge_pairs
from tianji_ft.synth.rubric import Rubric, load_rubric

JUDGMENTS_FILE = "judgments.jsonl"


@dataclass
class JudgeSpec:
    endpoint: JudgeEndpoint
    rubric: str = "auto"  # a shipped rubric's name, a rubric file, or auto: wishes when the prompts carry a style


def pick_rubric(name: str, items: list[EvalItem]) -> Rubric:
    if name == "auto":
        name = "wishes" if any((i.meta or {}).get("style") for i in items) else "generic"
    return load_rubric(name)


def judge_replies(out_dir: Path, items: list[EvalItem], replies_a: list[Reply], replies_b: list[Reply],
                  spec: JudgeSpec, err=None) -> JudgeResult:
    """Judge A's against B's answer for every item; the journal lives in ``out_dir``."""
    pairs = [JudgePair(item.id, item.messages, a.text, b.text, dict(item.meta or {}))
             for item, a, b in zip(items, replies_a, replies_b)]
    result = judge_pairs(pairs, pick_rubric(spec.rubric, items), spec.endpoint, out_dir, err=err or sys.stderr)
    with atomic_open(out_dir / JUDGMENTS_FILE) as fh:
        for pair in pairs:
            row = {"id": pair.id, "outcome": result.summary["outcomes"][pair.id]}
            for order, entry in result.verdicts[pair.id].items():
                row[order] = {k: entry.get(k) for k in ("status", "winner", "reason")}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return result


# ------------------------------------------------------------------ earlier eval folders

def _read_folder(folder: Path) -> tuple[list[dict], dict]:
    answers, metrics = folder / "answers.jsonl", folder / "metrics.json"
    for path in (answers, metrics):
        if not path.is_file():
            raise UserError(f"{path}: not found; --judge-answers takes folders written by 'tianji-ft eval'")
    rows = []
    for lineno, line in enumerate(answers.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{answers}:{lineno}: not valid JSON ({exc.msg}); rerun that eval") from None
            if not isinstance(row, dict) or not isinstance(row.get("answer"), str):
                raise UserError(f"{answers}:{lineno}: no 'answer'; rerun that eval")
            rows.append(row)
    return rows, json.loads(metrics.read_text(encoding="utf-8"))


def _item(row: dict) -> EvalItem:
    messages = list(row.get("context") or []) + [{"role": "user", "content": row["prompt"]}]
    return EvalItem(str(row["id"]), messages, row.get("reference"), row.get("meta"))


def _reply(row: dict, prefix: str) -> Reply:
    return Reply(row[f"{prefix}answer"], row.get(f"{prefix}finish_reason") or "stop", 0, row.get(f"{prefix}tokens") or 0)


def load_answer_folders(folders: list[Path]) -> tuple[list[EvalItem], dict]:
    """Items and {"model": (info, replies), "base": (info, replies)} from one folder with base answers or two."""
    if len(folders) not in (1, 2):
        raise UserError("--judge-answers takes one eval folder (made with --compare) or two")
    rows_a, metrics_a = _read_folder(folders[0])
    if len(folders) == 1:
        if not all(isinstance(r.get("base_answer"), str) for r in rows_a):
            raise UserError(f"{folders[0]}/answers.jsonl has no base answers; pass a second eval folder, "
                            "or an eval made with --compare")
        return [_item(r) for r in rows_a], {"model": (metrics_a["model"], [_reply(r, "") for r in rows_a]),
                                            "base": (metrics_a["base"], [_reply(r, "base_") for r in rows_a])}
    rows_b, metrics_b = _read_folder(folders[1])
    by_id = {str(r["id"]): r for r in rows_b}
    for row in rows_a:
        other = by_id.get(str(row["id"]))
        if other is None or other.get("prompt") != row.get("prompt") or other.get("context") != row.get("context"):
            raise UserError(f"{folders[0]} and {folders[1]} answered different prompts (prompt {row['id']} differs "
                            "or is missing); judge evals of the same --data or --prompts")
    if len(rows_b) != len(rows_a):
        raise UserError(f"{folders[1]} has {len(rows_b)} answers, {folders[0]} {len(rows_a)}; judge evals of the same prompts")
    items = [_item(r) for r in rows_a]
    return items, {"model": (metrics_a["model"], [_reply(r, "") for r in rows_a]),
                   "base": (metrics_b["model"], [_reply(by_id[i.id], "") for i in items])}


def judge_answer_folders(folders: list[str | Path], out_dir: str | Path, spec: JudgeSpec,
                         overwrite: bool = False, err=None) -> dict:
    """Judge the answers of earlier evals; write answers.jsonl, metrics.json, report.md, judgments.jsonl."""
    folders, out_dir = [Path(f) for f in folders], Path(out_dir)
    spec.endpoint.api_key()
    check_outputs([(f"eval folder {n}", f) for n, f in enumerate(folders, 1)],
                  [Output(out_dir, "-o", kind=EVAL_KIND)], overwrite=overwrite)
    items, results = load_answer_folders(folders)
    out_dir.mkdir(parents=True, exist_ok=True)
    mark(out_dir, EVAL_KIND)
    with atomic_open(out_dir / "answers.jsonl") as fh:
        for n, item in enumerate(items):
            row = {"id": item.id, "prompt": item.prompt, "reference": item.reference}
            for key, prefix in (("model", ""), ("base", "base_")):
                reply = results[key][1][n]
                row.update({f"{prefix}answer": reply.text, f"{prefix}finish_reason": reply.finish_reason,
                            f"{prefix}tokens": reply.completion_tokens})
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    judged = judge_replies(out_dir, items, results["model"][1], results["base"][1], spec, err)
    summary = {"model": results["model"][0], "base": results["base"][0],
               "settings": {**_settings(folders[0]), "answers_from": [str(f) for f in folders]},
               "judge": judged.summary}
    write_json(out_dir / "metrics.json", summary)
    write_report(out_dir / "report.md", items, results, summary["settings"], judge=judged)
    return summary


def _settings(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text(encoding="utf-8")).get("settings", {})
