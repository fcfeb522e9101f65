"""``tianji-ft synth pairs``: preference data from a prompt set, two candidates and the judge.

For each prompt two candidate answers are made -- by the local SFT model
(sampled, each slot with its own seed) and/or by the remote model -- and the
judge compares them in both orders. A consistent win makes a preference
record (``make_preference``: the winner is ``chosen``, with the judge's
reasons under ``judge``); ties, position-inconsistent verdicts, identical
candidates and failures are skipped and counted.

Output folder:
  pairs.jsonl                 the preference records
  .pairs-candidates.jsonl     every candidate made, journaled (a rerun makes only the missing ones)
  .judge-journal.jsonl        every verdict, journaled (a rerun asks only the missing ones)
  .pairs-summary.json         counts, tokens and cost
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from tianji_ft.chat.eval_judge import pick_rubric
from tianji_ft.chat.evaluate import EvalItem, load_prompts, load_test_data
from tianji_ft.core.errors import UserError
from tianji_ft.core.fsio import atomic_open, write_json
from tianji_ft.core.outputs import Output, check_outputs, mark
from tianji_ft.data.preference import make_preference, preference_problems
from tianji_ft.synth.chat_client import ChatClient
from tianji_ft.synth.requests import Sender
from tianji_ft.synth.journal import DirLock, Journal
from tianji_ft.synth.judge import JudgeEndpoint, JudgePair, judge_pairs

OUTPUT_KIND = "synth-pairs"
PAIRS_FILE = "pairs.jsonl"
CANDIDATES_FILE = ".pairs-candidates.jsonl"
SUMMARY_FILE = ".pairs-summary.json"
SOURCES = ("local", "remote")


@dataclass
class PairsConfig:
    prompts: Path
    out_dir: Path
    judge: JudgeEndpoint
    rubric: str = "auto"
    sources: tuple[str, str] = ("local", "local")  # where candidate 1 and candidate 2 come from
    model: str | None = None  # the local SFT model
    adapter: str | None = None
    template: str = "auto"
    system: str | None = None
    bits: int | None = None
    device: str = "auto"
    candidate_model: str | None = None  # the remote candidates' model at the judge's endpoint (default: the judge's)
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    max_new_tokens: int = 256
    seed: int = 0  # candidate slot n samples with seed + n
    batch_size: int = 8
    overwrite: bool = False


def load_prompt_set(path: str | Path) -> list[EvalItem]:
    """Text lines (one prompt each) or conversation records (their last turn is the prompt)."""
    path = Path(path)
    return load_test_data(path) if path.suffix.lower() in (".json", ".jsonl") else load_prompts(path)


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()[:20]


class Candidates:
    """Candidate answers, journaled one by one; what is in the journal is never made again."""

    def __init__(self, cfg: PairsConfig, key: str, err):
        self.cfg, self.key, self.err = cfg, key, err
        self.journal = Journal(Path(cfg.out_dir) / CANDIDATES_FILE)
        self.saved = {e["id"]: e for e in self.journal.load() if e["status"] == "ok"}
        self.failed: dict[str, str] = {}
        self.tokens_in = self.tokens_out = 0

    def slot_id(self, item: EvalItem, slot: int) -> str:
        cfg = self.cfg
        source = cfg.sources[slot]
        who = [cfg.model, cfg.adapter, cfg.template, cfg.system] if source == "local" else \
            [cfg.judge.base_url, cfg.candidate_model or cfg.judge.model]
        return _key(source, who, cfg.temperature, cfg.top_p, cfg.top_k, cfg.max_new_tokens, cfg.seed + slot,
                    item.messages)

    def get(self, item: EvalItem, slot: int) -> dict | None:
        return self.saved.get(self.slot_id(item, slot))

    def _save(self, item: EvalItem, slot: int, entry: dict) -> None:
        entry = {"id": self.slot_id(item, slot), "item": item.id, "slot": slot, "source": self.cfg.sources[slot],
                 **entry, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.journal.append(entry)
        self._remember(entry)

    def _remember(self, entry: dict) -> None:
        if entry["status"] == "ok":
            self.saved[entry["id"]] = entry
        else:
            self.failed[entry["id"]] = entry["reason"]

    def make_local(self, items: list[EvalItem]) -> None:
        """Generate the missing local candidates (the model loads only if one is missing)."""
        from tianji_ft.chat.engine import ChatEngine, GenerationParams

        cfg = self.cfg
        slots = [s for s, source in enumerate(cfg.sources) if source == "local"]
        missing = {s: [i for i in items if not self.get(i, s)] for s in slots}
        if not any(missing.values()):
            return
        engine = ChatEngine(cfg.model, adapter=cfg.adapter, template=cfg.template, system=cfg.system,
                            bits=cfg.bits, device=cfg.device)
        try:
            for slot, todo in missing.items():
                params = GenerationParams(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                                          max_new_tokens=cfg.max_new_tokens, seed=cfg.seed + slot)
                for start in range(0, len(todo), cfg.batch_size):
                    batch = todo[start:start + cfg.batch_size]
                    print(f"pairs: local candidates {slot + 1}: {start + len(batch)}/{len(todo)}", file=self.err, flush=True)
                    for item, reply in zip(batch, engine.chat_batch([i.messages for i in batch], params)):
                        self._save(item, slot, {"status": "ok", "text": reply.text.strip(),
                                                "finish_reason": reply.finish_reason,
                                                "system": engine.prompter.system})
        finally:
            engine.close()

    def make_remote(self, items: list[EvalItem], api_key: str, budget: int | None) -> int:
        """Ask the endpoint for the missing remote candidates, at most ``budget``; returns how many were sent."""
        cfg = self.cfg
        todo = [(i, s) for s, source in enumerate(cfg.sources) if source == "remote" for i in items if not self.get(i, s)]
        todo = todo if budget is None else todo[:budget]
        if not todo:
            return 0
        sender = Sender(self.journal, api_key, concurrency=cfg.judge.concurrency, thread_name="pairs")
        client = ChatClient(cfg.judge.base_url, cfg.candidate_model or cfg.judge.model, api_key, cfg.judge.timeout,
                            cfg.judge.policy, cfg.temperature, cfg.max_new_tokens, stop_event=sender.stop)

        def ask(task: tuple[EvalItem, int]) -> dict:
            reply = client.complete_messages(task[0].messages)
            text = reply.text.strip()
            entry = {"status": "ok", "text": text} if text else {"status": "failed", "reason": "empty reply"}
            return {**entry, "tokens_in": reply.tokens_in, "tokens_out": reply.tokens_out}

        def base(task: tuple[EvalItem, int]) -> dict:
            item, slot = task
            return {"id": self.slot_id(item, slot), "item": item.id, "slot": slot, "source": cfg.sources[slot]}

        heard = 0

        def count(task, entry: dict) -> None:  # journaled by the sender before it counts here
            nonlocal heard
            self._remember(entry)
            self.tokens_in += entry.get("tokens_in", 0)
            self.tokens_out += entry.get("tokens_out", 0)
            heard += 1
            if heard % 10 == 0 or heard == len(todo):
                print(f"pairs: remote candidates {heard}/{len(todo)}", file=self.err, flush=True)

        sender.send(todo, ask, base, count)
        fatal = sender.fatal[0] if sender.fatal else None
        if fatal:
            raise UserError(f"remote candidates: {fatal}; check --base-url, --candidate-model and "
                            f"${cfg.judge.api_key_env}", exit_code=3)
        return len(todo)


def _check(cfg: PairsConfig) -> str:
    if len(cfg.sources) != 2 or any(s not in SOURCES for s in cfg.sources):
        raise UserError(f"--candidates takes two of {', '.join(SOURCES)}, e.g. --candidates local local")
    if "local" in cfg.sources and not cfg.model:
        raise UserError("local candidates need the SFT model: pass --model DIR, or --candidates remote remote")
    if cfg.sources == ("remote", "remote") and cfg.temperature <= 0:
        raise UserError("two remote candidates at temperature 0 would be the same answer; pass --temperature above 0")
    if cfg.sources == ("local", "local") and cfg.temperature <= 0:
        raise UserError("two local candidates need sampling: pass --temperature above 0 (each gets its own seed)")
    return cfg.judge.api_key()


def run_pairs(cfg: PairsConfig, out=None, err=None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    key = _check(cfg)
    items = load_prompt_set(cfg.prompts)
    outdir = Path(cfg.out_dir)
    check_outputs([("prompts", cfg.prompts), ("model", cfg.model), ("adapter", cfg.adapter)],
                  [Output(outdir, "-o", kind=OUTPUT_KIND)], overwrite=cfg.overwrite)
    outdir.mkdir(parents=True, exist_ok=True)
    mark(outdir, OUTPUT_KIND)
    with DirLock(outdir):  # two runs never pay for the same candidate; judge_pairs takes the lock itself
        candidates = Candidates(cfg, key, err)
        try:
            if "local" in cfg.sources:
                candidates.make_local(items)
            sent = candidates.make_remote(items, key, cfg.judge.max_requests)
        finally:
            candidates.journal.close()
    endpoint = cfg.judge  # one budget: what the candidates used, the judge may not
    if endpoint.max_requests is not None:
        endpoint = replace(endpoint, max_requests=max(0, endpoint.max_requests - sent))
    counts = {"prompts": len(items), "candidate_failed": 0, "candidate_pending": 0, "identical": 0}
    pairs, seen = [], []
    for item in items:
        first, second = candidates.get(item, 0), candidates.get(item, 1)
        seen.append(_as_seen(item, first if cfg.sources[0] == "local" else second))
        if not first or not second:
            failed = any(candidates.slot_id(item, s) in candidates.failed for s in (0, 1))
            counts["candidate_failed" if failed else "candidate_pending"] += 1
        elif first["text"] == second["text"]:
            counts["identical"] += 1
        else:
            pairs.append(JudgePair(item.id, seen[-1].messages, first["text"], second["text"], dict(item.meta or {})))
    items = seen
    result = judge_pairs(pairs, pick_rubric(cfg.rubric, items), endpoint, outdir, err=err) if pairs else None
    written, counts["invalid"] = _write_pairs(outdir, items, pairs, result, cfg)
    return _finish(outdir, cfg, counts, written, result, candidates, out)


def _as_seen(item: EvalItem, local: dict | None) -> EvalItem:
    """The item with the system prompt the local model added (its run manifest's), so the record holds it."""
    system = (local or {}).get("system")
    if not system or item.messages[0]["role"] == "system":
        return item
    return EvalItem(item.id, [{"role": "system", "content": system}, *item.messages], item.reference, item.meta)


def _write_pairs(outdir: Path, items, pairs, result, cfg: PairsConfig) -> tuple[int, int]:
    """(records written, records left out because the preference validator refused them, e.g. an empty answer)."""
    by_id = {i.id: i for i in items}
    written = invalid = 0
    with atomic_open(outdir / PAIRS_FILE) as fh:
        for pair in pairs:
            outcome = result.summary["outcomes"][pair.id]
            if outcome not in ("win", "loss"):
                continue
            chosen, rejected = (pair.answer_a, pair.answer_b) if outcome == "win" else (pair.answer_b, pair.answer_a)
            verdicts = result.verdicts[pair.id]
            slots = (0, 1) if outcome == "win" else (1, 0)
            record = make_preference(
                by_id[pair.id].messages, chosen, rejected,
                judge={"model": cfg.judge.model, "rubric": result.summary["rubric"],
                       "reason": verdicts["AB"]["reason"], "reason_swapped": verdicts["BA"]["reason"]},
                meta={**pair.meta, "prompt_id": pair.id,
                      "chosen_from": _source(cfg, slots[0]), "rejected_from": _source(cfg, slots[1])})
            if preference_problems(record):
                invalid += 1
                continue
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            written += 1
    return written, invalid


def _source(cfg: PairsConfig, slot: int) -> str:
    if cfg.sources[slot] == "local":
        return f"local seed {cfg.seed + slot}"
    return f"remote {cfg.candidate_model or cfg.judge.model}"


def _finish(outdir, cfg, counts, written, result, candidates, out) -> int:
    outcomes = result.summary["outcomes"].values() if result else []
    skipped = {name: sum(o == name for o in outcomes) for name in ("tie", "inconsistent", "failed", "pending")}
    skipped["pending"] += counts["candidate_pending"]
    summary = {"prompts": counts["prompts"], "written": written,
               "skipped": {**skipped, "identical": counts["identical"], "candidate_failed": counts["candidate_failed"],
                           "invalid": counts["invalid"]},
               "judge": result.summary if result else None,
               "remote_candidate_tokens": {"in": candidates.tokens_in, "out": candidates.tokens_out}}
    write_json(outdir / SUMMARY_FILE, summary)
    print(f"pairs: {written} preference records from {counts['prompts']} prompts in {outdir / PAIRS_FILE}; skipped "
          f"{skipped['tie']} ties, {skipped['inconsistent']} position-inconsistent, {counts['identical']} identical "
          f"candidate pairs, {skipped['failed'] + counts['candidate_failed']} failed"
          + (f", {counts['invalid']} invalid (an empty answer)" if counts["invalid"] else "")
          + (f", {skipped['pending']} not done (--max-requests)" if skipped["pending"] else ""), file=out)
    cost = (candidates.tokens_in * cfg.judge.price_in + candidates.tokens_out * cfg.judge.price_out) / 1e6
    cost += result.summary["this_run"]["cost"] if result else 0.0
    if cost:
        print(f"pairs: cost this run {cost:.4f} (remote candidates and judge, at --price-in/--price-out)", file=out)
    if skipped["failed"] or counts["candidate_failed"]:
        print("pairs: FAILED: some candidates or judgments failed; rerun the same command to retry only those", file=out)
        return 3
    if skipped["pending"]:
        print("pairs: INCOMPLETE: stopped at --max-requests; rerun to continue", file=out)
        return 4
    return 0
