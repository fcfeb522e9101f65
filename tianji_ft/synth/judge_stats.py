"""From two verdicts per prompt to win / tie / loss rates with bootstrap intervals.

Each prompt is judged twice, with model A's answer shown first and then
second. The two verdicts are put in model A's terms and reconciled the
conservative way (as MT-Bench does): a win or a loss counts only when both
orders agree; two ties are a tie; any other pair is *inconsistent* (the
verdict followed the position, or one order saw a tie the other did not).
Inconsistent prompts count as ties in the rates and are reported on their
own as well. Prompts whose judging failed are left out of the rates.
"""

from __future__ import annotations

OUTCOMES = ("win", "tie", "loss", "inconsistent")
_FLIP = {"A": "B", "B": "A", "tie": "tie"}


def reconcile(first: str, second: str) -> str:
    """The outcome for model A from the verdict with A shown first and the one with A shown second.

    Each verdict names the winning *position* ("A", "B" or "tie").
    """
    swapped = _FLIP[second]  # in the second order, position A holds model B's answer
    if first != swapped:
        return "inconsistent"
    return {"A": "win", "B": "loss", "tie": "tie"}[first]


def rates(outcomes: list[str], seed: int = 0, resamples: int = 2000, level: float = 0.95) -> dict:
    """Counts, rates and a percentile bootstrap interval per rate, resampling prompts with replacement.

    ``tie`` counts the consistent ties and the inconsistent prompts; ``inconsistent`` those alone.
    """
    import numpy as np

    n = len(outcomes)
    counts = {k: outcomes.count(k) for k in OUTCOMES}
    result = {"prompts": n, "counts": counts}
    if n == 0:
        return result
    codes = np.array([OUTCOMES.index(o) for o in outcomes])
    shares = {"win": codes == 0, "tie": (codes == 1) | (codes == 3), "loss": codes == 2, "inconsistent": codes == 3}
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(resamples, n))
    low, high = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    for name, hits in shares.items():
        boot = hits[picks].mean(axis=1)
        result[name] = {"rate": float(hits.mean()),
                        "ci": [float(np.percentile(boot, low)), float(np.percentile(boot, high))]}
    result["interval"] = {"level": level, "resamples": resamples, "seed": seed, "method": "percentile bootstrap over prompts"}
    return result


def position_bias(verdict_pairs: list[tuple[str, str]]) -> float | None:
    """Of all decisive single verdicts, the share that named the answer shown first (0.5 = no bias)."""
    decisive = [v for pair in verdict_pairs for v in pair if v in ("A", "B")]
    return decisive.count("A") / len(decisive) if decisive else None


def summarize(pairs, verdicts: dict[str, tuple[str | None, str | None]], failed: set[str],
              seed: int = 0, resamples: int = 2000) -> dict:
    """Overall and per style / per scene rates for ``pairs`` (objects with ``id`` and ``meta``).

    ``verdicts[id]`` is (verdict with A first, verdict with A second), each None until judged.
    """
    outcome = {}
    for pair in pairs:
        first, second = verdicts.get(pair.id, (None, None))
        if pair.id in failed:
            outcome[pair.id] = "failed"
        elif first is None or second is None:
            outcome[pair.id] = "pending"
        else:
            outcome[pair.id] = reconcile(first, second)
    judged = [p for p in pairs if outcome[p.id] in OUTCOMES]
    summary = {"overall": rates([outcome[p.id] for p in judged], seed, resamples),
               "failed": sum(o == "failed" for o in outcome.values()),
               "pending": sum(o == "pending" for o in outcome.values()),
               "position_bias": position_bias([verdicts[p.id] for p in judged])}
    for field in ("style", "scene"):
        groups: dict[str, list[str]] = {}
        for p in judged:
            value = (p.meta or {}).get(field)
            if value not in (None, ""):
                groups.setdefault(str(value).strip(), []).append(outcome[p.id])
        if groups:
            summary[f"by_{field}"] = {k: rates(v, seed, resamples) for k, v in sorted(groups.items())}
    summary["outcomes"] = outcome
    return summary
