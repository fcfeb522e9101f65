"""``loss.png``: loss and learning rate against iteration, from mmengine's logged scalars."""

from __future__ import annotations

import json
from pathlib import Path


def read_scalars(work_dir: str | Path) -> list[dict]:
    """Training records (``loss``/``lr`` per iteration) from every run in ``work_dir``.

    A resumed run writes a new timestamped folder; later records win.
    """
    by_iter: dict[int, dict] = {}
    for path in sorted(Path(work_dir).glob("*/vis_data/scalars.json")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut off by a killed run
            if "loss" in rec and "iter" in rec:
                by_iter[int(rec["iter"])] = rec
    return [by_iter[i] for i in sorted(by_iter)]


def plot_loss(work_dir: str | Path, out: str | Path | None = None) -> Path | None:
    records = read_scalars(work_dir)
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tianji_ft.core.fsio import atomic_open

    iters = [r["iter"] for r in records]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(iters, [r["loss"] for r in records], color="tab:blue", label="loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss", color="tab:blue")
    if any("lr" in r for r in records):
        ax2 = ax.twinx()
        ax2.plot(iters, [r.get("lr", float("nan")) for r in records], color="tab:orange", label="lr")
        ax2.set_ylabel("learning rate", color="tab:orange")
    from tianji_ft.core.manifest import read_manifest

    manifest = read_manifest(work_dir, required=False) or {}
    ax.set_title(manifest.get("config", {}).get("name") or Path(work_dir).name)
    fig.tight_layout()
    out = Path(out or Path(work_dir) / "loss.png")
    with atomic_open(out, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)
    return out
