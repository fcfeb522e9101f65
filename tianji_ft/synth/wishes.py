"""Run the wishes generator: plan, send with N in flight, journal each answer, write the dataset.

Output folder layout:
  wishes.jsonl               the dataset: one ``{"conversation": [...], "meta": {...}}`` per line
  .synth-journal.jsonl       every finished request, appended and fsync'd one by one (resume reads it)
  .synth-failed.jsonl        requests that failed, with their reasons (rerun to retry them)
  .synth-summary.json        counts, tokens and cost
  .synth-run.json            the settings a resumed run must share (model, seed)
The bookkeeping files are dot-files so that ``tianji-ft data convert wishes-merge DIR``,
which reads every data file in a folder except hidden ones, sees only the dataset.

The folder is checked before anything is sent: it must not be, hold or lie
inside the data folder (``--data-dir``), and when it exists and is not empty
it must be one this command made (it carries the ``synth`` output marker, so
a rerun resumes) -- a folder with someone else's files is refused.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tianji_ft.synth.chat_client import ChatClient, RetryPolicy, redact
from tianji_ft.synth.journal import DirLock, Journal
from tianji_ft.synth.progress import Progress
from tianji_ft.synth.requests import Sender
from tianji_ft.synth.wishes_data import WishesData, default_wishes_dir, load_wishes_data
from tianji_ft.synth.wishes_plan import WishItem, WishPlan, plan_wishes
from tianji_ft.core.errors import UserError
from tianji_ft.core.fsio import atomic_open, write_json
from tianji_ft.core.outputs import MARKER, Output, check_outputs, mark, marker_kind

EXIT_OK = 0
EXIT_FAILED = 3  # some requests failed; their reasons are in FAILED_FILE
EXIT_INCOMPLETE = 4  # stopped at --max-requests with requests left to send

DATASET_FILE = "wishes.jsonl"
JOURNAL_FILE = ".synth-journal.jsonl"
FAILED_FILE = ".synth-failed.jsonl"
SUMMARY_FILE = ".synth-summary.json"
RUN_FILE = ".synth-run.json"
LOCK_FILE = ".synth.lock"
OUTPUT_KIND = "synth"  # the output marker's kind: a folder with it may be resumed
_OWN_FILES = {DATASET_FILE, JOURNAL_FILE, FAILED_FILE, SUMMARY_FILE, RUN_FILE, LOCK_FILE, MARKER}


@dataclass
class WishesRunConfig:
    out_dir: Path
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    styles: list[str] | None = None
    rounds: int = 1
    seed: int = 0
    concurrency: int = 4
    max_requests: int | None = None
    price_in: float = 0.0
    price_out: float = 0.0
    timeout: float = 60.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    temperature: float | None = 1.0
    max_tokens: int | None = None
    input_variants: bool = False
    names: list[str] | None = None
    scenes: list[str] | None = None
    data_dir: Path | None = None
    status_interval: float = 10.0


def clean_reply(text: str) -> str:
    """The seed keeps the first line and drops double quotes; blank leading lines are skipped first."""
    return text.strip().split("\n")[0].replace('"', "").strip()


def make_record(data: WishesData, item: WishItem, output: str, model: str) -> dict:
    return {
        "conversation": [{"system": data.dataset_system_prompt, "input": item.input, "output": output}],
        "meta": {"style": item.style, "name": item.name, "scene": item.scene, "prompt": item.prompt,
                 "round": item.round, "model": model},
    }


def build_plan(cfg: WishesRunConfig) -> tuple[WishesData, WishPlan]:
    data = load_wishes_data(cfg.data_dir)
    return data, plan_wishes(data, cfg.styles, cfg.rounds, cfg.seed, cfg.input_variants, cfg.names, cfg.scenes)


def _latest(entries: list[dict]) -> dict[str, dict]:
    """Each item's current state: a saved answer is final, otherwise the last attempt counts."""
    latest: dict[str, dict] = {}
    for entry in entries:
        if latest.get(entry["id"], {}).get("status") != "ok":
            latest[entry["id"]] = entry
    return latest


def _plan_line(plan: WishPlan) -> str:
    pairs = len(plan.items) // (len(plan.styles) * plan.rounds) if plan.items else 0
    return (f"{len(plan.items)} requests = {pairs} suitable name x scene pairs x {len(plan.styles)} "
            f"style(s) x {plan.rounds} round(s); {len(plan.skipped_pairs)} unsuitable pairs skipped "
            f"({plan.skipped_requests} requests)")


def dry_run(cfg: WishesRunConfig, out=None) -> int:
    out = out or sys.stdout
    data, plan = build_plan(cfg)
    print(f"dry run: {_plan_line(plan)}", file=out)
    journal = Path(cfg.out_dir) / JOURNAL_FILE
    if journal.exists():
        latest = _latest(Journal(journal).load(repair=False))
        saved = sum(1 for it in plan.items if latest.get(it.id, {}).get("status") == "ok")
        print(f"{saved} already saved in {cfg.out_dir}; a run would send {len(plan.items) - saved}", file=out)
    n = len(plan.items)
    picks = sorted({round(i * (n - 1) / 2) for i in range(3)}) if n else []
    for k, index in enumerate(picks, 1):
        item = plan.items[index]
        print(f"\n--- sample {k}/{len(picks)}: {item.id}  (dataset input: {item.input})", file=out)
        print(f"[system] {data.request_system_prompt}\n[user]{item.prompt}", file=out)
    return EXIT_OK


def _check_run_file(path: Path, cfg: WishesRunConfig, key: str) -> None:
    settings = {"model": cfg.model, "seed": cfg.seed}
    if path.exists():
        with open(path, encoding="utf-8") as fh:
            before = json.load(fh)
        for name, value in settings.items():
            if before.get(name) != value:
                raise UserError(f"{path.parent} was started with {name}={before.get(name)!r}, not {value!r}; "
                                f"pass the same --{name} to resume, or choose another -o")
    write_json(path, {**settings, "base_url": redact(cfg.base_url or "", key)})


def _write_outputs(out: Path, plan: WishPlan, latest: dict[str, dict], entries_order: list[str]) -> None:
    planned = {it.id for it in plan.items}
    order = [it.id for it in plan.items] + [i for i in entries_order if i not in planned]
    with atomic_open(out / DATASET_FILE) as fh:
        for item_id in order:
            entry = latest.get(item_id)
            if entry and entry["status"] == "ok":
                fh.write(json.dumps(entry["record"], ensure_ascii=False) + "\n")
    with atomic_open(out / FAILED_FILE) as fh:
        for item_id in order:
            entry = latest.get(item_id)
            if entry and entry["status"] == "failed":
                fh.write(json.dumps(entry, ensure_ascii=False) + "\n")


def _unmarked_run(folder: Path) -> bool:
    """Whether ``folder`` is a run an earlier version of this command wrote
    (before folders were marked): it holds nothing but our files."""
    try:
        names = {entry.name for entry in os.scandir(folder)}
    except OSError:  # missing, or not a folder: check_outputs words it
        return False
    return bool(names <= _OWN_FILES and names & {RUN_FILE, JOURNAL_FILE}) and marker_kind(folder) is None


def check_run_outputs(cfg: WishesRunConfig) -> Path:
    """The one output check of a run, before anything is written; then the folder, made and marked."""
    outdir = Path(cfg.out_dir)
    check_outputs([("--data-dir", cfg.data_dir or default_wishes_dir())],
                  [Output(outdir, "-o", kind=OUTPUT_KIND, folder=True)],
                  overwrite=_unmarked_run(outdir))  # an unmarked run of ours resumes; the input rules still hold
    outdir.mkdir(parents=True, exist_ok=True)
    mark(outdir, OUTPUT_KIND)
    return outdir


def run_wishes(cfg: WishesRunConfig, out=None, err=None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    if not cfg.base_url or not cfg.model:
        raise UserError("--base-url and --model are required (or pass --dry-run to only count and show prompts)")
    key = os.environ.get(cfg.api_key_env or "")
    if not key:
        raise UserError(f"environment variable {cfg.api_key_env} is not set; export your API key in it "
                        f"(any value for a local server that needs none), or name another with --api-key-env")
    if cfg.concurrency < 1 or (cfg.max_requests is not None and cfg.max_requests < 0):
        raise UserError("--concurrency must be at least 1 and --max-requests at least 0")
    data, plan = build_plan(cfg)
    outdir = check_run_outputs(cfg)
    with DirLock(outdir):
        _check_run_file(outdir / RUN_FILE, cfg, key)
        journal = Journal(outdir / JOURNAL_FILE)
        entries = journal.load()
        latest = _latest(entries)
        order = list(dict.fromkeys(e["id"] for e in entries))
        pending = [it for it in plan.items if latest.get(it.id, {}).get("status") != "ok"]
        to_send = pending if cfg.max_requests is None else pending[: cfg.max_requests]
        print(f"synth: {_plan_line(plan)}; {len(plan.items) - len(pending)} already saved, sending {len(to_send)}", file=err)
        progress = Progress(len(to_send), cfg.price_in, cfg.price_out, stream=err, interval=cfg.status_interval)
        sender = Sender(journal, key, concurrency=cfg.concurrency, thread_name="synth", progress=progress)

        def ask(item: WishItem) -> dict:
            reply = client.complete(data.request_system_prompt, item.prompt)
            output = clean_reply(reply.text)
            if output:
                entry = {"status": "ok", "record": make_record(data, item, output, cfg.model),
                         "raw_output": reply.text, "attempts": reply.attempts}
            else:
                entry = {"status": "failed", "reason": "empty reply", "attempts": reply.attempts}
            return {**entry, "tokens_in": reply.tokens_in, "tokens_out": reply.tokens_out}

        def base(item: WishItem) -> dict:
            return {"id": item.id, "round": item.round, "style": item.style, "name": item.name, "scene": item.scene}

        def heard(item: WishItem, entry: dict) -> None:
            latest[entry["id"]] = entry
            order.append(entry["id"])

        try:
            if to_send:
                client = ChatClient(cfg.base_url, cfg.model, key, cfg.timeout, cfg.policy,
                                    cfg.temperature, cfg.max_tokens, stop_event=sender.stop)
                sender.send(to_send, ask, base, heard)
        finally:
            progress.close()
            journal.close()
            _write_outputs(outdir, plan, latest, order)
        fatal = sender.fatal
        return _finish(outdir, plan, latest, progress, fatal, cfg, out)


def _finish(outdir: Path, plan: WishPlan, latest: dict, progress: Progress, fatal: list[str],
            cfg: WishesRunConfig, out) -> int:
    states = [latest.get(it.id, {}).get("status") for it in plan.items]
    done, failed = states.count("ok"), states.count("failed")
    pending = len(states) - done - failed
    tokens_in = sum(e.get("tokens_in", 0) for e in latest.values())
    tokens_out = sum(e.get("tokens_out", 0) for e in latest.values())
    summary = {"planned": len(plan.items), "skipped_unsuitable_pairs": len(plan.skipped_pairs),
               "skipped_requests": plan.skipped_requests, "done": done, "failed": failed, "pending": pending,
               "this_run": {"done": progress.done, "failed": progress.failed,
                            "tokens_in": progress.tokens_in, "tokens_out": progress.tokens_out, "cost": progress.cost},
               "tokens_in": tokens_in, "tokens_out": tokens_out}
    write_json(outdir / SUMMARY_FILE, summary)
    cost = f", cost this run {progress.cost:.4f}" if cfg.price_in or cfg.price_out else ""
    print(f"synth: {done}/{len(plan.items)} saved, {failed} failed, {pending} not sent; this run tokens in "
          f"{progress.tokens_in:,} out {progress.tokens_out:,}{cost}; dataset {outdir / DATASET_FILE}", file=out)
    if fatal:
        print(f"synth: FAILED, stopped early: {fatal[0]}; check --base-url, --model and the key in ${cfg.api_key_env}", file=out)
        return EXIT_FAILED
    if failed:
        print(f"synth: FAILED: {failed} request(s) failed, reasons in {outdir / FAILED_FILE}; "
              f"rerun the same command to retry only those", file=out)
        return EXIT_FAILED
    if pending:
        print(f"synth: INCOMPLETE: stopped at --max-requests with {pending} request(s) not sent; rerun to continue", file=out)
        return EXIT_INCOMPLETE
    print("synth: all requests done", file=out)
    return EXIT_OK
