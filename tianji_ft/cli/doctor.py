"""tianji-ft doctor: versions, accelerator and disk, with a fix for each problem."""

from pathlib import Path

from tianji_ft.cli._common import add_verb


def register(sub) -> None:
    p = add_verb(sub, "doctor", "Check the installed stack, the GPU and free disk; print a fix for each problem.",
                 "tianji-ft doctor --work-dir work_dirs", run)
    p.add_argument("--work-dir", default=".", type=Path, help="where checkpoints will go (free disk is checked)")
    p.add_argument("--json", action="store_true", help="print the checks, problems and notes as JSON")


def run(args) -> int:
    from tianji_ft.workflows.doctor import doctor

    return doctor(args.work_dir, as_json=args.json)
