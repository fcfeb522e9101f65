"""tianji-ft train: run an XTuner config with the compatibility layer, a manifest and honest exit codes."""

from __future__ import annotations

import contextlib
import sys

from tianji_ft.cli._common import add_config_settings, add_verb, config_settings_env

EXAMPLE = """tianji-ft train internlm2_chat_7b_qlora_wishes_e3 --tiny            # any config on a laptop CPU
tianji-ft train internlm2_chat_7b_qlora_wishes_e3 --model /models/internlm2-chat-7b \\
    --data data/wishes/tianji-wishes-chinese-v0.2.json --deepspeed zero2 --work-dir work_dirs/wishes
tianji-ft train internlm2_chat_7b_qlora_wishes_e3 --model /models/internlm2-chat-7b --data wishes.json \\
    --dry-run --gpu-memory 24GB                                          # check, count and plan; no training"""


def add_run_arguments(p) -> None:
    """The arguments that say what a run trains and where (shared with ``tianji-ft plan``)."""
    p.add_argument("config", help="config name (tianji-ft configs list) or path")
    p.add_argument("--model", help="base model path (default: the config's model)")
    p.add_argument("--data", nargs="+", default=[], help="training data files, or folders (their .jsonl/.json files)")
    p.add_argument("--work-dir", help="default: work_dirs/CONFIG_NAME")
    p.add_argument("--deepspeed", help="zero1|zero2|zero2_offload|zero3|zero3_offload|none|PATH (default: the config's)")
    p.add_argument("--gpus", type=int, default=1, help="processes per node (torchrun when > 1)")
    p.add_argument("--nnodes", type=int, default=1, help="number of nodes (default 1)")
    p.add_argument("--tiny", action="store_true", help="use the tiny model of the config's family and its sample data")
    p.add_argument("--set", dest="sets", nargs="+", default=[], metavar="KEY=VALUE",
                   help="mmengine --cfg-options overrides (dict paths, e.g. model.lora.r=16)")


def add_plan_arguments(p) -> None:
    """What the plan (train --dry-run, tianji-ft plan) needs beyond the run itself."""
    p.add_argument("--gpu-memory", metavar="SIZE",
                   help="memory of one GPU, e.g. 80GB or 24GiB (default: the visible GPU's)")
    p.add_argument("--tokens-per-second", type=float, metavar="N",
                   help="the whole job's training speed, for the ETA (default: an earlier run's, if recorded)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def register(sub) -> None:
    p = add_verb(sub, "train", "Train a config from xtuner_configs/ (or any XTuner config file).", EXAMPLE, run)
    add_run_arguments(p)
    p.add_argument("--node-rank", type=int, default=0, help="this node's rank, 0 to nnodes-1 (default 0)")
    p.add_argument("--master-addr", default="127.0.0.1", help="address of node 0 (default 127.0.0.1)")
    p.add_argument("--master-port", type=int, help="port on node 0 (default: a free one)")
    p.add_argument("--launcher", choices=["slurm"], help="run under srun (inside an allocation)")
    p.add_argument("--resume", help="'auto' (the work dir's last checkpoint) or a checkpoint path")
    p.add_argument("--dry-run", action="store_true",
                   help="check data against the config, print counts and the plan (tianji-ft plan); no training")
    p.add_argument("--detach", action="store_true", help="run in the background; follow with tianji-ft logs WORK_DIR -f")
    p.add_argument("--overwrite", action="store_true",
                   help="train in an existing work dir that tianji-ft did not make (its files are kept)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no live progress (iteration, loss, lr, tokens/s, ETA) on stderr; train.log has it all")
    add_plan_arguments(p)
    add_config_settings(p)


def build_request(args):
    from tianji_ft.train.train import TrainRequest

    settings = config_settings_env(args)
    return TrainRequest(
        config=args.config, model=args.model, data=args.data, work_dir=args.work_dir, deepspeed=args.deepspeed,
        gpus=args.gpus, nnodes=args.nnodes, node_rank=getattr(args, "node_rank", 0),
        master_addr=getattr(args, "master_addr", "127.0.0.1"), master_port=getattr(args, "master_port", None),
        launcher=getattr(args, "launcher", None), resume=getattr(args, "resume", None), tiny=args.tiny,
        settings=settings, cfg_options=args.sets, overwrite=getattr(args, "overwrite", False),
        quiet=getattr(args, "quiet", False),
    )


def print_plan(args, req, data: bool = True, out=None) -> int:
    """Plan the run, keep the plan (tianji_ft.train.plan.record_plan) and print it (and the dry run's report)."""
    out = out or sys.stdout
    from tianji_ft.train.dryrun import format_report
    from tianji_ft.train.plan import PlanOptions, format_plan, make_plan, plan_json, record_plan

    options = PlanOptions(gpu_memory=args.gpu_memory, tokens_per_second=args.tokens_per_second, data=data)
    # The libraries' logging goes to the process's stderr (a handler made now keeps that stream), so
    # stdout holds the plan alone and --json output parses.
    with contextlib.redirect_stdout(sys.__stderr__ or sys.stderr):
        plan, report = make_plan(req, options)
    kept = record_plan(plan, plan["work_dir"])
    if args.json:
        print(plan_json(plan), file=out)
    else:
        if report is not None and getattr(args, "dry_run", False):
            print(format_report(report), file=out)
        print(format_plan(plan), file=out)
        for line in kept:
            print(f"note: {line}", file=out)
    return 0


def run(args) -> int:
    from tianji_ft.train import train as launcher

    req = build_request(args)
    if args.dry_run:
        return print_plan(args, req)
    if args.detach:
        from pathlib import Path

        from tianji_ft.train.detach import start_detached

        work_dir = launcher.claim_work_dir(launcher.plan(req), req.overwrite)
        pid = start_detached(req, Path(work_dir))
        print(f"[tianji-ft] training in the background (pid {pid}); follow: tianji-ft logs {work_dir} -f")
        return 0
    return launcher.train(req, out=sys.stdout)
