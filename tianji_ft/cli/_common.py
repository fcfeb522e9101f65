"""Shared argparse plumbing for the verb modules."""

from __future__ import annotations

import argparse


def add_verb(sub, name: str, summary: str, example: str, func=None, parents=()) -> argparse.ArgumentParser:
    """Add a verb whose ``--help`` ends with a copyable example."""
    parser = sub.add_parser(
        name,
        help=summary,
        description=summary,
        epilog="example:\n  " + example.strip().replace("\n", "\n  "),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=list(parents),
    )
    if func is not None:
        parser.set_defaults(func=func)
    return parser


# --model, --data and --work-dir are resolved by the launcher (tiny models, paths);
# every other config setting maps straight onto the TIANJI_* variable the config reads.
LAUNCHER_SETTINGS = ("TIANJI_MODEL", "TIANJI_DATA", "TIANJI_WORK_DIR")


def add_config_settings(parser: argparse.ArgumentParser) -> None:
    from tianji_ft.configs.settings import SETTINGS, add_arguments

    add_arguments(parser, [s for s in SETTINGS if s.env not in LAUNCHER_SETTINGS])


def config_settings_env(args: argparse.Namespace) -> dict[str, str]:
    """TIANJI_* variables for the config settings given on the command line."""
    from tianji_ft.configs.settings import SETTINGS, env_from_values

    values = {s.dest: getattr(args, s.dest, None) for s in SETTINGS if s.env not in LAUNCHER_SETTINGS}
    return env_from_values({s.dest: values.get(s.dest) for s in SETTINGS})


class OldNameStore(argparse.Action):
    """Store like a plain option; spelled with one of ``old_names``, also say the current name once
    on stderr (scripts keep working while their authors learn the new spelling)."""

    old_names: tuple[str, ...] = ()

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.old_names:
            import sys

            new = next(o for o in self.option_strings if o.startswith("--") and o not in self.old_names)
            print(f"tianji-ft: note: {option_string} is the old name of {new}; use {new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def old_names(*names: str) -> type[OldNameStore]:
    """``action=old_names("--model")``: an option that still accepts its old spelling, with a note."""
    return type("OldNameStore", (OldNameStore,), {"old_names": names})


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a number of 0 or more."""
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value
