"""tianji-ft pipeline: data -> train -> convert -> merge -> evaluate -> export, skipping what is up to date."""

import sys

from tianji_ft.cli._common import add_config_settings, add_verb, config_settings_env
from tianji_ft.cli._judge import add_judge_flags, endpoint_from_args

def register(sub) -> None:
    from tianji_ft.workflows.pipeline import STAGES

    p = add_verb(sub, "pipeline", "Run the whole workflow for a config; stages with unchanged inputs are skipped.",
                 "tianji-ft pipeline internlm2_chat_7b_qlora_wishes_e3 --tiny\n"
                 "tianji-ft pipeline llama3_8b_instruct_qlora_chinese_e1 --model /models/llama3-8b-instruct "
                 "--data data/mix/llama3_chinese.jsonl --export q5_1", run)
    p.add_argument("config", help="config name (tianji-ft configs list) or path")
    p.add_argument("--model", help="base model folder (default: the config's model)")
    p.add_argument("--data", nargs="+", default=[], help="training data files, or folders of .jsonl/.json")
    p.add_argument("--work-dir", help="where every stage writes (default: work_dirs/CONFIG_NAME)")
    p.add_argument("--tiny", action="store_true", help="tiny model of the config's family and its sample data")
    p.add_argument("--deepspeed", help="zero1|zero2|zero2_offload|zero3|zero3_offload|none|PATH (default: the config's)")
    p.add_argument("--export", dest="export_quant", choices=["f16", "q8_0", "q5_1"], help="also export GGUF for Ollama")
    p.add_argument("--from", dest="start", default=STAGES[0], choices=STAGES, help="re-run from this stage")
    p.add_argument("--until", default=STAGES[-1], choices=STAGES, help="stop after this stage")
    p.add_argument("--set", dest="sets", nargs="+", default=[], metavar="KEY=VALUE",
                   help="mmengine --cfg-options overrides (dict paths, e.g. model.lora.r=16)")
    p.add_argument("--json", action="store_true",
                   help="print each stage's outcome, the outputs and the next command as JSON on stdout "
                        "(the stage lines go to stderr)")
    add_config_settings(p)
    pref = p.add_argument_group("preference training after SFT: pairs from the SFT model, DPO/ORPO, judged against "
                                "SFT (docs/preference_training.md)")
    pref.add_argument("--preference", metavar="CONFIG",
                      help="a DPO/ORPO config to train from the merged SFT model on judged pairs of its own answers, "
                           "e.g. internlm2_chat_7b_qlora_wishes_dpo_e1")
    pref.add_argument("--pairs-prompts", metavar="FILE",
                      help="prompts the SFT model answers twice for the pairs: one per line, or conversation records")
    pref.add_argument("--judge-prompts", metavar="FILE",
                      help="prompts (one per line) of the final preference-vs-SFT comparison "
                           "(default: the preference config's evaluation prompts)")
    pref.add_argument("--preference-work-dir", metavar="DIR",
                      help="the preference run's work dir (default: work_dirs/CONFIG)")
    add_judge_flags(p, "judge (the pairs and the final comparison; docs/judge.md)")


def run(args) -> int:
    from tianji_ft.train.train import TrainRequest
    from tianji_ft.workflows.pipeline import PipelineRequest, run_pipeline

    train = TrainRequest(config=args.config, model=args.model, data=args.data, work_dir=args.work_dir,
                         tiny=args.tiny, deepspeed=args.deepspeed, settings=config_settings_env(args),
                         cfg_options=args.sets, quiet=not sys.stderr.isatty())  # one line a stage in a log
    req = PipelineRequest(train, export_quant=args.export_quant, start=args.start, until=args.until)
    if args.preference or args.pairs_prompts:
        from tianji_ft.core.errors import UserError
        from tianji_ft.workflows.preference import PreferenceRequest, run_with_preference

        if not (args.preference and args.pairs_prompts):
            raise UserError("preference training needs both --preference CONFIG and --pairs-prompts FILE")
        pref = PreferenceRequest(args.preference, args.pairs_prompts, endpoint_from_args(args), rubric=args.rubric,
                                 judge_prompts=args.judge_prompts, work_dir=args.preference_work_dir)
        return run_with_preference(req, pref, as_json=args.json)
    return run_pipeline(req, as_json=args.json)
