"""tianji-ft plan: will it fit, how long, will it learn; the dry run's plan without the data report."""

from __future__ import annotations

from tianji_ft.cli._common import add_config_settings, add_verb
from tianji_ft.cli.train import add_plan_arguments, add_run_arguments, build_request, print_plan

EXAMPLE = """tianji-ft plan internlm2_chat_7b_qlora_wishes_e3 --model /models/internlm2-chat-7b --data wishes.json --gpu-memory 24GB
tianji-ft plan internlm2_chat_7b_full_wishes_e1 --model /models/internlm2-chat-7b --gpus 8 --nnodes 2 \\
    --deepspeed zero3 --gpu-memory 80GB --no-data    # memory from config.json alone, in seconds
tianji-ft plan internlm_7b_qlora_msagent_react_e3_gpu8 --tiny --json"""


def register(sub) -> None:
    p = add_verb(sub, "plan", "Plan a training run: memory per GPU, steps, ETA and warnings (no training).",
                 EXAMPLE, run)
    add_run_arguments(p)
    add_plan_arguments(p)
    p.add_argument("--no-data", action="store_true",
                   help="do not read the data (no tokenizer needed): memory and the config's warnings only")
    add_config_settings(p)


def run(args) -> int:
    return print_plan(args, build_request(args), data=not args.no_data)
