"""The judge endpoint's flags, shared by ``eval`` and ``synth pairs``; the same names as ``synth wishes``."""

from __future__ import annotations

import argparse

from tianji_ft.cli._common import non_negative_float, positive_int


def add_judge_flags(parser: argparse.ArgumentParser, title: str) -> None:
    g = parser.add_argument_group(title)
    g.add_argument("--rubric", default="auto", metavar="NAME|FILE",
                   help="judging rubric: wishes, generic, or a rubric file (default auto: wishes when the prompts "
                        "carry a style, else generic; docs/judge.md shows the format)")
    g.add_argument("--base-url", help="the judge's OpenAI-compatible endpoint, e.g. https://api.deepseek.com/v1")
    g.add_argument("--api-model", help="the judge model at that endpoint, e.g. deepseek-chat")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="environment variable holding the judge's API key (default: %(default)s); never written anywhere")
    g.add_argument("--concurrency", type=positive_int, default=4, help="judge requests in flight (default: 4)")
    g.add_argument("--max-requests", type=int, metavar="N",
                   help="send at most N judgments this run (each prompt needs 2), then stop cleanly (exit 4 if some remain)")
    g.add_argument("--price-in", type=non_negative_float, default=0.0, metavar="X",
                   help="price per million input tokens, for the cost shown")
    g.add_argument("--price-out", type=non_negative_float, default=0.0, metavar="Y",
                   help="price per million output tokens")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds per judge request before it is retried (default: 60)")
    g.add_argument("--max-attempts", type=positive_int, default=6,
                   help="tries per request on 429/5xx/timeouts/dropped connections (default: 6)")
    g.add_argument("--verdict-attempts", type=positive_int, default=3,
                   help="replies asked for one judgment when they are not the verdict JSON, before it is "
                        "recorded as failed (default: 3)")
    g.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap intervals (default: 0)")


def endpoint_from_args(args):
    from tianji_ft.synth.chat_client import RetryPolicy
    from tianji_ft.synth.judge import JudgeEndpoint

    return JudgeEndpoint(base_url=args.base_url, model=args.api_model, api_key_env=args.api_key_env,
                         concurrency=args.concurrency, max_requests=args.max_requests, price_in=args.price_in,
                         price_out=args.price_out, timeout=args.timeout,
                         policy=RetryPolicy(max_attempts=args.max_attempts), verdict_attempts=args.verdict_attempts,
                         seed=args.bootstrap_seed)


def judge_exit_code(summary: dict) -> int:
    """3 when some judgments failed, 4 when some were not sent (--max-requests), else 0."""
    return 3 if summary["failed"] else 4 if summary["pending"] else 0
