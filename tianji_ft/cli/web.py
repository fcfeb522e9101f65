"""``tianji-ft web``: the Streamlit wishes demo for a model, no file editing needed."""

from __future__ import annotations

from tianji_ft.cli._common import add_verb

EXAMPLE = """\
tianji-ft web work_dirs/wishes/merged
tianji-ft web internlm/internlm2-chat-7b --adapter work_dirs/wishes/adapter --bits 4 --port 8502
"""


def register(subparsers) -> None:
    from tianji_ft.web.options import add_app_flags

    parser = add_verb(subparsers, "web", "Open the Streamlit wishes demo (system prompt, styles, sliders, "
                      "streaming) for a model.", EXAMPLE, func=_web)
    add_app_flags(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8501, help="default 8501")


def _web(args) -> int:
    from tianji_ft.core.errors import UserError
    from tianji_ft.web.launch import run_web
    from tianji_ft.web.options import app_argv

    if args.history_turns < 0:
        raise UserError(f"--history-turns must be 0 or more, not {args.history_turns}")
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be 1-65535, not {args.port}")
    return run_web(app_argv(args), args.host, args.port)
