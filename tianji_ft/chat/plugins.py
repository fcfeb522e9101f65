"""``tianji-ft chat --with-plugins``: XTuner's own plugin chat, for MS-Agent/MOSS-style models.

XTuner's plugin loop (calculate, solve, search) only works with the
``moss_sft`` prompt and system templates, and imports its ``plugins``
package from ``xtuner/tools``, so that folder goes on the child's path.
The search plugin reads ``SERPER_API_KEY`` from the environment only; it is
never accepted as a flag, so it cannot leak into shell history or logs.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from tianji_ft.core.errors import UserError

PLUGINS = ("calculate", "solve", "search")
PLUGIN_TEMPLATE = "moss_sft"


def plugin_chat_args(model: str, plugins: list[str], adapter: str | None = None, template: str | None = None,
                     bits: int | None = None, params=None, stream: bool = True) -> list[str]:
    unknown = sorted(set(plugins) - set(PLUGINS))
    if unknown:
        raise UserError(f"unknown plugin(s) {', '.join(unknown)}; choose from {', '.join(PLUGINS)}")
    if template not in (None, "auto", PLUGIN_TEMPLATE):
        raise UserError(f"--with-plugins needs the {PLUGIN_TEMPLATE} template (XTuner's plugin chat), "
                        f"not {template}; leave --template out")
    args = [str(model), "--prompt-template", PLUGIN_TEMPLATE, "--system-template", PLUGIN_TEMPLATE,
            "--with-plugins", *plugins]
    if adapter:
        args += ["--adapter", str(adapter)]
    if bits:
        args += ["--bits", str(bits)]
    if not stream:
        args.append("--no-streamer")
    if params is not None:
        args += ["--temperature", str(params.temperature), "--top-p", str(params.top_p),
                 "--top-k", str(params.top_k), "--repetition-penalty", str(params.repetition_penalty),
                 "--max-new-tokens", str(params.max_new_tokens), "--seed", str(params.seed or 0)]
        if params.stop:
            args += ["--stop-words", *params.stop]
    return args


def xtuner_tools_dir() -> Path:
    spec = importlib.util.find_spec("xtuner")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise UserError("xtuner is not installed in this environment; run 'make install'")
    return Path(list(spec.submodule_search_locations)[0]) / "tools"


def run_plugin_chat(model: str, plugins: list[str], adapter: str | None = None, template: str | None = None,
                    bits: int | None = None, params=None, stream: bool = True, runner=None,
                    environ=None) -> int:
    from tianji_ft.xtuner.runner import launch_env, subprocess_runner, tool_command

    args = plugin_chat_args(model, plugins, adapter, template, bits, params, stream)
    env = launch_env(environ)
    if "search" in plugins and not env.get("SERPER_API_KEY"):
        raise UserError("the search plugin needs SERPER_API_KEY in the environment "
                        "(export SERPER_API_KEY=...; get one at serper.dev), or leave 'search' out")
    env["PYTHONPATH"] = os.pathsep.join([str(xtuner_tools_dir()), env["PYTHONPATH"]])
    return (runner or subprocess_runner)(tool_command("chat", args), env, None)
