"""tianji-ft logs: show (or follow) a training run's log."""

from tianji_ft.cli._common import add_verb


def register(sub) -> None:
    p = add_verb(sub, "logs", "Show the log of a training run (-f to follow until it ends).",
                 "tianji-ft logs work_dirs/internlm2_chat_7b_qlora_wishes_e3 -f", run)
    p.add_argument("work_dir")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--lines", type=int, default=40)


def run(args) -> int:
    from tianji_ft.train.detach import follow_log

    return follow_log(args.work_dir, follow=args.follow, lines=args.lines)
