"""``tianji-ft configs``: list, show, copy and compare the configs in xtuner_configs/."""

from __future__ import annotations

import json

from tianji_ft.cli._common import add_verb

EXAMPLE = """tianji-ft configs list
tianji-ft configs show internlm2_chat_7b_qlora_wishes_e3
tianji-ft configs copy internlm2_chat_7b_qlora_wishes_e3 my_wishes.py
tianji-ft configs diff internlm2_chat_7b_qlora_wishes_e3 my_wishes.py"""


def register(subparsers) -> None:
    verb = add_verb(subparsers, "configs", "List, show, copy and compare the versioned XTuner configs.", EXAMPLE)
    sub = verb.add_subparsers(dest="configs_command", metavar="COMMAND", required=True)

    p = add_verb(sub, "list", "One line per config: version, model, template, method, data format.",
                 "tianji-ft configs list", func=_list)
    p.add_argument("--json", action="store_true", help="print the list as JSON")

    p = add_verb(sub, "show", "A config's metadata and every setting with its flag, variable and default.",
                 "tianji-ft configs show internlm2_chat_7b_qlora_wishes_e3", func=_show)
    p.add_argument("config", help="config name (see 'configs list') or path")
    p.add_argument("--file", action="store_true", help="print the config file itself instead")

    p = add_verb(sub, "copy", "Copy a config to edit it; the copy is named after its file.",
                 "tianji-ft configs copy internlm2_chat_7b_qlora_wishes_e3 my_wishes.py", func=_copy)
    p.add_argument("config", help="config name or path")
    p.add_argument("dest", help="new .py file, or a folder to copy NAME.py into")
    p.add_argument("--force", action="store_true", help="overwrite DEST if it exists")

    p = add_verb(sub, "diff", "Changed metadata and defaults, then a unified diff of the code.",
                 "tianji-ft configs diff internlm2_chat_7b_qlora_wishes_e3 internlm2_chat_7b_full_wishes_e1",
                 func=_diff)
    p.add_argument("a", help="config name or path")
    p.add_argument("b", help="config name or path")


def _list(args) -> int:
    from tianji_ft.configs.registry import config_rows, table_text

    print(json.dumps(config_rows(), ensure_ascii=False, indent=2) if args.json else table_text())
    return 0


def _show(args) -> int:
    from tianji_ft.configs.registry import describe, resolve_config

    if args.file:
        print(resolve_config(args.config).read_text(encoding="utf-8"), end="")
    else:
        print(describe(args.config))
    return 0


def _copy(args) -> int:
    from tianji_ft.configs.registry import copy_config

    dest = copy_config(args.config, args.dest, force=args.force)
    print(f"copied to {dest}; train it with: tianji-ft train {dest}")
    return 0


def _diff(args) -> int:
    from tianji_ft.configs.registry import diff_configs

    print(diff_configs(args.a, args.b))
    return 0
