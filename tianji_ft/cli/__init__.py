"""The ``tianji-ft`` command.

Every verb is one module in this package exposing ``register(subparsers)``.
Verb modules only parse arguments and call library functions, which import
torch/transformers/xtuner lazily, so ``tianji-ft --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from tianji_ft import __version__
from tianji_ft.core import noise, signals
from tianji_ft.core.errors import UserError, os_error_line
from tianji_ft.core.extras import missing_extra_line


# Verbs in the order of the workflow, as --help lists them (a new verb goes in its stage).
STAGES = (
    ("set up", ("doctor", "models", "configs", "completion")),
    ("data", ("data", "synth")),
    ("train", ("plan", "train", "logs", "status")),
    ("weights", ("convert", "merge", "export")),
    ("use", ("chat", "eval", "serve", "web")),
    ("everything", ("pipeline", "demo")),
)
ORDER = [verb for _, verbs in STAGES for verb in verbs]


def _verb_names() -> list[str]:
    names = [info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def _verb_modules():
    for name in _verb_names():
        yield importlib.import_module(f"{__name__}.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tianji-ft",
        description="Fine-tune Chinese chat models with XTuner: data -> train -> convert -> merge -> chat/eval/serve -> export.",
        epilog="\n".join([f"  {stage + ':':<12} {', '.join(v for v in verbs if v in _verb_names())}"
                           for stage, verbs in STAGES] + ["", "Run 'tianji-ft VERB --help' for a verb's options "
                                                              "and an example."]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tianji-ft {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show third-party warnings and logs (hidden by default; training logs keep them)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for module in _verb_modules():
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions (tianji-ft completion bash|zsh)
        from tianji_ft.cli.completion import complete

        complete(parser)
    if not argv:
        parser.print_help()
        return 0
    verb = next((a for a in argv if not a.startswith("-")), None)
    if verb is not None and verb not in _verb_names():
        import difflib

        close = difflib.get_close_matches(verb, _verb_names(), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; the verbs are: {', '.join(_verb_names())}"
        print(f"tianji-ft: error: unknown verb '{verb}'{hint}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    previous_handlers = signals.install()
    try:
        with noise.hushed(args.verbose):
            rc = args.func(args)
    except UserError as err:
        print(f"tianji-ft: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as err:  # SIGINT, and SIGTERM/SIGHUP through signals.install()
        print(f"tianji-ft: interrupted ({signals.signal_name(err)})", file=sys.stderr)
        return signals.exit_code(err)
    except BrokenPipeError:
        return 0
    except ModuleNotFoundError as err:  # an extra that is not installed: say which pip line fixes it
        line = missing_extra_line(args.verb, err.name or "")
        if line is None:
            raise
        print(f"tianji-ft: error: {line}", file=sys.stderr)
        return 2
    except OSError as err:  # a full or read-only disk, a missing folder, no permission
        print(f"tianji-ft: error: {os_error_line(err)}", file=sys.stderr)
        return 1
    except UnicodeError as err:
        print(f"tianji-ft: error: {' '.join(str(err).split())}; check the file's encoding (--encoding)",
              file=sys.stderr)
        return 2
    finally:
        signals.restore(previous_handlers)
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
