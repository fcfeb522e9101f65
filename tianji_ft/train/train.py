"""The training launcher behind ``tianji-ft train``.

It resolves a config (by name or path), turns settings into the config's
TIANJI_* environment variables (the same ones plain ``xtuner train`` reads),
picks the DeepSpeed JSON, writes the run manifest, runs XTuner's train
module through the compatibility entry point, and records the outcome.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tianji_ft.core import signals
from tianji_ft.core.errors import StepFailed, UserError
from tianji_ft.core.fsio import sha256_file
from tianji_ft.core.lock import WorkDirLock
from tianji_ft.core.outputs import Output, check_outputs, mark
from tianji_ft.core.paths import CONFIGS_DIR, PROJECT_ROOT
from tianji_ft.xtuner import runner as run
from tianji_ft.xtuner.compat import CHECK_DATA_ENV, DROP_QUANTIZATION_ENV, DROP_QUANTIZATION_IF_NO_CUDA
from tianji_ft.core.manifest import (MANIFEST_NAME, TRAIN_LOG, now_iso, package_versions, read_manifest,
                                     write_manifest)

DEEPSPEED_NAMES = ("zero1", "zero2", "zero2_offload", "zero3", "zero3_offload")
DEEPSPEED_DIR = CONFIGS_DIR / "deepspeed"
WORK_DIR_KIND = "work-dir"
# The files XTuner's configs load with datasets' "json" builder, when --data names a folder.
DATA_SUFFIXES = (".jsonl", ".json")


@dataclass
class TrainRequest:
    config: str
    model: str | None = None
    data: list[str] = field(default_factory=list)
    work_dir: str | None = None
    deepspeed: str | None = None  # name, path, "none", or None for the config's default
    gpus: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None
    launcher: str | None = None  # None (local / torchrun) or "slurm"
    resume: str | None = None  # "auto", a checkpoint path, or None
    tiny: bool = False
    settings: dict[str, str] = field(default_factory=dict)  # TIANJI_* variable -> value
    cfg_options: list[str] = field(default_factory=list)
    log_to_terminal: bool = False
    overwrite: bool = False  # train in a work dir tianji-ft did not make (its files are kept)
    quiet: bool = False  # no live progress on stderr (train.log has it all)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_deepspeed(choice: str | None, cuda: bool) -> tuple[str | None, str]:
    """(JSON path or None, a note for the user)."""
    if choice in (None, "", "none"):
        return None, "DeepSpeed off"
    if choice in DEEPSPEED_NAMES:
        name = choice if cuda else f"{choice}_cpu_bf16"
        note = f"DeepSpeed {choice}" + ("" if cuda else f" (no CUDA: using {name}.json, bf16; DeepSpeed on CPU refuses fp16)")
        return str(DEEPSPEED_DIR / f"{name}.json"), note
    path = Path(choice)
    if not path.is_file():
        raise UserError(f"--deepspeed {choice}: neither a name ({', '.join(DEEPSPEED_NAMES)}, none) nor a JSON file")
    return str(path.resolve()), f"DeepSpeed config {path}"


def last_checkpoint(work_dir: Path) -> str | None:
    marker = work_dir / "last_checkpoint"
    if marker.is_file():
        path = marker.read_text().strip()
        if path and Path(path).exists():
            return path
    return None


def _config_and_meta(config: str) -> tuple[Path, dict]:
    from tianji_ft.configs.registry import config_meta, resolve_config

    path = resolve_config(config)
    return path, config_meta(path)


def _default_model(config_path: Path) -> str | None:
    """The model the config loads when TIANJI_MODEL is unset."""
    from tianji_ft.configs.registry import config_settings

    return (config_settings(config_path).get("TIANJI_MODEL") or {}).get("default")


def _unread_settings(config_path: Path, settings: dict) -> list[str]:
    """A note for each setting given that the config does not read (e.g. --pack for a DPO config)."""
    from tianji_ft.configs.registry import config_settings
    from tianji_ft.configs.settings import BY_ENV

    read = config_settings(config_path)
    unread = [f"{BY_ENV[env].flag if env in BY_ENV else env}" for env in settings if env not in read]
    return [f"{config_path.name} does not read {', '.join(unread)}: ignored"] if unread else []


def expand_data_args(names: list[str]) -> list[str]:
    """``--data`` as files: a folder stands for its .jsonl/.json files (sorted, not recursive)."""
    files = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
            if not found:
                raise UserError(f"--data {name}: the folder holds no {' or '.join(DATA_SUFFIXES)} files; "
                                "convert the data first (tianji-ft data convert) or name the files")
            files += [str(p) for p in found]
        elif path.is_file():
            files.append(name)
        else:
            raise UserError(f"--data {name}: no such file or folder; pass existing files with --data")
    return files


def _data_entries(files: list[str]) -> list[dict]:
    return [{"path": str(Path(name).resolve()), "sha256": sha256_file(name)} for name in expand_data_args(files)]


TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # --report-to value -> the package it needs


def check_report_to(value: str | None) -> None:
    """``--report-to`` names known trackers whose packages are installed (checked before training starts)."""
    import importlib.util

    for name in (value or "none").split(","):
        if name == "none":
            continue
        if name not in TRACKERS:
            raise UserError(f"--report-to {value}: unknown tracker {name!r}; choose none, tensorboard, wandb "
                            "or tensorboard,wandb")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise UserError(f"--report-to {name} needs the {TRACKERS[name]} package: pip install {TRACKERS[name]}"
                            + (" (WANDB_MODE=offline keeps runs on disk)" if name == "wandb" else ""))


def plan(req: TrainRequest, cuda: bool | None = None) -> dict:
    """Everything the run will do, without doing it: command, env, manifest."""
    cuda = cuda_available() if cuda is None else cuda
    config_path, meta = _config_and_meta(req.config)
    name = meta.get("name") or config_path.stem
    # a --tiny run never writes into the real run's folder
    work_dir = Path(req.work_dir or Path("work_dirs") / (f"{name}-tiny" if req.tiny else name)).resolve()
    settings = dict(req.settings)
    check_report_to(settings.get("TIANJI_REPORT_TO"))
    notes = _unread_settings(config_path, settings)
    model, data = req.model, list(req.data)
    if req.tiny:
        from tianji_ft.models.tiny import ensure_tiny_model

        family = meta.get("family", "internlm2")
        model = model or str(ensure_tiny_model(family))
        if not data:
            data = [str(PROJECT_ROOT / p) for p in meta.get("tiny_data", [])]
        # A few short packed rows (MS-Agent samples are ~750 tiny-tokenizer tokens and
        # would lose every label at 256); no warmup, which mmengine rejects when it
        # rounds to zero iterations; short evaluation answers.
        max_length = "1024" if meta.get("data_format") == "msagent" else "256"
        for key, value in (("TIANJI_MAX_LENGTH", max_length), ("TIANJI_ACCUM", "1"), ("TIANJI_WARMUP_RATIO", "0"),
                           ("TIANJI_EPOCHS", "1"), ("TIANJI_BATCH_SIZE", "1"), ("TIANJI_EVAL_MAX_NEW_TOKENS", "16")):
            settings.setdefault(key, value)
        if meta.get("eval_prompts"):  # one sample answer shows the hook works; XTuner's first ones run to 50 tokens
            settings.setdefault("TIANJI_EVAL_PROMPTS", json.dumps(meta["eval_prompts"][:1], ensure_ascii=False))
        notes.append(f"--tiny: tiny {family} model {model}")
    if model:
        settings["TIANJI_MODEL"] = str(Path(model).resolve()) if Path(model).exists() else model
    if data:
        settings["TIANJI_DATA"] = os.pathsep.join(str(Path(p).resolve()) for p in expand_data_args(data))
    settings["TIANJI_WORK_DIR"] = str(work_dir)
    cfg_options = list(req.cfg_options)
    slurm = req.launcher == "slurm"
    internal = {CHECK_DATA_ENV: "1"}
    if slurm:
        # The launching process (a login node) may have no GPU while every task has one:
        # each task decides for itself (tianji_ft.xtuner.entry), from GPU settings.
        cuda = True
        if meta.get("quantized"):
            internal[DROP_QUANTIZATION_ENV] = DROP_QUANTIZATION_IF_NO_CUDA
        notes.append("slurm: each task checks for CUDA itself (bf16 DeepSpeed and plain LoRA only where it has none)")
    elif meta.get("quantized") and not cuda:
        internal[DROP_QUANTIZATION_ENV] = "1"
        notes.append("no CUDA: bitsandbytes 4-bit cannot load on CPU, training plain LoRA instead of QLoRA")
    ds_choice = req.deepspeed if req.deepspeed is not None else meta.get("deepspeed")
    ds_path, ds_note = resolve_deepspeed(ds_choice, cuda)
    notes.append(ds_note)
    resume = req.resume
    if resume == "auto":
        resume = last_checkpoint(work_dir)
        notes.append(f"resuming from {resume}" if resume else "--resume auto: no checkpoint yet, starting fresh")
    args = [str(config_path), "--work-dir", str(work_dir)]
    if ds_path:
        args += ["--deepspeed", ds_path]
    if resume:
        args += ["--resume", str(resume)]
    if cfg_options:
        args += ["--cfg-options", *cfg_options]
    world = req.gpus * req.nnodes
    if req.launcher == "slurm":
        cmd = ["srun", f"--nodes={req.nnodes}", f"--ntasks-per-node={req.gpus}", f"--gres=gpu:{req.gpus}",
               *run.tool_command("train", [*args, "--launcher", "slurm"])]
    elif world > 1:
        cmd = run.torchrun_command("train", args, nproc=req.gpus, nnodes=req.nnodes, node_rank=req.node_rank,
                                   master_addr=req.master_addr, master_port=req.master_port)
    else:
        cmd = run.tool_command("train", args)
    env = run.launch_env(single_process=world == 1 and not slurm, extra={**settings, **internal})
    if not cuda:
        env.setdefault("OMP_NUM_THREADS", "1" if world > 1 else str(min(4, os.cpu_count() or 1)))
    data_files = [p for p in settings.get("TIANJI_DATA", "").split(os.pathsep) if p]
    manifest = {
        "config": {"name": name, "version": meta.get("version"), "path": str(config_path),
                   "sha256": sha256_file(config_path)},
        "model": settings.get("TIANJI_MODEL") or _default_model(config_path),
        "family": meta.get("family"),
        "template": meta.get("template"),
        "system": settings.get("TIANJI_SYSTEM", meta.get("system", "")),
        "lora": bool(meta.get("lora", True)),
        "quantized": bool(meta.get("quantized")) and cuda and not slurm,
        "data": _data_entries(data_files) if data_files else [],
        "env": settings,
        "cfg_options": cfg_options,
        "deepspeed": ds_path,
        "world_size": world,
        "tiny": req.tiny,
        "command": cmd,
    }
    return {"work_dir": work_dir, "cmd": cmd, "env": env, "manifest": manifest, "notes": notes}


def claim_work_dir(p: dict, overwrite: bool = False) -> Path:
    """The output-safety rule for a work dir (never an input, never a stranger's folder unasked);
    then the folder is made and marked as ours, so what the run writes first (a pid file, a
    pipeline's state) does not make a stranger of it."""
    work_dir: Path = p["work_dir"]
    manifest = p["manifest"]
    ours_before_markers = (work_dir / MANIFEST_NAME).is_file()  # a work dir of ours from before the marker
    model = manifest.get("model")
    inputs = [("config", manifest["config"]["path"])]
    inputs += [("base model", model)] if model and Path(model).exists() else []
    inputs += [("data file", d["path"]) for d in manifest["data"]]
    check_outputs(inputs, [Output(work_dir, "--work-dir", kind=WORK_DIR_KIND)],
                  overwrite=overwrite or ours_before_markers)
    work_dir.mkdir(parents=True, exist_ok=True)
    mark(work_dir, WORK_DIR_KIND)
    return work_dir


def train(req: TrainRequest, runner: run.Runner | None = None, out=sys.stdout) -> int:
    """Run training; return the training process's exit code (0 on success).

    The work dir is locked for the run (one run per work dir; on a multi-node
    launch, node 0 holds it). The manifest's ``state`` ends as ``finished``,
    ``failed`` (with XTuner's exit code) or ``interrupted`` (with the signal).
    A failure raises :class:`StepFailed` naming the 'train' step.
    """
    p = plan(req)
    work_dir = claim_work_dir(p, req.overwrite)
    lock = WorkDirLock(work_dir, "training run", warn=lambda msg: print(msg, file=out, flush=True))
    if req.node_rank == 0:
        lock.acquire()
    try:
        return _train_locked(req, p, work_dir, runner, out)
    finally:
        lock.release()


def _train_locked(req: TrainRequest, p: dict, work_dir: Path, runner, out) -> int:
    for note in p["notes"]:
        print(f"[tianji-ft] {note}", file=out, flush=True)
    manifest = dict(p["manifest"], packages=package_versions(), started=now_iso(), ended=None, state="running",
                    exit_code=None, signal=None, last_checkpoint=None)
    kept = _saved_plan(work_dir, manifest)
    if kept:
        manifest["plan"] = kept
    write_manifest(work_dir, manifest)
    log_path = None if req.log_to_terminal else work_dir / TRAIN_LOG
    print(f"[tianji-ft] training {manifest['config']['name']} -> {work_dir}"
          + (f" (log: {log_path})" if log_path else ""), file=out, flush=True)
    rc, state, signal_name, start = 1, "failed", None, time.monotonic()
    try:
        with _live_progress(log_path, work_dir, manifest, req.quiet):
            run.run_step("train", p["cmd"], p["env"], log_path, runner=runner)
        rc, state = 0, "finished"
    except StepFailed as err:
        rc = err.returncode
        raise
    except KeyboardInterrupt as err:  # SIGINT, or SIGTERM/SIGHUP (tianji_ft.core.signals)
        rc, state, signal_name = signals.exit_code(err), "interrupted", signals.signal_name(err)
        raise
    finally:
        manifest.update(ended=now_iso(), state=state, exit_code=rc, signal=signal_name,
                        last_checkpoint=last_checkpoint(work_dir), elapsed_s=round(time.monotonic() - start, 1))
        if rc == 0:
            throughput = _throughput(work_dir, manifest)
            if throughput:
                manifest["throughput"] = throughput
        write_manifest(work_dir, manifest)
        if rc == 0:
            from tianji_ft.train.lossplot import plot_loss

            png = plot_loss(work_dir)
            if png:
                print(f"[tianji-ft] loss curve: {png}", file=out, flush=True)
            print(f"[tianji-ft] next: tianji-ft convert {work_dir}", file=out, flush=True)
    return rc


def _live_progress(log_path: Path | None, work_dir: Path, manifest: dict, quiet: bool):
    """Iteration, loss, lr, tokens/s and ETA from train.log while the run writes it (stderr)."""
    import contextlib

    from tianji_ft.train.live import LiveProgress
    from tianji_ft.train.plan import tokens_per_iter

    if log_path is None:  # XTuner writes to the terminal itself
        return contextlib.nullcontext()
    return LiveProgress(log_path, quiet=quiet, tokens_per_iter=lambda: tokens_per_iter(work_dir, manifest))


def _saved_plan(work_dir: Path, manifest: dict) -> dict | None:
    """The plan a dry run made for exactly these inputs (tianji_ft.train.plan), to keep in the manifest."""
    from tianji_ft.train.plan import saved_plan

    try:
        previous = read_manifest(work_dir, required=False)
    except UserError:  # an unreadable manifest from before is replaced, as it always was
        previous = None
    return saved_plan(manifest, previous)


def _throughput(work_dir: Path, manifest: dict) -> dict | None:
    """What the finished run measured (tianji_ft.train.plan.measure_throughput); a plan's ETA reads it."""
    from tianji_ft.train.plan import measure_throughput

    try:
        return measure_throughput(work_dir, manifest)
    except (OSError, ValueError, TypeError, KeyError) as err:  # bookkeeping never fails a finished run
        return {"error": f"{type(err).__name__}: {err}"}


def request_to_json(req: TrainRequest) -> str:
    return json.dumps(asdict(req), ensure_ascii=False)
