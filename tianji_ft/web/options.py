"""The web demo's command-line flags, shared by ``tianji-ft web`` and the Streamlit script.

``tianji-ft web MODEL --temperature 0`` parses them, and hands them on to
``streamlit run app.py -- MODEL --temperature 0``, where the app parses them
again with the same definitions, so the two can never disagree.
"""

from __future__ import annotations

import argparse

from tianji_ft.core.sampling import DEFAULTS

WISHES_SYSTEM = "你现在是一个送祝福大师，帮我针对不同人和事情、节日送对应的祝福"


def add_app_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="Hugging Face model folder (merged or base) or hub id")
    parser.add_argument("--adapter", metavar="DIR", help="LoRA/QLoRA adapter folder")
    parser.add_argument("--template", default="auto", metavar="auto|NAME", help="XTuner prompt template (default auto)")
    parser.add_argument("--system", help="initial system prompt (default: the run manifest's, else the wishes master)")
    parser.add_argument("--bits", type=int, choices=[4, 8], help="load 4- or 8-bit quantized (CUDA only)")
    parser.add_argument("--device", default="auto", help="cuda, cpu (default: cuda when available)")
    parser.add_argument("--title", default="天机 · 送祝福大师", help="page title")
    parser.add_argument("--history-turns", type=int, default=10, metavar="N", help="turns kept as context (default 10)")
    d = DEFAULTS["web"]
    g = parser.add_argument_group("initial slider values")
    for flag, kind in (("temperature", float), ("top_p", float), ("top_k", int), ("repetition_penalty", float),
                       ("max_new_tokens", int)):
        g.add_argument(f"--{flag.replace('_', '-')}", type=kind, default=d[flag], help=f"default {d[flag]}")


def app_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tianji-ft web (app)")
    add_app_flags(parser)
    return parser


def app_argv(args: argparse.Namespace) -> list[str]:
    """The flags of :func:`add_app_flags` back as an argument list, for the Streamlit child."""
    argv = [args.model]
    for flag in ("adapter", "system", "bits"):
        value = getattr(args, flag)
        if value is not None:
            argv.append(f"--{flag}={value}")  # "=": a value may start with "-"
    for flag in ("template", "device", "title", "history_turns", "temperature", "top_p", "top_k",
                 "repetition_penalty", "max_new_tokens"):
        argv.append(f"--{flag.replace('_', '-')}={getattr(args, flag)}")
    return argv
