"""Where a run's outputs go: one layout under its work dir, used by every verb's default ``-o``.

::

    work_dirs/NAME/           the training work dir (checkpoints, train.log, tianji_run.json)
    work_dirs/NAME/adapter/   tianji-ft convert, LoRA runs: the PEFT adapter
    work_dirs/NAME/merged/    the model to use: tianji-ft merge of the adapter, or convert of a full fine-tune
    work_dirs/NAME/eval/      tianji-ft eval
    work_dirs/NAME/ollama/    tianji-ft export ollama (GGUF + Modelfile)

The pipeline writes the same folders, so a run made by hand and one made by
``tianji-ft pipeline`` look alike, and each verb's output names the next one.
"""

from __future__ import annotations

from pathlib import Path

from tianji_ft.core.manifest import MANIFEST_NAME

ADAPTER, MERGED, EVAL, OLLAMA = "adapter", "merged", "eval", "ollama"


def layout(work_dir: str | Path) -> dict[str, Path]:
    work_dir = Path(work_dir)
    return {name: work_dir / name for name in (ADAPTER, MERGED, EVAL, OLLAMA)}


def converted_dir(work_dir: str | Path, full: bool) -> Path:
    """Where convert puts a checkpoint: the adapter of a LoRA run, the model of a full fine-tune."""
    return Path(work_dir) / (MERGED if full else ADAPTER)


def work_dir_of(path: str | Path | None) -> Path | None:
    """The training work dir ``path`` lies in, as a folder of the layout (WORK/adapter, WORK/merged), else None."""
    if not path:
        return None
    path = Path(path)
    parent = path.parent
    if path.name in (ADAPTER, MERGED) and (parent / MANIFEST_NAME).is_file():
        return parent
    return None


def sibling_output(source: str | Path, name: str) -> Path:
    """The default output for a step on ``source``: the layout's folder ``name`` when ``source`` is in a
    work dir's layout, else a folder beside ``source`` named after both (``my_adapter-merged``)."""
    work_dir = work_dir_of(source)
    if work_dir is not None:
        return work_dir / name
    source = Path(source)
    return source.parent / f"{source.name.rstrip('/') or 'model'}-{name}"
