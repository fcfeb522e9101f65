"""Pairwise LLM judge: for each prompt, answers A and B judged twice with the positions swapped.

Every judgment is one request to an OpenAI-compatible endpoint through the
synth client (retries on 429/5xx, shared backoff, the key from the
environment only). Its verdict is appended, fsync'd, to a journal in the
output folder before it counts, under a key of everything that shapes it
(rubric, judge model, conversation, the two answers, the order): a rerun
after a crash or SIGKILL reads the journal and asks only what it lacks.

A reply must be one JSON object ``{"winner": "A"|"B"|"tie", "reason": "..."}``
(a ```json fence around it, and a leading ``<think>...</think>`` block, are tolerated). A malformed reply is asked again,
up to ``verdict_attempts`` times, then the judgment is recorded as failed;
a rerun asks failed judgments again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tianji_ft.core.errors import UserError
from tianji_ft.synth.chat_client import ChatClient, RetryPolicy
from tianji_ft.synth.journal import DirLock, Journal
from tianji_ft.synth.judge_stats import summarize
from tianji_ft.synth.progress import Progress
from tianji_ft.synth.requests import Sender
from tianji_ft.synth.rubric import Rubric

JOURNAL_FILE = ".judge-journal.jsonl"
ORDERS = ("AB", "BA")  # AB: model A's answer shown first; BA: shown second


@dataclass
class JudgeEndpoint:
    """Where the judge runs and what it may spend; the same knobs as ``synth wishes``."""

    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 4
    max_requests: int | None = None  # judgments sent this run, at most
    price_in: float = 0.0
    price_out: float = 0.0
    timeout: float = 60.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    temperature: float | None = 0.0
    max_tokens: int | None = 512
    verdict_attempts: int = 3  # replies asked for one judgment before it is recorded as malformed
    seed: int = 0  # the bootstrap's
    status_interval: float = 10.0

    def api_key(self) -> str:
        """Check the settings and return the key, before any model is loaded or request sent."""
        if not self.base_url or not self.model:
            raise UserError("the judge needs --base-url and --api-model (the OpenAI-compatible endpoint and its model)")
        if self.concurrency < 1 or self.verdict_attempts < 1 or (self.max_requests is not None and self.max_requests < 0):
            raise UserError("--concurrency and --verdict-attempts must be at least 1, --max-requests at least 0")
        key = os.environ.get(self.api_key_env or "")
        if not key:
            raise UserError(f"environment variable {self.api_key_env} is not set; export the judge's API key in it "
                            "(any value for a local server that needs none), or name another with --api-key-env")
        return key


@dataclass
class JudgePair:
    id: str  # the prompt's id in its set
    messages: list[dict]  # the conversation, ending with the user turn
    answer_a: str
    answer_b: str
    meta: dict = field(default_factory=dict)


@dataclass
class JudgeResult:
    summary: dict  # see judge_stats.summarize, plus counts of this run
    verdicts: dict[str, dict]  # pair id -> {"AB": entry, "BA": entry} (journal entries)
    exit_code: int  # 0 done, 3 some judgments failed, 4 stopped at --max-requests


class MalformedVerdict(ValueError):
    pass


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)
_THINKING = re.compile(r"^\s*<think>.*?</think>", re.S)  # reasoning models (Qwen3, DeepSeek-R1 served locally)


def parse_verdict(text: str) -> tuple[str, str]:
    """(winner, reason) from a judge reply; raises MalformedVerdict saying what is wrong."""
    body = _THINKING.sub("", text).strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        raise MalformedVerdict(f"not a JSON object: {text.strip()[:80]!r}") from None
    if not isinstance(data, dict):
        raise MalformedVerdict(f"a JSON {type(data).__name__}, not an object")
    winner, reason = data.get("winner"), data.get("reason")
    if winner not in ("A", "B", "tie"):
        raise MalformedVerdict(f"winner is {winner!r}, not \"A\", \"B\" or \"tie\"")
    if not isinstance(reason, str) or not reason.strip():
        raise MalformedVerdict("no reason given")
    return winner, reason.strip()


def pair_key(rubric: Rubric, model: str, pair: JudgePair) -> str:
    blob = json.dumps([rubric.digest, model, pair.messages, pair.answer_a, pair.answer_b], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def _latest(entries: list[dict]) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    for entry in entries:
        if latest.get(entry["id"], {}).get("status") != "ok":
            latest[entry["id"]] = entry
    return latest


def _ask(client: ChatClient, system: str, user: str, attempts: int) -> dict:
    """One judgment: up to ``attempts`` replies until one parses. Tokens of every reply are counted."""
    tokens_in = tokens_out = requests = 0
    problem = ""
    for _ in range(attempts):
        reply = client.complete(system, user)
        tokens_in, tokens_out, requests = tokens_in + reply.tokens_in, tokens_out + reply.tokens_out, requests + reply.attempts
        try:
            winner, reason = parse_verdict(reply.text)
        except MalformedVerdict as exc:
            problem = str(exc)
            continue
        return {"status": "ok", "winner": winner, "reason": reason, "requests": requests,
                "tokens_in": tokens_in, "tokens_out": tokens_out}
    return {"status": "failed", "reason": f"malformed verdict in {attempts} replies (last: {problem})",
            "requests": requests, "tokens_in": tokens_in, "tokens_out": tokens_out}


def judge_pairs(pairs: list[JudgePair], rubric: Rubric, endpoint: JudgeEndpoint, folder: str | Path,
                err=None) -> JudgeResult:
    """Judge every pair in both orders (resuming from ``folder``'s journal) and summarize."""
    err = err or sys.stderr
    key = endpoint.api_key()
    folder = Path(folder)
    ids = {p.id for p in pairs}
    if len(ids) != len(pairs):
        raise UserError("two prompts share an id; every prompt judged needs its own")
    system = rubric.system_prompt()
    keys = {p.id: pair_key(rubric, endpoint.model, p) for p in pairs}
    with DirLock(folder):
        journal = Journal(folder / JOURNAL_FILE)
        latest = _latest(journal.load())
        tasks = [(p, order) for p in pairs for order in ORDERS
                 if latest.get(f"{keys[p.id]}/{order}", {}).get("status") != "ok"]
        to_send = tasks if endpoint.max_requests is None else tasks[: endpoint.max_requests]
        print(f"judge: {len(pairs)} prompts x 2 orders with rubric {rubric.name} and {endpoint.model}; "
              f"{2 * len(pairs) - len(tasks)} judgments already saved, sending {len(to_send)}", file=err)
        progress = Progress(len(to_send), endpoint.price_in, endpoint.price_out, stream=err,
                            interval=endpoint.status_interval)
        sender = Sender(journal, key, concurrency=endpoint.concurrency, thread_name="judge", progress=progress,
                        attempts_field="requests")

        def ask(task: tuple[JudgePair, str]) -> dict:
            pair, order = task
            first, second = (pair.answer_a, pair.answer_b) if order == "AB" else (pair.answer_b, pair.answer_a)
            return _ask(client, system, rubric.user_prompt(pair.messages, first, second, pair.meta),
                        endpoint.verdict_attempts)

        def base(task: tuple[JudgePair, str]) -> dict:
            pair, order = task
            return {"id": f"{keys[pair.id]}/{order}", "pair": pair.id, "order": order}

        def heard(task, entry: dict) -> None:
            latest[entry["id"]] = entry

        try:
            if to_send:
                client = ChatClient(endpoint.base_url, endpoint.model, key, endpoint.timeout, endpoint.policy,
                                    endpoint.temperature, endpoint.max_tokens, stop_event=sender.stop)
                sender.send(to_send, ask, base, heard)
        finally:
            progress.close()
            journal.close()
        fatal = sender.fatal
    return _result(pairs, keys, latest, progress, fatal, endpoint, rubric, err)


def _result(pairs, keys, latest, progress, fatal, endpoint, rubric, err) -> JudgeResult:
    verdicts, winners, failed = {}, {}, set()
    for p in pairs:
        entries = {o: latest.get(f"{keys[p.id]}/{o}") for o in ORDERS}
        verdicts[p.id] = {o: e for o, e in entries.items() if e}
        winners[p.id] = tuple(e["winner"] if e and e["status"] == "ok" else None for e in entries.values())
        if any(e and e["status"] == "failed" for e in entries.values()):
            failed.add(p.id)
    summary = summarize(pairs, winners, failed, seed=endpoint.seed)
    summary.update(rubric=rubric.name, rubric_file=str(rubric.source), judge_model=endpoint.model,
                   this_run={"judgments": progress.done, "failed": progress.failed, "tokens_in": progress.tokens_in,
                             "tokens_out": progress.tokens_out, "cost": progress.cost})
    if fatal:
        print(f"judge: FAILED, stopped early: {fatal[0]}; check --base-url, --api-model and ${endpoint.api_key_env}",
              file=err)
    code = 3 if summary["failed"] else 4 if summary["pending"] else 0
    return JudgeResult(summary, verdicts, code)


def summary_line(summary: dict) -> str:
    """One line: win / tie / loss with intervals, inconsistent and failed counts."""
    overall = summary["overall"]
    if not overall["prompts"]:
        return f"judge: no prompt judged in both orders ({summary['failed']} failed, {summary['pending']} pending)"
    parts = [f"{name} {overall[name]['rate']:.0%} [{overall[name]['ci'][0]:.0%}, {overall[name]['ci'][1]:.0%}]"
             for name in ("win", "tie", "loss")]
    line = (f"judge ({summary['rubric']}, {summary['judge_model']}): A vs B over {overall['prompts']} prompts: "
            f"{', '.join(parts)} (95% CI); {overall['counts']['inconsistent']} position-inconsistent (counted as ties)")
    if summary["failed"] or summary["pending"]:
        line += f"; {summary['failed']} failed, {summary['pending']} not judged"
    run = summary.get("this_run") or {}
    if run.get("judgments") or run.get("failed"):
        line += (f"; this run {run['judgments']} judgments, tokens in {run['tokens_in']:,} out {run['tokens_out']:,}"
                 + (f", cost {run['cost']:.4f}" if run.get("cost") else ""))
    return line
