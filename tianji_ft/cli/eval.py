"""``tianji-ft eval``: answer a test split or a prompt file, score it, compare with a base model."""

from __future__ import annotations

from tianji_ft.cli._common import add_verb
from tianji_ft.cli._judge import add_judge_flags, endpoint_from_args, judge_exit_code
from tianji_ft.cli.chat import add_model_flags, add_sampling_flags, params_from_args

EXAMPLE = """\
tianji-ft eval work_dirs/medqa/merged --data data/medqa_split/test.jsonl \\
    --compare internlm/internlm2-chat-7b -o eval/medqa
tianji-ft eval work_dirs/wishes/merged --prompts prompts.txt -o eval/wishes
tianji-ft eval work_dirs/wishes/merged --data wishes_test.jsonl --compare internlm/internlm2-chat-7b --judge \\
    --base-url https://api.deepseek.com/v1 --api-model deepseek-chat --api-key-env DEEPSEEK_API_KEY -o eval/judged
tianji-ft eval --judge-answers eval/sft eval/dpo --base-url http://127.0.0.1:8000/v1 --api-model qwen -o eval/sft_vs_dpo
"""


def register(subparsers) -> None:
    parser = add_verb(subparsers, "eval", "Answer every test prompt in a fresh context and score the answers "
                      "(BLEU, ROUGE-L, exact match, length, distinct-2, stop rate).", EXAMPLE, func=_eval)
    add_model_flags(parser, optional=True)  # not with --judge-answers
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", metavar="TEST.jsonl",
                        help="conversation records with reference answers (e.g. the MedQA test split)")
    source.add_argument("--prompts", metavar="FILE", help="a text file with one prompt per line (no references)")
    parser.add_argument("--compare", metavar="BASE_MODEL", help="also answer with this model and put both side by side "
                             "(--template and --system apply to both)")
    parser.add_argument("--compare-adapter", metavar="DIR", help="adapter for the --compare model")
    parser.add_argument("-o", "--output", metavar="DIR",
                        help="folder for answers.jsonl, metrics.json, report.md (default: WORK_DIR/eval for a model "
                             "or adapter in a work dir's layout, else eval_results)")
    parser.add_argument("--overwrite", action="store_true",
                   help="replace an existing, non-empty output folder this command did not make (never one holding an input)")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts generated together (default 8)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress on stderr (prompts answered, tokens/s; a bar on a terminal)")
    parser.add_argument("--json", action="store_true",
                        help="print the summary (metrics per model, judge rates, settings, output folder) as JSON")
    add_sampling_flags(parser, "eval")
    g = parser.add_argument_group("judge: what to compare")
    g.add_argument("--judge", action="store_true",
                   help="judge MODEL's answers (A) against the --compare model's (B) with the judge endpoint below")
    g.add_argument("--judge-answers", nargs="+", metavar="EVAL_DIR",
                   help="judge earlier eval outputs instead of answering: two folders (A, B), or one made with "
                        "--compare (its model A, its base B); needs no MODEL, --data or --prompts")
    add_judge_flags(parser, "judge (an LLM compares the two models' answers; docs/judge.md)")


def default_output(model: str, adapter: str | None) -> str:
    """WORK_DIR/eval when the model (or its adapter) is a folder of a work dir's layout, else eval_results."""
    from tianji_ft.core.layout import EVAL, work_dir_of

    work_dir = work_dir_of(adapter) or work_dir_of(model)
    return str(work_dir / EVAL) if work_dir else "eval_results"


def _eval(args) -> int:
    from tianji_ft.chat.evaluate import evaluate, load_prompts, load_test_data
    from tianji_ft.core.errors import UserError

    if args.judge_answers:
        return _judge_answers(args)
    if not args.model or not (args.data or args.prompts):
        raise UserError("eval needs MODEL and --data or --prompts (or --judge-answers EVAL_DIR... to judge earlier "
                        "evals); see 'tianji-ft eval --help'")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, not {args.batch_size}")
    judge = None
    if args.judge:
        from tianji_ft.chat.eval_judge import JudgeSpec

        judge = JudgeSpec(endpoint_from_args(args), args.rubric)
    items = load_test_data(args.data) if args.data else load_prompts(args.prompts)
    args.output = args.output or default_output(args.model, args.adapter)
    summary = evaluate(args.model, items, args.output, adapter=args.adapter, template=args.template,
                       system=args.system, compare=args.compare, compare_adapter=args.compare_adapter,
                       params=params_from_args(args), batch_size=args.batch_size, bits=args.bits,
                       device=args.device, data_file=args.data or args.prompts, overwrite=args.overwrite,
                       quiet=args.quiet, judge=judge)
    if args.json:
        return _print_json(args, summary)
    for key in ("model", "base"):
        if key in summary:
            m = summary[key]["metrics"]
            scored = (f", BLEU {m['bleu']:.2f}, ROUGE-L {m['rouge_l']:.4f} (over the {m['references']} of "
                      f"{m['count']} prompts that have a reference answer)") if "bleu" in m else \
                ", no reference answers: BLEU and ROUGE-L not computed"
            print(f"{key}: stop rate {m['stop_rate']:.2f}{scored}, distinct-2 {m['distinct_2']:.3f}")
    if "judge" in summary:
        from tianji_ft.synth.judge import summary_line

        print(summary_line(summary["judge"]))
        print(f"wrote {args.output}/answers.jsonl, judgments.jsonl, metrics.json, report.md")
        return judge_exit_code(summary["judge"])
    print(f"wrote {args.output}/answers.jsonl, metrics.json, report.md")
    print(f"next: {_next_step(args)}")
    return 0


def _next_step(args) -> str:
    adapter = f" --adapter {args.adapter}" if args.adapter else ""
    return (f"read {args.output}/report.md; ship it: tianji-ft export ollama {args.model}{adapter}, "
            f"or serve it: tianji-ft serve {args.model}{adapter}")


def _print_json(args, summary: dict) -> int:
    """The summary (what metrics.json holds), where it was written and the next command, as JSON on stdout."""
    import json

    rc = judge_exit_code(summary["judge"]) if "judge" in summary else 0
    print(json.dumps({**summary, "output": str(args.output), "next": _next_step(args) if args.model else None},
                     ensure_ascii=False, indent=2))
    return rc


def _judge_answers(args) -> int:
    from tianji_ft.chat.eval_judge import JudgeSpec, judge_answer_folders
    from tianji_ft.core.errors import UserError
    from tianji_ft.synth.judge import summary_line

    given = [flag for flag, value in (("MODEL", args.model), ("--data", args.data), ("--prompts", args.prompts),
                                      ("--compare", args.compare), ("--judge", args.judge)) if value]
    if given:
        raise UserError(f"--judge-answers judges earlier evals and answers nothing: leave out {', '.join(given)}")
    args.output = args.output or "eval_results"
    summary = judge_answer_folders(args.judge_answers, args.output, JudgeSpec(endpoint_from_args(args), args.rubric),
                                   overwrite=args.overwrite)
    if args.json:
        return _print_json(args, summary)
    print(summary_line(summary["judge"]))
    print(f"wrote {args.output}/answers.jsonl, judgments.jsonl, metrics.json, report.md")
    return judge_exit_code(summary["judge"])
