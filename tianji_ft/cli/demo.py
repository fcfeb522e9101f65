"""tianji-ft demo: the whole workflow on the tiny model (or a real one with --model)."""

from tianji_ft.cli._common import add_verb


def register(sub) -> None:
    p = add_verb(sub, "demo", "Build -> train (ZeRO-2) -> convert -> merge -> chat, and check the model learned.",
                 "tianji-ft demo                       # tiny InternLM2 on CPU, no downloads\n"
                 "tianji-ft demo --model /models/internlm2-chat-7b", run)
    p.add_argument("--model", help="a real base model path (default: build the tiny InternLM2 model)")
    p.add_argument("--work-dir", default="work_dirs/demo", help="where the demo writes (default work_dirs/demo)")


def run(args) -> int:
    from tianji_ft.workflows.demo import run_demo

    return run_demo(model=args.model, work_dir=args.work_dir)
