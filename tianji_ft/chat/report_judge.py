"""The judge's part of ``report.md``: rates beside the metrics, a section per grouping, a verdict per answer."""

from __future__ import annotations

OUTCOME_WORDS = {"win": "A wins", "loss": "B wins", "tie": "tie", "inconsistent": "position-inconsistent (a tie)",
                 "failed": "judging failed", "pending": "not judged"}


def _rate(r: dict, name: str) -> str:
    lo, hi = r[name]["ci"]
    return f"{r[name]['rate']:.0%} [{lo:.0%}, {hi:.0%}]"


def metric_rows(summary: dict) -> list[str]:
    """Rows for the metrics table (columns: model A, model B): each model's judged win rate, and the ties."""
    r = summary["overall"]
    if not r["prompts"]:
        return []
    return [f"| judge: wins (95% CI) | {_rate(r, 'win')} | {_rate(r, 'loss')} |",
            f"| judge: ties, incl. position-inconsistent | {_rate(r, 'tie')} | {_rate(r, 'tie')} |"]


def _table(title: str, groups: dict[str, dict]) -> list[str]:
    lines = [f"| {title} | prompts | A wins | ties | B wins | position-inconsistent |", "|---|---:|---|---|---|---:|"]
    for name, r in groups.items():
        lines.append(f"| {name} | {r['prompts']} | {_rate(r, 'win')} | {_rate(r, 'tie')} | {_rate(r, 'loss')} | "
                     f"{r['counts']['inconsistent']} |")
    return lines


def section(summary: dict, label_a: str, label_b: str) -> list[str]:
    r = summary["overall"]
    lines = ["", "## Judge", "",
             f"`{summary['judge_model']}` compared A = {label_a} with B = {label_b} using the `{summary['rubric']}` "
             "rubric, each prompt twice with the answers' positions swapped. A win counts only when both orders "
             "agree; a prompt whose two verdicts disagree is position-inconsistent and counts as a tie. Intervals: "
             f"95% percentile bootstrap over prompts ({r.get('interval', {}).get('resamples', 0)} resamples, "
             f"seed {r.get('interval', {}).get('seed', 0)})."]
    bias = summary.get("position_bias")
    if bias is not None:
        lines += ["", f"Position bias: the answer shown first won {bias:.0%} of the decisive single verdicts (50% is none)."]
    if summary["failed"] or summary["pending"]:
        lines += ["", f"**Left out of the rates:** {summary['failed']} prompt(s) whose judging failed, "
                      f"{summary['pending']} not judged; rerun the same command to judge only those."]
    if r["prompts"]:
        lines += ["", *_table("", {"all prompts": r})]
    for field in ("style", "scene"):
        if f"by_{field}" in summary:
            lines += ["", *_table(field, summary[f"by_{field}"])]
    return lines


_SHOWN_FIRST = {"AB": "A shown first", "BA": "B shown first"}
# A verdict names a position; in the BA order position A holds model B's answer.
_MODEL_WINS = {"AB": {"A": "A", "B": "B", "tie": "tie"}, "BA": {"A": "B", "B": "A", "tie": "tie"}}


def verdict_lines(result, item_id: str) -> list[str]:
    """The outcome, then each order's verdict in model terms with its reason."""
    outcome = result.summary["outcomes"].get(item_id, "pending")
    parts = []
    for order, entry in result.verdicts.get(item_id, {}).items():
        said = (_MODEL_WINS[order][entry["winner"]] + f" ({entry['reason']})" if entry.get("status") == "ok"
                else f"failed ({entry.get('reason')})")
        parts.append(f"{_SHOWN_FIRST[order]}: {said}")
    return [f"**Judge:** {OUTCOME_WORDS[outcome]}" + (f" — {'; '.join(parts)}" if parts else ""), ""]
