"""``--with-plugins`` runs XTuner's plugin chat as a child process with the moss_sft templates."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tianji_ft.chat.engine import GenerationParams
from tianji_ft.chat.plugins import run_plugin_chat, xtuner_tools_dir
from tianji_ft.core.errors import UserError


def _capture():
    calls = []

    def runner(cmd, env, log_path):
        calls.append((list(cmd), dict(env), log_path))
        return 0

    return calls, runner


def test_command_passes_plugins_templates_and_sampling_through():
    calls, runner = _capture()
    params = GenerationParams(temperature=0.2, max_new_tokens=128, seed=3)
    assert run_plugin_chat("merged", ["calculate", "solve"], adapter="hf", params=params, runner=runner,
                           environ={"PATH": os.environ.get("PATH", "")}) == 0
    [(cmd, env, log_path)] = calls
    assert cmd[1:4] == ["-m", "tianji_ft.xtuner.entry", "xtuner.tools.chat"]
    args = cmd[4:]
    assert args[0] == "merged"
    assert args[args.index("--prompt-template") + 1] == args[args.index("--system-template") + 1] == "moss_sft"
    assert args[args.index("--with-plugins") + 1:args.index("--with-plugins") + 3] == ["calculate", "solve"]
    assert args[args.index("--adapter") + 1] == "hf" and args[args.index("--max-new-tokens") + 1] == "128"
    assert log_path is None
    # XTuner's chat imports its plugins package from xtuner/tools.
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(xtuner_tools_dir())
    assert (xtuner_tools_dir() / "plugins" / "calculate.py").is_file()


def test_search_takes_its_key_from_the_environment_only():
    calls, runner = _capture()
    with pytest.raises(UserError, match="SERPER_API_KEY"):
        run_plugin_chat("merged", ["search"], runner=runner, environ={})
    run_plugin_chat("merged", ["search"], runner=runner, environ={"SERPER_API_KEY": "k-123"})
    cmd, env, _ = calls[0]
    assert env["SERPER_API_KEY"] == "k-123" and "k-123" not in " ".join(cmd)


def test_other_templates_are_refused():
    with pytest.raises(UserError, match="moss_sft"):
        run_plugin_chat("merged", ["calculate"], template="internlm2_chat", runner=lambda *a: 0, environ={})


def test_cli_routes_with_plugins_to_xtuner(monkeypatch):
    import tianji_ft.chat.plugins as plugins
    from tianji_ft.cli import main

    seen = {}
    monkeypatch.setattr(plugins, "run_plugin_chat", lambda model, names, *a, **k: seen.update(model=model, names=names) or 0)
    assert main(["chat", str(Path("merged")), "--with-plugins", "calculate", "solve"]) == 0
    assert seen == {"model": "merged", "names": ["calculate", "solve"]}
