"""``tianji-ft serve``: OpenAI- and Ollama-compatible HTTP API for a model."""

from __future__ import annotations

from tianji_ft.cli._common import add_verb
from tianji_ft.cli.chat import add_model_flags, add_sampling_flags, params_from_args

EXAMPLE = """\
tianji-ft serve work_dirs/wishes/merged --port 11434 --name tianji
curl http://localhost:11434/api/chat -d '{"model": "tianji", "messages": [{"role": "user", "content": "祝姐姐生日快乐"}], "stream": false}'
"""


def register(subparsers) -> None:
    parser = add_verb(subparsers, "serve", "Serve a model over HTTP: OpenAI /v1/chat/completions and Ollama "
                      "/api/chat, /api/generate.", EXAMPLE, func=_serve)
    add_model_flags(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1, this machine only; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=int, default=8000, help="default 8000; 11434 to stand in for Ollama")
    parser.add_argument("--name", action="append", default=[], metavar="NAME",
                        help="model name clients send (repeatable; the model folder's name always works)")
    parser.add_argument("--max-concurrency", type=int, default=1, metavar="N",
                        help="answers generated at once; further requests wait their turn (default 1)")
    parser.add_argument("--max-body", type=int, default=1 << 20, metavar="BYTES",
                        help="larger request bodies get 413 (default 1 MiB)")
    add_sampling_flags(parser, max_new_tokens=1024)


def _serve(args) -> int:
    from tianji_ft.core.errors import UserError

    if args.max_concurrency < 1:
        raise UserError(f"--max-concurrency must be at least 1, not {args.max_concurrency}")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be 0-65535, not {args.port}")
    from tianji_ft.chat.engine import ChatEngine
    from tianji_ft.serve.server import serve

    engine = ChatEngine(args.model, adapter=args.adapter, template=args.template, system=args.system,
                        bits=args.bits, device=args.device, max_concurrency=args.max_concurrency)
    serve(engine, args.host, args.port, defaults=params_from_args(args), names=args.name, max_body=args.max_body)
    return 0
