"""``tianji-ft chat``: talk to a model in the terminal, or answer prompts for a script."""

from __future__ import annotations

import argparse

from tianji_ft.cli._common import add_verb

EXAMPLE = """\
tianji-ft chat work_dirs/wishes/merged
tianji-ft chat internlm/internlm2-chat-7b --adapter work_dirs/wishes/adapter --bits 4 --history-turns 6
tianji-ft chat work_dirs/wishes/merged --prompt "祝姐姐生日快乐,小红书风格"
"""


def add_model_flags(parser: argparse.ArgumentParser, optional: bool = False) -> None:
    """MODEL, --adapter, --template, --system, --bits, --device: how the engine loads a model.

    ``optional``: MODEL may be left out (the verb checks when it is needed)."""
    parser.add_argument("model", metavar="MODEL", nargs="?" if optional else None,
                        help="Hugging Face model folder (merged or base) or hub id")
    parser.add_argument("--adapter", metavar="DIR", help="LoRA/QLoRA adapter folder (from 'tianji-ft convert')")
    parser.add_argument("--template", default="auto", metavar="auto|NAME",
                        help="XTuner prompt template (default auto: the run manifest, else the tokenizer's chat template)")
    parser.add_argument("--system", help="system prompt (default: the run manifest's; '' for none)")
    parser.add_argument("--bits", type=int, choices=[4, 8], help="load 4- or 8-bit quantized (CUDA only)")
    parser.add_argument("--device", default="auto", help="cuda, cuda:1, cpu (default: cuda when available)")


def add_sampling_flags(parser: argparse.ArgumentParser, use: str = "chat", *, seed: int = 0) -> None:
    """The sampling flags of ``xtuner chat``, with the defaults of ``use`` (:mod:`tianji_ft.core.sampling`)."""
    from tianji_ft.core.sampling import DEFAULTS

    d = DEFAULTS[use]
    g = parser.add_argument_group(f"sampling (defaults for {use})")
    g.add_argument("--temperature", type=float, default=d["temperature"],
                   help=f"0 is greedy (default {d['temperature']})")
    g.add_argument("--top-p", type=float, default=d["top_p"], help=f"default {d['top_p']}")
    g.add_argument("--top-k", type=int, default=d["top_k"], help=f"default {d['top_k']}")
    g.add_argument("--repetition-penalty", type=float, default=d["repetition_penalty"],
                   help=f"1.0 is none (default {d['repetition_penalty']})")
    g.add_argument("--max-new-tokens", type=int, default=d["max_new_tokens"], help=f"default {d['max_new_tokens']}")
    g.add_argument("--seed", type=int, default=seed, help=f"random seed (default {seed})")
    g.add_argument("--stop-words", nargs="+", default=[], metavar="WORD",
                   help="extra stop words on top of the template's")


def params_from_args(args):
    from tianji_ft.chat.engine import GenerationParams

    return GenerationParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            repetition_penalty=args.repetition_penalty, max_new_tokens=args.max_new_tokens,
                            seed=args.seed, stop=tuple(args.stop_words))


def register(subparsers) -> None:
    parser = add_verb(subparsers, "chat", "Chat with a model: multi-turn like ollama run (/? lists the commands), or one-shot for scripts.",
                      EXAMPLE, func=_chat)
    add_model_flags(parser)
    add_sampling_flags(parser)
    parser.add_argument("--history-turns", type=int, default=10, metavar="N",
                        help="keep the newest N turns as context (default 10; 0 answers each line alone)")
    parser.add_argument("--no-stream", action="store_true", help="print each answer when it is complete")
    parser.add_argument("--prompt", metavar="TEXT",
                        help="answer TEXT and exit (or pipe prompts on stdin: one answer per line)")
    parser.add_argument("--with-plugins", nargs="+", choices=["calculate", "solve", "search"], metavar="PLUGIN",
                        help="run XTuner's plugin chat (calculate, solve, search) for MS-Agent models; "
                             "search reads SERPER_API_KEY from the environment")


def _chat(args) -> int:
    params = params_from_args(args)
    if args.with_plugins:
        from tianji_ft.chat.plugins import run_plugin_chat

        return run_plugin_chat(args.model, args.with_plugins, args.adapter, args.template, args.bits, params,
                               stream=not args.no_stream)
    if args.history_turns < 0:
        from tianji_ft.core.errors import UserError

        raise UserError(f"--history-turns must be 0 or more, not {args.history_turns}")
    from tianji_ft.chat.engine import ChatEngine
    from tianji_ft.chat.session import run_chat

    engine = ChatEngine(args.model, adapter=args.adapter, template=args.template, system=args.system,
                        bits=args.bits, device=args.device)
    return run_chat(engine, params, history_turns=args.history_turns, stream=not args.no_stream,
                    prompt=args.prompt)
