"""tianji-ft pipeline: data -> train -> convert -> merge -> evaluate -> export, skipping what is up to date."""

from tianji_ft.cli._common import add_config_settings, add_verb, config_settings_env

def register(sub) -> None:
    from tianji_ft.workflows.pipeline import STAGES

    p = add_verb(sub, "pipeline", "Run the whole workflow for a config; stages with unchanged inputs are skipped.",
                 "tianji-ft pipeline internlm2_chat_7b_qlora_wishes_e3 --tiny\n"
                 "tianji-ft pipeline llama3_8b_instruct_qlora_chinese_e1 --model /models/llama3-8b-instruct "
                 "--data data/mix/llama3_chinese.jsonl --export q5_1", run)
    p.add_argument("config")
    p.add_argument("--model")
    p.add_argument("--data", nargs="+", default=[])
    p.add_argument("--work-dir")
    p.add_argument("--tiny", action="store_true", help="tiny model of the config's family and its sample data")
    p.add_argument("--deepspeed")
    p.add_argument("--export", dest="export_quant", choices=["f16", "q8_0", "q5_1"], help="also export GGUF for Ollama")
    p.add_argument("--from", dest="start", default=STAGES[0], choices=STAGES, help="re-run from this stage")
    p.add_argument("--until", default=STAGES[-1], choices=STAGES, help="stop after this stage")
    p.add_argument("--set", dest="sets", nargs="+", default=[], metavar="KEY=VALUE")
    add_config_settings(p)


def run(args) -> int:
    from tianji_ft.train.train import TrainRequest
    from tianji_ft.workflows.pipeline import PipelineRequest, run_pipeline

    train = TrainRequest(config=args.config, model=args.model, data=args.data, work_dir=args.work_dir,
                         tiny=args.tiny, deepspeed=args.deepspeed, settings=config_settings_env(args),
                         cfg_options=args.sets)
    return run_pipeline(PipelineRequest(train, export_quant=args.export_quant, start=args.start, until=args.until))
