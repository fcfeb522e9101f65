"""``tianji-ft completion bash|zsh``: the shell code that completes verbs, options, config names and kinds."""

from __future__ import annotations

from tianji_ft.cli._common import add_verb

EXAMPLE = """eval "$(tianji-ft completion bash)"      # this shell; add the line to ~/.bashrc to keep it
eval "$(tianji-ft completion zsh)"       # zsh: in ~/.zshrc, after compinit"""


def register(sub) -> None:
    p = add_verb(sub, "completion", "Print the shell code that makes Tab complete tianji-ft's verbs, options, "
                                    "config names, converter kinds and templates.", EXAMPLE, run)
    p.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete in")


def run(args) -> int:
    import argcomplete

    print(argcomplete.shellcode(["tianji-ft"], shell=args.shell))
    return 0


def complete(parser) -> None:
    """Answer the shell's completion request (argcomplete's environment is set) and exit; else return."""
    import argcomplete

    for action in _actions(parser):
        completer = {"config": config_names, "kind": converter_kinds, "template": template_names}.get(action.dest)
        if completer is not None and not action.choices:
            action.completer = completer
    argcomplete.autocomplete(parser)


def _actions(parser):
    import argparse

    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)


def config_names(**_) -> list[str]:
    from tianji_ft.configs.registry import list_configs

    return list_configs()


def converter_kinds(**_) -> list[str]:
    from tianji_ft.data.registry import all_converters

    return sorted(all_converters())


def template_names(**_) -> list[str]:
    from tianji_ft.core.templates import TEMPLATES

    return ["auto", *sorted(TEMPLATES)]
