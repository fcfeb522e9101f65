"""Run an XTuner tool module with the compatibility layer applied.

``python -m tianji_ft.launch.entry xtuner.tools.train CONFIG ...`` behaves
like ``python -m xtuner.tools.train CONFIG ...`` (same argv, same exit code)
after :func:`tianji_ft.launch.compat.apply_all`. torchrun starts it with
``-m tianji_ft.launch.entry`` so every rank is patched the same way.
"""

from __future__ import annotations

import runpy
import sys


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m tianji_ft.launch.entry MODULE [ARGS...]")
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    from tianji_ft.launch.compat import LAUNCH_ENV, apply_all

    import os

    for key, value in LAUNCH_ENV.items():
        os.environ.setdefault(key, value)
    apply_all(verbose=os.environ.get("LOCAL_RANK", "0") == "0")
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
