"""``report.md`` of ``tianji-ft eval``: a metrics table, then every answer (side by side with the base)."""

from __future__ import annotations

from pathlib import Path

from tianji_ft.chat import report_judge
from tianji_ft.core.fsio import atomic_open

METRIC_ROWS = [
    ("stop_rate", "stop rate (ended on the stop token)", "{:.2f}"),
    ("bleu", "BLEU", "{:.2f}"),
    ("rouge_l", "ROUGE-L F1", "{:.4f}"),
    ("exact_match", "exact match", "{:.2f}"),
    ("mean_answer_chars", "mean answer length (characters)", "{:.1f}"),
    ("mean_answer_tokens", "mean answer length (tokens)", "{:.1f}"),
    ("distinct_2", "distinct-2 (1.0 = no repeated bigrams)", "{:.3f}"),
]
LOW_STOP_RATE = 0.9


def cell(text: str | None) -> str:
    """Text safe inside a Markdown table cell."""
    if text is None:
        return ""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>") or " "


def _label(info: dict) -> str:
    name = Path(info["model"].rstrip("/")).name
    return f"{name} + {Path(info['adapter']).name}" if info.get("adapter") else name


def _column(key: str, info: dict) -> str:
    return cell(_label(info) + (" (base)" if key == "base" else ""))


def write_report(path: str | Path, items, results: dict, settings: dict, judge=None) -> None:
    """``judge``: a :class:`tianji_ft.synth.judge.JudgeResult` of model (A) against base (B)."""
    keys = list(results)
    infos = {k: results[k][0] for k in keys}
    lines = [f"# Evaluation of {_label(infos['model'])}", ""]
    lines.append(f"{settings['prompts']} prompts, each in a fresh context; temperature {settings['temperature']}, "
                 f"seed {settings['seed']}, max new tokens {settings['max_new_tokens']}.")
    lines.append("")
    for k in keys:
        info = infos[k]
        lines.append(f"- {'model' if k == 'model' else 'base'}: `{info['model']}`"
                     + (f" with adapter `{info['adapter']}`" if info.get("adapter") else "")
                     + f", template `{info['template']}` (from {info['template_source']})")
    lines += ["", "| metric | " + " | ".join(_column(k, infos[k]) for k in keys) + " |",
              "|---" * (len(keys) + 1) + "|"]
    for key, title, fmt in METRIC_ROWS:
        values = [infos[k]["metrics"].get(key) for k in keys]
        if all(v is None for v in values):
            continue
        lines.append(f"| {title} | " + " | ".join("" if v is None else fmt.format(v) for v in values) + " |")
    if judge is not None and len(keys) == 2:
        lines += report_judge.metric_rows(judge.summary)
    for k in keys:
        rate = infos[k]["metrics"]["stop_rate"]
        if rate < LOW_STOP_RATE:
            lines += ["", f"**Warning:** only {rate:.0%} of the answers of {_label(infos[k])} ended on the stop "
                          f"token; the rest ran to the token limit. Check that template `{infos[k]['template']}` "
                          "is the one the model was trained with."]
    if judge is not None:
        lines += report_judge.section(judge.summary, _column("model", infos["model"]), _column("base", infos["base"]))
    lines += ["", "## Answers", ""]
    for n, item in enumerate(items):
        lines += [f"### {item.id}", "", f"**Prompt:** {cell(item.prompt)}", ""]
        if item.reference is not None:
            lines += [f"**Reference:** {cell(item.reference)}", ""]
        header = [_column(k, infos[k]) for k in keys]
        row = []
        for k in keys:
            reply = results[k][1][n]
            mark = "" if reply.finish_reason == "stop" else " *(cut at the token limit)*"
            row.append(cell(reply.text) + mark)
        lines += ["| " + " | ".join(header) + " |", "|---" * len(keys) + "|", "| " + " | ".join(row) + " |", ""]
        if judge is not None:
            lines += [cell(line) if line else "" for line in report_judge.verdict_lines(judge, item.id)]
    with atomic_open(path) as fh:
        fh.write("\n".join(lines) + "\n")
