"""``tianji-ft data``: convert datasets to XTuner's conversation format, and check,
count, split, mix, dedupe and clean converted files.

Every command that writes checks its outputs (``-o``, the rejects file,
``--report``, ``--plot``) against its inputs and each other before it reads
or writes anything (exit 2 on a refusal); convert, clean, dedupe and mix exit
3 when they keep no record ("no record kept"), writing the rejects file and
the report but no empty output."""

from __future__ import annotations

import argparse
import json
import sys

from tianji_ft.cli._common import add_verb

EXAMPLES = {
    "convert": "tianji-ft data convert medqa MedInfo2019-QA-Medications.xlsx -o data/medqa.jsonl --report medqa.report.json",
    "validate": "tianji-ft data validate data/medqa.jsonl data/firefly.jsonl",
    "stats": "tianji-ft data stats data/medqa.jsonl --tokenizer internlm/internlm2-chat-7b --plot medqa-lengths.png",
    "split": "tianji-ft data split data/medqa.jsonl --test-ratio 0.3 --seed 42 -o data/medqa_split",
    "mix": "tianji-ft data mix data/mix/llama3_chinese.json --report mix.report.json",
    "dedupe": "tianji-ft data dedupe data/wishes.jsonl -o data/wishes.dedup.jsonl",
    "clean": "tianji-ft data clean wishes data/wishes.jsonl -o data/wishes.clean.jsonl --enable peer_pronoun",
    "kinds": "tianji-ft data kinds",
}


# Kept here so that building the parser imports no library module; a test
# checks it against tianji_ft.data.wishes.DEFAULT_RULES.
WISHES_DEFAULT_RULES = ("first_line", "wrapping_quotes", "leading_punct", "particle_after_punct", "non_answer",
                        "min_length")


def _sub(sub, name: str, summary: str, func) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=summary, description=summary,
                            epilog="example:\n  " + EXAMPLES[name],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=func)
    return parser


def _writer_flags(parser: argparse.ArgumentParser, encoding: bool = True) -> None:
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress on stderr (a bar on a terminal, a status line every 10 s otherwise)")
    parser.add_argument("--report", metavar="REPORT.json",
                        help='also write {"read", "written", "rejected", "reasons"} as JSON here')
    if encoding:
        parser.add_argument("--encoding", default="utf-8", help="text encoding of the input (default utf-8; e.g. gb18030)")


def register(subparsers) -> None:
    parser = add_verb(subparsers, "data", "Convert, check, split, mix and clean fine-tuning data.",
                      EXAMPLES["convert"] + "\n" + EXAMPLES["split"])
    parser.set_defaults(func=lambda args: parser.print_help() or 2)
    sub = parser.add_subparsers(dest="data_command", metavar="COMMAND")

    p = _sub(sub, "convert", "Convert a public dataset format into XTuner's conversation format, or its preference "
             "format (kinds ultrafeedback, hh-rlhf, conversation-pairs) (.jsonl or .json).",
             _convert)
    p.add_argument("kind", metavar="KIND", help="converter name; 'tianji-ft data kinds' lists them")
    p.add_argument("sources", metavar="SRC", nargs="+", help="input files or folders (.jsonl, .json, .csv, .xlsx)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output .jsonl or .json; rejected records go beside it (out.jsonl -> out.rejects.jsonl)")
    p.add_argument("--system", help="system prompt for the first turn ('' for none; medqa defaults to a doctor prompt)")
    p.add_argument("--sheet", help="xlsx sheet name (default: the first sheet)")
    p.add_argument("--question-col", help="medqa: question column (default Question)")
    p.add_argument("--answer-col", help="medqa: answer column (default Answer)")
    p.add_argument("--placeholders", metavar="LIST",
                   help="medqa: comma-separated placeholder answers to reject, case-insensitive, replacing "
                        "the default n/a,na,none,no answer,no answers,unanswerable (empty answers are always rejected)")
    p.add_argument("--input-col", help="generic: input column")
    p.add_argument("--output-col", help="generic: output column")
    p.add_argument("--system-col", help="generic: system prompt column (empty cells fall back to --system)")
    p.add_argument("--keep-raw", action="store_true", default=None,
                   help="msagent: validate only and write the raw rows (for configs that apply msagent_react_map_fn)")
    _writer_flags(p)

    p = _sub(sub, "validate", "Check converted files against the conversation or preference schema (the records say "
             "which); exit 1 on any problem.", _validate)
    p.add_argument("files", metavar="FILE", nargs="+", help="converted .jsonl/.json files to check")
    p.add_argument("--encoding", default="utf-8", help="text encoding of the files (default utf-8; e.g. utf-16)")

    p = _sub(sub, "stats", "Records, turns, length percentiles, empty fields and duplicates of a converted file "
             "(of preference records: prompt turns, chosen/rejected lengths, same answers, duplicate pairs).", _stats)
    p.add_argument("file", metavar="FILE", help="converted records (.jsonl or .json)")
    p.add_argument("--tokenizer", metavar="PATH", help="also count tokens with this tokenizer (path or hub id)")
    p.add_argument("--plot", metavar="OUT.png", help="write a length histogram (.png, .svg, .pdf, .jpg or .jpeg)")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.add_argument("--encoding", default="utf-8", help="text encoding of the file (default utf-8)")

    p = _sub(sub, "split", "Split a converted file into DIR/train and DIR/test, deterministically.", _split)
    p.add_argument("file", metavar="FILE", help="converted records (.jsonl or .json)")
    p.add_argument("--test-ratio", type=float, default=0.3, help="fraction for the test split (default 0.3)")
    p.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for train.jsonl and test.jsonl")
    _writer_flags(p)

    p = _sub(sub, "mix", "Mix datasets by a JSON spec: per-source converter, cap or ratio, seeded.", _mix)
    p.add_argument("spec", metavar="SPEC", help="mix spec (.json); see data/mix/llama3_chinese.json")
    p.add_argument("-o", "--output", metavar="OUT", help="override the spec's output path")
    p.add_argument("--seed", type=int, help="override the spec's seed")
    _writer_flags(p, encoding=False)

    p = _sub(sub, "dedupe", "Drop exact and whitespace/punctuation-normalised duplicate records (preference records: "
             "the same prompt, chosen and rejected).", _dedupe)
    p.add_argument("file", metavar="FILE", help="converted records (.jsonl or .json)")
    p.add_argument("-o", "--output", metavar="OUT", help="output file (default: FILE's name with .dedup before the suffix)")
    p.add_argument("--exact-only", action="store_true", help="drop exact duplicates only")
    _writer_flags(p)

    p = _sub(sub, "clean", "Second-pass cleaning rules for generated data (Tianji wishes).", _clean)
    p.add_argument("dataset", choices=["wishes"], help="which rule set")
    p.add_argument("file", metavar="FILE", help="wishes records (.jsonl/.json) to clean")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="cleaned records (.jsonl or .json)")
    p.add_argument("--disable", action="append", default=[], metavar="RULE",
                   help=f"switch a rule off (repeatable); on by default: {', '.join(WISHES_DEFAULT_RULES)}")
    p.add_argument("--enable", action="append", default=[], metavar="RULE",
                   help="switch a rule on (repeatable): peer_pronoun (您 -> 你 for siblings, cousins, classmates, "
                        "colleagues and neighbours)")
    p.add_argument("--min-length", type=int, default=10, help="min_length rule: shortest output kept (default 10)")
    _writer_flags(p)

    _sub(sub, "kinds", "List the converters with their input and output.", _kinds)


def _summary(out, tally) -> None:
    """The tally line, then the next step: split the records into train and test."""
    from pathlib import Path

    from tianji_ft.data.accounting import rejects_path

    line = f"{out}: {tally.line()}"
    if tally.rejected and rejects_path(out).exists():
        line += f"; rejects in {rejects_path(out)}"
    print(line)
    out = Path(out)
    print(f"next: tianji-ft data split {out} -o {out.with_name(out.stem + '_split')}")


_CONVERT_OPTIONS = ("system", "question_col", "answer_col", "placeholders", "input_col", "output_col",
                    "system_col", "keep_raw")


def _convert(args) -> int:
    from tianji_ft.data.records import convert_files

    options = {k: getattr(args, k) for k in _CONVERT_OPTIONS if getattr(args, k) is not None}
    if "placeholders" in options:
        options["placeholders"] = options["placeholders"].split(",")
    tally = convert_files(args.kind, args.sources, args.output, options=options, encoding=args.encoding,
                          sheet=args.sheet, report=args.report, quiet=args.quiet)
    _summary(args.output, tally)
    return 0


def _validate(args) -> int:
    from tianji_ft.data.validate import validate_files

    problems = 0
    for line in validate_files(args.files, args.encoding):
        print(line)
        problems += 1
    if problems:
        print(f"{problems} problem(s) in {len(args.files)} file(s)", file=sys.stderr)
        return 1
    print(f"ok: {len(args.files)} file(s), no problems", file=sys.stderr)
    return 0


def _stats(args) -> int:
    import os

    from tianji_ft.core.outputs import Output, check_outputs
    from tianji_ft.data.stats import check_plot_path, dataset_stats, format_stats, plot_lengths

    if args.plot:  # checked before the file is read: a long count must not end in a refusal
        tokenizer = args.tokenizer if args.tokenizer and os.path.exists(args.tokenizer) else None
        check_outputs([("input", args.file), ("tokenizer", tokenizer)], [Output(args.plot, "--plot")])
        check_plot_path(args.plot)
    stats = dataset_stats(args.file, tokenizer=args.tokenizer, encoding=args.encoding)
    print(json.dumps(stats.summary, ensure_ascii=False, indent=2) if args.json else format_stats(stats.summary))
    if args.plot:
        print(f"wrote {plot_lengths(stats, args.plot)}", file=sys.stderr)
    invalid, records = stats.summary["invalid_records"], stats.summary["records"]
    if invalid and invalid == records and stats.summary.get("format") == "preference":
        print(f"tianji-ft: error: none of the {records} records of {args.file} is a valid preference record; "
              f"tianji-ft data validate {args.file} lists the problems; raw UltraFeedback or HH-RLHF rows convert "
              f"first: tianji-ft data convert ultrafeedback (or hh-rlhf) {args.file} -o OUT.jsonl", file=sys.stderr)
        return 1
    if invalid and invalid == records:
        print(f"tianji-ft: error: none of the {records} records of {args.file} is in XTuner's conversation format; "
              f"convert it first: tianji-ft data convert KIND {args.file} -o OUT.jsonl (tianji-ft data kinds lists "
              "the kinds)", file=sys.stderr)
        return 1
    if invalid:
        print(f"{invalid} invalid record(s): tianji-ft data validate {args.file} lists them", file=sys.stderr)
    return 0


def _split(args) -> int:
    from tianji_ft.data.split import split_file

    tally, train, test = split_file(args.file, args.output, test_ratio=args.test_ratio, seed=args.seed,
                                    encoding=args.encoding, report=args.report, quiet=args.quiet)
    print(f"{train}, {test}: {tally.line()}")
    print(f"next: tianji-ft train CONFIG --data {train}   (tianji-ft configs list names the configs; --tiny tries "
          "one on a CPU)")
    return 0


def _mix(args) -> int:
    from tianji_ft.data.mix import mix

    tally, out = mix(args.spec, output=args.output, seed=args.seed, report=args.report, quiet=args.quiet)
    _summary(out, tally)
    return 0


def _dedupe(args) -> int:
    from pathlib import Path

    from tianji_ft.data.dedupe import dedupe_file

    src = Path(args.file)
    out = Path(args.output) if args.output else src.with_name(f"{src.stem}.dedup{src.suffix or '.jsonl'}")
    tally = dedupe_file(src, out, normalised=not args.exact_only, encoding=args.encoding, report=args.report,
                        quiet=args.quiet)
    _summary(out, tally)
    return 0


def _clean(args) -> int:
    from tianji_ft.data.wishes import DEFAULT_RULES, clean_file

    rules = [r for r in dict.fromkeys([*DEFAULT_RULES, *args.enable]) if r not in args.disable]
    tally = clean_file(args.file, args.output, rules=rules, min_length=args.min_length, encoding=args.encoding,
                       report=args.report, also_known=args.disable, quiet=args.quiet)
    _summary(args.output, tally)
    return 0


def _kinds(args) -> int:
    import inspect

    from tianji_ft.data.registry import all_converters

    for name, conv in all_converters().items():
        makes = f"  (makes {conv.produces} records)" if conv.produces != "conversation" else ""
        print(f"{name}{makes}\n  " + (inspect.getdoc(conv.func) or "").replace("\n", "\n  ") + "\n")
    return 0
