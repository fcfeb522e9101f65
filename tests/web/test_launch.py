"""``tianji-ft web`` builds the Streamlit command as an argument list and forwards its flags to the app."""

from __future__ import annotations

import sys

from tianji_ft.cli import build_parser
from tianji_ft.web.launch import APP_FILE, web_command
from tianji_ft.web.options import app_argv, app_parser


def test_command_runs_streamlit_on_the_app_file_with_the_model_after_the_separator():
    cmd = web_command(["work_dirs/merged", "--temperature=0.0"], port=8600)
    assert cmd[:5] == [sys.executable, "-m", "streamlit", "run", str(APP_FILE)]
    assert APP_FILE.is_file()
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "8600"
    assert cmd[cmd.index("--") + 1:] == ["work_dirs/merged", "--temperature=0.0"]


def test_cli_flags_reach_the_app_unchanged():
    args = build_parser().parse_args(["web", "merged", "--adapter", "hf", "--system=-你是诗人-",
                                      "--temperature", "0", "--max-new-tokens", "64", "--port", "8502"])
    app_args = app_parser().parse_args(app_argv(args))
    assert (app_args.model, app_args.adapter, app_args.system) == ("merged", "hf", "-你是诗人-")
    assert (app_args.temperature, app_args.max_new_tokens, app_args.template) == (0.0, 64, "auto")
    assert (args.host, args.port) == ("127.0.0.1", 8502)


def test_cli_hands_the_command_to_run_web(monkeypatch):
    import tianji_ft.web.launch as launch
    from tianji_ft.cli import main

    seen = {}
    monkeypatch.setattr(launch, "run_web", lambda app_args, host, port: seen.update(args=app_args, port=port) or 0)
    assert main(["web", "merged", "--port", "8503"]) == 0
    assert seen["args"][0] == "merged" and seen["port"] == 8503


def test_a_busy_port_is_one_line_before_anything_starts(capsys):
    import socket

    from tianji_ft.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["web", "some-model", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"127.0.0.1:{port} is not available" in err and "http://" not in err
