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
