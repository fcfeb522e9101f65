"""Show the role x scene suitability table as text or as a heatmap image."""

from __future__ import annotations

import sys
from pathlib import Path

from tianji_ft.synth.wishes_data import WishesData
from tianji_ft.core.errors import UserError

# Fonts with Chinese glyphs, tried in order; matplotlib's default font has none.
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
             "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "AR PL UMing CN", "Droid Sans Fallback")


def map_counts(data: WishesData) -> tuple[int, int]:
    suitable = sum(data.suitable.values())
    return suitable, len(data.suitable) - suitable


def map_text(data: WishesData) -> str:
    """One line per name: a mark per scene, in scenes.json order."""
    suitable, skipped = map_counts(data)
    width = max(len(n) for n in data.names)
    lines = ["scenes: " + ", ".join(f"{i + 1}={s.strip()}" for i, s in enumerate(data.scenes))]
    lines.append(" " * (2 * width + 1) + "".join(f"{(i + 1) % 10}" for i in range(len(data.scenes))))
    for name in data.names:
        marks = "".join("#" if data.is_suitable(name, s) else "." for s in data.scenes)
        lines.append(f"{name}{' ' * (2 * (width - len(name)))} {marks}")  # CJK glyphs are two columns wide
    lines.append(f"{suitable} suitable pairs (#), {skipped} skipped (.) of {len(data.suitable)}")
    return "\n".join(lines)


def _pick_font(font_path: str | None, err):
    from matplotlib import font_manager

    if font_path:
        if not Path(font_path).is_file():
            raise UserError(f"font file {font_path} not found; pass a .ttf/.otf/.ttc with Chinese glyphs to --font")
        font_manager.fontManager.addfont(font_path)
        return font_manager.FontProperties(fname=font_path).get_name()
    installed = {f.name for f in font_manager.fontManager.ttflist}
    for name in CJK_FONTS:
        if name in installed:
            return name
    print("tianji-ft: warning: no font with Chinese glyphs found, labels will show as boxes; "
          "install fonts-noto-cjk or pass --font PATH", file=err)
    return None


def plot_map(data: WishesData, out_png: str | Path, font_path: str | None = None, err=None) -> Path:
    import warnings

    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    font = _pick_font(font_path, err or sys.stderr)
    grid = [[1 if data.is_suitable(n, s) else 0 for s in data.scenes] for n in data.names]
    suitable, skipped = map_counts(data)
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * len(data.scenes), 1.5 + 0.4 * len(data.names)))
    try:
        ax.imshow(grid, cmap=ListedColormap(["#e9e9e9", "#2e8b57"]), vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(data.scenes)), [s.strip() for s in data.scenes], rotation=60, ha="right")
        ax.set_yticks(range(len(data.names)), list(data.names))
        if font:
            for label in ax.get_xticklabels() + ax.get_yticklabels():
                label.set_fontfamily(font)
        ax.set_xticks([x - 0.5 for x in range(1, len(data.scenes))], minor=True)
        ax.set_yticks([y - 0.5 for y in range(1, len(data.names))], minor=True)
        ax.grid(which="minor", color="white", linewidth=1)
        ax.tick_params(which="minor", length=0)
        ax.set_title(f"role x scene suitability: {suitable} generated (green), {skipped} skipped (grey)")
        out_png = Path(out_png)
        out_png.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Glyph .* missing from")  # _pick_font already warned once
            fig.tight_layout()
            fig.savefig(out_png, dpi=110)
    finally:
        plt.close(fig)
    return out_png
