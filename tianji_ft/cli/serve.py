"""``tianji-ft serve``: OpenAI- and Ollama-compatible HTTP API for a model."""

from __future__ import annotations

from tianji_ft.cli._common import add_verb
from tianji_ft.cli.chat import add_model_flags, add_sampling_flags, params_from_args

EXAMPLE = """\
tianji-ft serve work_dirs/wishes/merged --port 11434 --name tianji
curl http://localhost:11434/api/chat -d '{"model": "tianji", "messages": [{"role": "user", "content": "祝姐姐生日快乐"}], "stream": false}'
TIANJI_API_KEY=$(openssl rand -hex 16) tianji-ft serve work_dirs/wishes/merged --host 0.0.0.0
"""


def register(subparsers) -> None:
    parser = add_verb(subparsers, "serve", "Serve a model over HTTP: OpenAI /v1/chat/completions and Ollama "
                      "/api/chat, /api/generate, with /docs and /metrics.", EXAMPLE, func=_serve)
    add_model_flags(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1, this machine only; any other address needs "
                             "--api-key or --no-auth)")
    parser.add_argument("--port", type=int, default=8000, help="default 8000; 11434 to stand in for Ollama")
    parser.add_argument("--name", action="append", default=[], metavar="NAME",
                        help="model name clients send (repeatable; the model folder's name always works)")
    parser.add_argument("--api-key", action="append", default=[], metavar="KEY",
                        help="require 'Authorization: Bearer KEY' (repeatable or comma-separated; default: "
                             "$TIANJI_API_KEY, which keeps keys out of the process list). /health stays open")
    parser.add_argument("--no-auth", action="store_true",
                        help="serve a non-loopback --host with no API key, on purpose")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="let browser pages from ORIGIN call the API (repeatable; '*' for any; default: none)")
    parser.add_argument("--max-concurrency", type=int, default=1, metavar="N",
                        help="answers generated at once; further requests wait their turn (default 1)")
    parser.add_argument("--max-queue", type=int, default=64, metavar="N",
                        help="requests that may wait for a turn; more get 429 with Retry-After (default 64)")
    parser.add_argument("--request-timeout", type=float, default=600, metavar="SECONDS",
                        help="longest a request may wait and generate; past it 503 or an error event (default 600)")
    parser.add_argument("--max-body", type=int, default=1 << 20, metavar="BYTES",
                        help="larger request bodies get 413 (default 1 MiB)")
    add_sampling_flags(parser, "serve")


def _serve(args) -> int:
    from tianji_ft.core.errors import UserError
    from tianji_ft.serve.auth import check_exposure, keys_from

    for flag, value, low in (("--max-concurrency", args.max_concurrency, 1), ("--max-queue", args.max_queue, 0),
                             ("--max-body", args.max_body, 1)):
        if value < low:
            raise UserError(f"{flag} must be at least {low}, not {value}")
    if not args.request_timeout > 0:
        raise UserError(f"--request-timeout must be more than 0 seconds, not {args.request_timeout}")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be 0-65535, not {args.port}")
    keys = keys_from(args.api_key)
    check_exposure(args.host, keys, args.no_auth)  # before minutes of model loading
    from tianji_ft.chat.engine import ChatEngine
    from tianji_ft.serve.server import serve

    engine = ChatEngine(args.model, adapter=args.adapter, template=args.template, system=args.system,
                        bits=args.bits, device=args.device, max_concurrency=args.max_concurrency)
    serve(engine, args.host, args.port, defaults=params_from_args(args), names=args.name, max_body=args.max_body,
          api_keys=keys, no_auth=args.no_auth, max_concurrency=args.max_concurrency, max_queue=args.max_queue,
          request_timeout=args.request_timeout, cors_origins=args.cors_origin)
    return 0
