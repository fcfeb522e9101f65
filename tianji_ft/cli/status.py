"""tianji-ft status: is a training run running, finished or failed?"""

from tianji_ft.cli._common import add_verb


def register(sub) -> None:
    p = add_verb(sub, "status", "Show the state of a training run (running, finished, failed, interrupted, stopped).",
                 "tianji-ft status work_dirs/internlm2_chat_7b_qlora_wishes_e3", run)
    p.add_argument("work_dir", help="the training work dir")
    p.add_argument("--json", action="store_true", help="print the state as JSON")


def run(args) -> int:
    from tianji_ft.train.detach import status

    info = status(args.work_dir)
    ok = info["state"] in ("starting", "running", "finished")
    if args.json:
        import json

        print(json.dumps(info, ensure_ascii=False, indent=2))
        return 0 if ok else 1
    if info["signal"]:
        info["state"] = f"{info['state']} ({info['signal']})"
    from tianji_ft.train.live import describe

    if info["progress"]:
        info["progress"] = describe(info["progress"])
    for key, value in info.items():
        if value is not None and key != "signal":
            print(f"{key}: {value}")
    if info["state"] == "finished":
        print(f"next: tianji-ft convert {args.work_dir}")
    return 0 if ok else 1
