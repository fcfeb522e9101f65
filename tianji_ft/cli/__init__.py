"""The ``tianji-ft`` command.

Every verb is one module in this package exposing ``register(subparsers)``.
Verb modules only parse arguments and call library functions, which import
torch/transformers/xtuner lazily, so ``tianji-ft --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from tianji_ft import __version__
from tianji_ft.core import signals
from tianji_ft.core.errors import UserError, os_error_line
from tianji_ft.core.extras import missing_extra_line


def _verb_modules():
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tianji-ft",
        description="Fine-tune Chinese chat models with XTuner: data -> train -> convert -> merge -> chat/eval/serve -> export.",
        epilog="Run 'tianji-ft VERB --help' for a verb's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"tianji-ft {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for module in _verb_modules():
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous_handlers = signals.install()
    try:
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
