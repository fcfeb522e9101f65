"""The mutation report: killed / timeout / survived per module, and every survivor."""

from __future__ import annotations

import json
from pathlib import Path

TARGET = 0.90  # the kill rate each module must reach
DETECTED = ("ok_killed", "ok_suspicious", "bad_timeout")  # suspicious: killed, but slowly


def tally(mutants: list[dict]) -> dict:
    count = {status: sum(m["status"] == status for m in mutants)
             for status in ("ok_killed", "ok_suspicious", "bad_timeout", "bad_survived", "untested", "skipped")}
    tested = len(mutants) - count["skipped"] - count["untested"]
    detected = sum(count[s] for s in DETECTED)
    return {"killed": count["ok_killed"] + count["ok_suspicious"], "timeout": count["bad_timeout"],
            "rechecked": sum(bool(m.get("rechecked")) for m in mutants),
            "survived": count["bad_survived"], "untested": count["untested"] + count["skipped"],
            "total": len(mutants), "rate": detected / tested if tested else 0.0}


def write_report(out: Path, results: list[dict], accepted: dict[str, dict[str, str]], seconds: int,
                 jobs: int) -> bool:
    """Write ``out/report.md`` and ``out/report.json``; True when every module reaches the target."""
    rows, details, passed = [], [], True
    for result in results:
        module, counts = result["module"], tally(result["mutants"])
        ok = counts["rate"] >= TARGET and counts["untested"] == 0 and counts["total"] > 0
        passed &= ok
        reasons = accepted.get(module, {})
        survivors = [m for m in result["mutants"] if m["status"] not in DETECTED]
        counts["accepted"] = sum((m["source"] or "").strip() in reasons for m in survivors)
        result["counts"] = counts
        rows.append(f"| {module} | {counts['total']} | {counts['killed']} ({counts['rechecked']}) | {counts['timeout']} | "
                    f"{counts['survived']} | {counts['untested']} | {counts['rate']:.1%} | "
                    f"{counts['accepted']} | {'yes' if ok else 'NO'} | {result['seconds']} s | "
                    f"{result.get('cpu_seconds', 0)} s |")
        for m in survivors:
            reason = reasons.get((m["source"] or "").strip(), "not accepted: needs a test")
            details.append(f"### {module}:{m['line']} ({m['status']})\n\n{reason}\n\n```diff\n{m.get('diff', '')}\n```\n")
    cpu = sum(r.get("cpu_seconds", 0) for r in results)
    lines = [f"# Mutation report\n",
             f"{len(results)} module(s), {seconds} s wall clock with {jobs} job(s), {cpu} s of CPU time "
             f"(about {cpu / 2 / 60:.1f} minutes on 2 otherwise idle cores); target {TARGET:.0%} killed "
             "(timeouts count as killed).\n",
             "| module | mutants | killed (on recheck) | timeout | survived | untested | kill rate | accepted survivors | "
             "≥ target | wall | CPU |",
             "|---|---|---|---|---|---|---|---|---|---|---|", *rows, "", "## Survivors\n", *(details or ["none\n"])]
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    (out / "report.json").write_text(json.dumps({"seconds": seconds, "jobs": jobs, "modules": results},
                                                ensure_ascii=False, indent=1), encoding="utf-8")
    print("\n".join(lines[:2] + lines[2:4] + rows))
    return passed
