"""Run an XTuner tool module with the compatibility layer applied.

``python -m tianji_ft.xtuner.entry xtuner.tools.train CONFIG ...`` behaves
like ``python -m xtuner.tools.train CONFIG ...`` (same argv, same exit code)
after :func:`tianji_ft.xtuner.compat.apply_all`. torchrun starts it with
``-m tianji_ft.xtuner.entry`` so every rank is patched the same way.
"""

from __future__ import annotations

import itertools
import runpy
import sys

# A child's user error, relayed by the launcher as its own one line (runner.run_step).
CHILD_ERROR_PREFIX = "tianji-ft: error: "


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m tianji_ft.xtuner.entry MODULE [ARGS...]")
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    import os

    from tianji_ft.xtuner.compat import (CHECK_DATA_ENV, DROP_QUANTIZATION_ENV, LAUNCH_ENV, apply_all,
                                        cpu_deepspeed_argv)

    for key, value in LAUNCH_ENV.items():
        os.environ.setdefault(key, value)
    if os.environ.get(DROP_QUANTIZATION_ENV):  # set by our launcher: the choice is this machine's
        sys.argv = cpu_deepspeed_argv(sys.argv)
    if os.environ.get(CHECK_DATA_ENV) == "1":
        check_data(sys.argv[1:])
    apply_all(verbose=os.environ.get("LOCAL_RANK", "0") == "0")
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def check_data(args: list[str]) -> None:
    """The one data check on the config's training data, before XTuner loads a model.

    A problem is printed as the one line the launcher relays (``tianji-ft:
    error: ...``) and the process exits 2; XTuner would otherwise train on
    nothing, or fail later with an AssertionError deep in its dataset code.
    """
    from tianji_ft.core.errors import UserError
    from tianji_ft.xtuner.datacheck import check_config_data

    options = []
    if "--cfg-options" in args:
        rest = args[args.index("--cfg-options") + 1:]
        options = list(itertools.takewhile(lambda a: not a.startswith("--"), rest))
    try:
        check_config_data(args[0], options)
    except UserError as err:
        print(f"{CHILD_ERROR_PREFIX}{err}", file=sys.stderr, flush=True)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
