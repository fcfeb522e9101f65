"""``tianji-ft synth``: make training data with an LLM (the Tianji wishes generator)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tianji_ft.cli._common import add_verb, non_negative_float, old_names, positive_int

WISHES_EXAMPLE = """\
export DEEPSEEK_API_KEY=...   # read from the environment only
tianji-ft synth wishes --base-url https://api.deepseek.com/v1 --api-model deepseek-chat \\
    --api-key-env DEEPSEEK_API_KEY --styles 小红书 正常 严肃 --rounds 2 --concurrency 8 \\
    --price-in 2 --price-out 8 -o data/synth/wishes_ds
# a local vLLM / lmdeploy / Ollama / tianji-ft serve: any key value will do
OPENAI_API_KEY=none tianji-ft synth wishes --base-url http://127.0.0.1:8000/v1 --api-model qwen -o out/wishes --dry-run"""

MAP_EXAMPLE = "tianji-ft synth wishes-map --plot wishes_map.png"

PAIRS_EXAMPLE = """\
export DEEPSEEK_API_KEY=...
tianji-ft synth pairs --prompts data/wishes/test.jsonl --model work_dirs/wishes/merged \\
    --base-url https://api.deepseek.com/v1 --api-model deepseek-chat --api-key-env DEEPSEEK_API_KEY -o data/pairs
# one candidate from the SFT model, one from the remote model
tianji-ft synth pairs --prompts prompts.txt --model work_dirs/wishes/merged --candidates local remote \\
    --base-url http://127.0.0.1:8000/v1 --api-model qwen -o data/pairs_qwen"""


def register(subparsers) -> None:
    verb = add_verb(subparsers, "synth", "Make training data with an LLM behind any OpenAI-compatible API.",
                    WISHES_EXAMPLE.splitlines()[1] + " ...")
    sub = verb.add_subparsers(dest="synth_command", metavar="COMMAND", required=True)

    w = add_verb(sub, "wishes", "Generate the Tianji wishes dataset (name x scene x style), resumably.",
                 WISHES_EXAMPLE, func=_run_wishes)
    w.add_argument("-o", "--output", "--out", dest="out", required=True, type=Path, metavar="DIR",
                   action=old_names("--out"),
                   help="(--out is the old name) output folder: wishes.jsonl, plus .synth-failed.jsonl, .synth-summary.json and the resume journal")
    w.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. https://api.deepseek.com/v1, "
                                      "https://open.bigmodel.cn/api/paas/v4, http://127.0.0.1:8000/v1")
    w.add_argument("--api-model", "--model", dest="model", action=old_names("--model"),
                   help="model name at that endpoint, e.g. deepseek-chat, glm-4 (--model is the old name: "
                        "elsewhere --model means a local model folder)")
    w.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="environment variable holding the API key (default: %(default)s); the key is never written anywhere")
    w.add_argument("--styles", nargs="+", metavar="STYLE", help="styles from data/wishes/styles.json (default: all: 小红书 正常 严肃)")
    w.add_argument("--rounds", type=positive_int, default=1, help="passes over the grid, each with fresh random choices (default: 1)")
    w.add_argument("--seed", type=int, default=0, help="seed for the random few-shot and injection choices (default: 0)")
    w.add_argument("--concurrency", type=positive_int, default=4, help="requests in flight (default: 4)")
    w.add_argument("--max-requests", type=int, metavar="N", help="send at most N requests this run, then stop cleanly (exit 4 if some remain)")
    w.add_argument("--price-in", type=non_negative_float, default=0.0, metavar="X", help="price per million input tokens, for the cost shown")
    w.add_argument("--price-out", type=non_negative_float, default=0.0, metavar="Y", help="price per million output tokens")
    w.add_argument("--timeout", type=float, default=60.0, help="seconds per request before it is retried (default: 60)")
    w.add_argument("--max-attempts", type=positive_int, default=6, help="tries per request on 429/5xx/timeouts/dropped connections (default: 6)")
    w.add_argument("--backoff-base", type=non_negative_float, default=1.0, help="first retry delay in seconds, doubled each retry, with jitter (default: 1)")
    w.add_argument("--backoff-max", type=non_negative_float, default=60.0, help="longest retry delay in seconds (default: 60)")
    w.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default: 1, as the seed asked for)")
    w.add_argument("--max-tokens", type=positive_int, help="cap on tokens per reply (default: the server's)")
    w.add_argument("--input-variants", action="store_true",
                   help="vary the plain-style input like Tianji's rebuild step (我想祝...快乐, 送祝福给..., ...)")
    w.add_argument("--names", nargs="+", metavar="NAME", help="only these names from data/wishes/names.json")
    w.add_argument("--scenes", nargs="+", metavar="SCENE", help="only these scenes from data/wishes/scenes.json")
    w.add_argument("--data-dir", type=Path, help="folder with the generator's data files (default: the shipped data/wishes)")
    w.add_argument("--status-interval", type=float, default=10.0, help="seconds between status lines when stderr is not a terminal")
    w.add_argument("--dry-run", action="store_true", help="print the number of requests and three sample prompts; send nothing")

    _register_pairs(sub)

    m = add_verb(sub, "wishes-map", "Show which role x scene pairs are generated (data/wishes/role_scene_map.json).",
                 MAP_EXAMPLE, func=_run_map)
    m.add_argument("--plot", type=Path, metavar="OUT.png", help="draw the table as a heatmap image")
    m.add_argument("--font", help="a font file with Chinese glyphs for the labels (default: an installed CJK font)")
    m.add_argument("--data-dir", type=Path, help="folder with the generator's data files (default: the shipped data/wishes)")


def _register_pairs(sub) -> None:
    from tianji_ft.cli._judge import add_judge_flags
    from tianji_ft.core.sampling import DEFAULTS

    p = add_verb(sub, "pairs", "Preference data: two candidate answers per prompt, the better one chosen by an LLM "
                 "judge (both orders), resumably.", PAIRS_EXAMPLE, func=_run_pairs)
    p.add_argument("--prompts", required=True, type=Path, metavar="FILE",
                   help="prompts: a text file with one per line, or conversation records (.jsonl/.json; the last "
                        "turn's input is the prompt, earlier turns its context)")
    p.add_argument("-o", "--output", dest="out", required=True, type=Path, metavar="DIR",
                   help="output folder: pairs.jsonl (preference records), plus .pairs-summary.json and the resume journals")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing, non-empty output folder this command did not make (never one holding an input)")
    c = p.add_argument_group("candidates")
    c.add_argument("--candidates", nargs=2, default=["local", "local"], metavar=("FIRST", "SECOND"),
                   choices=["local", "remote"],
                   help="where the two candidates come from: local (the SFT --model, sampled with seed, seed+1) or "
                        "remote (the endpoint's model) (default: local local)")
    c.add_argument("--model", metavar="DIR", help="the local SFT model folder (merged, or a base with --adapter)")
    c.add_argument("--adapter", metavar="DIR", help="LoRA adapter for --model")
    c.add_argument("--template", default="auto", metavar="auto|NAME",
                   help="prompt template of --model (default auto: its run manifest, else its tokenizer's)")
    c.add_argument("--system", help="system prompt for --model (default: its run manifest's)")
    c.add_argument("--bits", type=int, choices=[4, 8], help="load --model 4- or 8-bit quantized (CUDA only)")
    c.add_argument("--device", default="auto", help="cuda, cuda:1, cpu (default: cuda when available)")
    c.add_argument("--candidate-model", metavar="NAME",
                   help="model at the endpoint for remote candidates (default: the judge's --api-model)")
    d = DEFAULTS["pairs"]  # the sampling defaults of each use live in tianji_ft/core/sampling.py
    c.add_argument("--temperature", type=float, default=d["temperature"],
                   help=f"sampling temperature of the candidates (default: {d['temperature']})")
    c.add_argument("--top-p", type=float, default=d["top_p"], help=f"default {d['top_p']}")
    c.add_argument("--top-k", type=int, default=d["top_k"], help=f"local candidates only (default {d['top_k']})")
    c.add_argument("--max-new-tokens", type=positive_int, default=d["max_new_tokens"],
                   help=f"longest candidate in tokens (default {d['max_new_tokens']})")
    c.add_argument("--seed", type=int, default=0, help="local candidate n samples with seed + n - 1 (default 0)")
    c.add_argument("--batch-size", type=positive_int, default=8, help="prompts generated together locally (default 8)")
    add_judge_flags(p, "judge (docs/judge.md)")


def _run_pairs(args) -> int:
    from tianji_ft.chat.pairs import PairsConfig, run_pairs
    from tianji_ft.cli._judge import endpoint_from_args

    cfg = PairsConfig(prompts=args.prompts, out_dir=args.out, judge=endpoint_from_args(args), rubric=args.rubric,
                      sources=tuple(args.candidates), model=args.model, adapter=args.adapter, template=args.template,
                      system=args.system, bits=args.bits, device=args.device, candidate_model=args.candidate_model,
                      temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                      max_new_tokens=args.max_new_tokens, seed=args.seed, batch_size=args.batch_size,
                      overwrite=args.overwrite)
    return run_pairs(cfg)


def _run_wishes(args) -> int:
    from tianji_ft.synth.chat_client import RetryPolicy
    from tianji_ft.synth.wishes import WishesRunConfig, dry_run, run_wishes

    cfg = WishesRunConfig(
        out_dir=args.out, base_url=args.base_url, model=args.model, api_key_env=args.api_key_env,
        styles=args.styles, rounds=args.rounds, seed=args.seed, concurrency=args.concurrency,
        max_requests=args.max_requests, price_in=args.price_in, price_out=args.price_out, timeout=args.timeout,
        policy=RetryPolicy(max_attempts=args.max_attempts, backoff_base=args.backoff_base, backoff_max=args.backoff_max),
        temperature=args.temperature, max_tokens=args.max_tokens, input_variants=args.input_variants,
        names=args.names, scenes=args.scenes, data_dir=args.data_dir, status_interval=args.status_interval,
    )
    return dry_run(cfg) if args.dry_run else run_wishes(cfg)


def _run_map(args) -> int:
    from tianji_ft.synth.wishes_data import load_wishes_data
    from tianji_ft.synth.wishes_map import map_text, plot_map

    data = load_wishes_data(args.data_dir)
    print(map_text(data))
    if args.plot:
        print(f"heatmap written to {plot_map(data, args.plot, args.font, err=sys.stderr)}")
    return 0
