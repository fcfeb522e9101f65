"""tianji-ft logs: show (or follow) a training run's log."""

from tianji_ft.cli._common import add_verb


def register(sub) -> None:
    p = add_verb(sub, "logs", "Show the log of a training run (-f to follow until it ends).",
                 "tianji-ft logs work_dirs/internlm2_chat_7b_qlora_wishes_e3 -f", run)
    p.add_argument("work_dir", help="the training work dir")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until the run ends")
    p.add_argument("-n", "--lines", type=int, default=40, help="lines of the log to show first (default 40)")
    p.add_argument("--tensorboard", action="store_true",
                   help="print the command that opens TensorBoard on this run (train with --report-to tensorboard)")


def run(args) -> int:
    from pathlib import Path

    from tianji_ft.train.detach import follow_log

    if args.tensorboard:
        events = sorted(Path(args.work_dir).glob("*/vis_data/events.out.tfevents.*"))
        if not events:
            from tianji_ft.core.errors import UserError

            raise UserError(f"{args.work_dir}: no TensorBoard event files; train with --report-to tensorboard")
        print(f"tensorboard --logdir {args.work_dir}")
        return 0
    return follow_log(args.work_dir, follow=args.follow, lines=args.lines)
