"""XTuner's ``process_hf_dataset``, cached on disk and deterministic.

Configs use it as ``train_dataset = dict(type=cached_process_hf_dataset, ...)``
with the same keyword arguments as ``xtuner.dataset.process_hf_dataset``.

XTuner re-tokenizes the whole dataset on every launch and shuffles it before
packing with an unseeded generator, so two launches on the same data pack
different rows. Here the packed dataset is saved under a key made from
everything that shapes it (data file contents, tokenizer files, template,
map fn, max_length, packing flags, seed, library versions): a relaunch or a
resume with nothing changed loads it back memory-mapped instead of
rebuilding, and a build always shuffles with a fixed seed.

A cold build goes through :mod:`tianji_ft.xtuner.fast_encode`, which packs the
same rows as XTuner's ``process`` under that seed at the tokenizer's speed;
what it does not cover (a slow tokenizer, an unknown map fn, some options)
is built by XTuner itself, with one log line saying why.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import inspect
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from tianji_ft.core.errors import UserError
from tianji_ft.core.manifest import package_versions
from tianji_ft.core.fsio import sha256_file
from tianji_ft.core.paths import cache_dir as user_cache_dir
from tianji_ft.xtuner import fast_encode

# Bump when the saved layout or the build recipe changes.
CACHE_FORMAT = 1
MANIFEST = "tianji_dataset_cache.json"
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "tokenizer.model", "vocab.json", "vocab.txt", "merges.txt", "qwen.tiktoken",
)
VERSIONED_PACKAGES = ("xtuner", "datasets", "transformers", "tokenizers")
# load_dataset arguments that change where or how fast data loads, not what loads.
DATASET_ARGS_NOT_IN_KEY = ("cache_dir", "num_proc", "download_mode", "keep_in_memory")
# load_dataset builders that read local files named by data_files / data_dir.
LOCAL_BUILDERS = ("json", "csv", "parquet", "text", "arrow", "pandas")


def default_cache_root() -> Path:
    return user_cache_dir() / "datasets"


def cached_process_hf_dataset(*, dataset, tokenizer, max_length, dataset_map_fn=None, template_map_fn=None,
                              remove_unused_columns=True, shuffle_before_pack=True, pack_to_max_length=True,
                              use_varlen_attn=False, seed=None, cache_dir=None, **kwargs):
    """``process_hf_dataset`` that reuses a saved result and packs reproducibly.

    ``seed`` (default 0) fixes the shuffle before packing; ``cache_dir``
    defaults to ``$TIANJI_FT_CACHE/datasets``. Other keyword arguments
    (``split``, ``map_num_proc``, ``max_dataset_length``, ...) go to XTuner
    unchanged and are part of the cache key.
    """
    seed = 0 if seed is None else int(seed)
    process_kwargs = dict(
        dataset=dataset, tokenizer=tokenizer, max_length=max_length, dataset_map_fn=dataset_map_fn,
        template_map_fn=template_map_fn, remove_unused_columns=remove_unused_columns,
        shuffle_before_pack=shuffle_before_pack, pack_to_max_length=pack_to_max_length,
        use_varlen_attn=use_varlen_attn, **kwargs,
    )
    parts = cache_key_parts(process_kwargs, seed)
    key = key_of(parts)
    path = (Path(cache_dir) if cache_dir else default_cache_root()) / key

    from torch import distributed as dist

    if dist.is_available() and dist.is_initialized():
        return _distributed_load_or_build(path, key, parts, process_kwargs, seed)
    return _load_or_build(path, key, parts, process_kwargs, seed)


# ----------------------------------------------------------------- cache key

def dataset_cache_key(*, seed=None, cache_dir=None, **process_kwargs) -> str:
    """The key :func:`cached_process_hf_dataset` would use for these arguments."""
    defaults = dict(dataset_map_fn=None, template_map_fn=None, remove_unused_columns=True,
                    shuffle_before_pack=True, pack_to_max_length=True, use_varlen_attn=False)
    return key_of(cache_key_parts({**defaults, **process_kwargs}, 0 if seed is None else int(seed)))


def key_of(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:20]


def cache_key_parts(process_kwargs: dict, seed: int) -> dict:
    """Everything the packed dataset depends on, as JSON-able values."""
    options = {k: describe(v) for k, v in process_kwargs.items() if k not in ("dataset", "tokenizer")}
    versions = package_versions(VERSIONED_PACKAGES)
    return {
        "format": CACHE_FORMAT,
        "data": data_fingerprint(process_kwargs["dataset"]),
        "tokenizer": tokenizer_fingerprint(process_kwargs["tokenizer"]),
        "options": options,
        "seed": seed,
        "versions": versions,
    }


def describe(obj):
    """A stable, JSON-able description of a config value.

    Functions carry a hash of their source, so editing a custom map fn
    invalidates the cache; objects without a stable description fall back to
    their repr (which may hold an address: a miss, never a wrong hit).
    """
    if isinstance(obj, str) and _FUNCTION_REPR.fullmatch(obj):
        return _describe_function_repr(obj)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, dict) or hasattr(obj, "items") and hasattr(obj, "keys"):
        return {str(k): describe(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [describe(v) for v in obj]
    if isinstance(obj, functools.partial):
        return {"partial": describe(obj.func), "args": describe(obj.args), "keywords": describe(obj.keywords)}
    fingerprint = getattr(obj, "_fingerprint", None)
    if isinstance(fingerprint, str):  # a datasets.Dataset
        return {"dataset_fingerprint": fingerprint}
    if inspect.ismethod(obj):
        return {"method": describe(obj.__func__), "of": _qualname(obj.__self__)}
    if inspect.isclass(obj):
        return {"class": _qualname(obj)}
    if callable(obj) and hasattr(obj, "__code__"):
        return {"function": _qualname(obj), "source": _source_hash(obj)}
    return {"object": type(obj).__qualname__, "repr": repr(obj)}


# ``xtuner train`` may swap functions in a config for their repr, registered
# in MAP_FUNC; the repr holds an address that changes every process.
_FUNCTION_REPR = re.compile(r"<function (\S+) at 0x[0-9a-fA-F]+>")


def _describe_function_repr(text: str):
    from xtuner.registry import MAP_FUNC

    fn = MAP_FUNC.get(text)
    if fn is not None and not isinstance(fn, str):
        return describe(fn)
    return {"function": _FUNCTION_REPR.fullmatch(text).group(1), "source": None}


def _qualname(obj) -> str:
    target = obj if inspect.isclass(obj) or callable(obj) else type(obj)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"


def _source_hash(fn) -> str | None:
    try:
        return hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()[:16]
    except (OSError, TypeError):
        return None


def resolve_data_files(data_files) -> list[Path]:
    """Local files named by a ``load_dataset`` ``data_files`` value (str, list or split dict, globs allowed)."""
    if data_files is None:
        return []
    if isinstance(data_files, (str, os.PathLike)):
        names = [data_files]
    elif hasattr(data_files, "values") and hasattr(data_files, "keys"):
        return [p for split in sorted(data_files) for p in resolve_data_files(data_files[split])]
    else:
        names = list(data_files)
    files = []
    for name in names:
        name = os.fspath(name)
        if os.path.isfile(name):
            files.append(Path(name))
        elif os.path.isdir(name):
            files.extend(sorted(p for p in Path(name).rglob("*") if p.is_file()))
        else:
            matches = sorted(p for p in glob.glob(name, recursive=True) if os.path.isfile(p))
            if not matches:
                raise UserError(f"data file {name} not found; check the config's data_files (TIANJI_DATA)")
            files.extend(Path(p) for p in matches)
    return files


def _is_build_config(obj) -> bool:
    """A BUILDER config (``dict(type=..., ...)``), as opposed to a built object such as a DatasetDict."""
    return hasattr(obj, "keys") and "type" in obj and not hasattr(obj, "column_names")


def _built_fingerprint(dataset) -> dict:
    if hasattr(dataset, "keys"):  # DatasetDict
        return {"built": {str(split): describe(dataset[split]) for split in sorted(dataset.keys())}}
    return {"built": describe(dataset)}


def data_fingerprint(dataset) -> dict:
    """Content hashes of the local data files behind a ``load_dataset`` config, in order.

    A built dataset, or a Hub dataset, is described by the datasets
    library's own fingerprint (building it if need be).
    """
    if not _is_build_config(dataset):
        return _built_fingerprint(dataset)
    cfg = {k: v for k, v in dataset.items() if k not in DATASET_ARGS_NOT_IN_KEY}
    source = cfg.get("path")
    local_source = isinstance(source, (str, os.PathLike)) and os.path.exists(source)
    if not (source in LOCAL_BUILDERS or local_source):
        from xtuner.registry import BUILDER

        return _built_fingerprint(BUILDER.build(dataset))
    files: dict = {}
    for name in ("path", "data_dir", "data_files"):
        value = cfg.pop(name, None) if name != "path" or local_source else None
        if value is None:
            continue
        if hasattr(value, "keys"):
            files[name] = {str(split): [sha256_file(p) for p in resolve_data_files(value[split])]
                           for split in sorted(value)}
        else:
            files[name] = [sha256_file(p) for p in resolve_data_files(value)]
    return {"config": describe(cfg), "files": files}


def tokenizer_fingerprint(tokenizer) -> dict:
    """Hashes of the tokenizer's files when it comes from a local directory, else of its vocabulary."""
    if _is_build_config(tokenizer):
        cfg = dict(tokenizer)
        source = cfg.pop("pretrained_model_name_or_path", None)
        if source is not None and os.path.isdir(source):
            return {"config": describe(cfg), "files": _tokenizer_files(Path(source))}
        from xtuner.registry import BUILDER

        tokenizer = BUILDER.build(tokenizer)
    return {"class": type(tokenizer).__qualname__, "content": _tokenizer_content_hash(tokenizer)}


def _tokenizer_files(directory: Path) -> dict:
    names = [n for n in TOKENIZER_FILES if (directory / n).is_file()]
    names += sorted(p.name for p in directory.glob("tokenization_*.py"))
    if not names:
        raise UserError(f"no tokenizer files in {directory}; expected tokenizer.json or tokenizer.model")
    return {name: sha256_file(directory / name) for name in names}


def _tokenizer_content_hash(tokenizer) -> str:
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode())
    h.update(json.dumps(describe(tokenizer.special_tokens_map), sort_keys=True).encode())
    h.update(json.dumps([tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id,
                         getattr(tokenizer, "padding_side", None)]).encode())
    return h.hexdigest()


# ----------------------------------------------------------- load or build

def is_complete(path: Path, key: str) -> bool:
    """Whether ``path`` holds a finished save for ``key`` (manifest present, files at their recorded sizes)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("key") != key:
            return False
        files = manifest["files"]
        return bool(files) and all((path / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _load(path: Path):
    from datasets import load_from_disk

    dataset = load_from_disk(str(path))
    if "length" in dataset.column_names:
        # XTuner's samplers read lengths from this attribute, as process() sets it.
        setattr(dataset, "length", dataset["length"])
    return dataset


def _log(message: str) -> None:
    # mmengine's current logger: the run's log file inside a training run.
    from mmengine.logging import print_log

    print_log(message, logger="current")


def _try_load(path: Path, key: str):
    if not is_complete(path, key):
        return None
    try:
        return _load(path)
    except Exception as err:  # a damaged save is rebuilt, never trusted
        _log(f"dataset cache {key}: unreadable save at {path} ({type(err).__name__}: {err}); rebuilding")
        shutil.rmtree(path, ignore_errors=True)
        return None


def build(process_kwargs: dict, seed: int):
    """Run XTuner's own ``process`` with NumPy's global generator seeded.

    ``Dataset.shuffle()`` without a seed draws its seed from NumPy's global
    state (as does ``max_dataset_length`` sampling), so seeding that state is
    what makes XTuner's shuffle-then-pack reproducible. The caller's state is
    restored afterwards.
    """
    import numpy as np
    from xtuner.dataset.huggingface import process

    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return process(**process_kwargs)
    except KeyError as err:
        # XTuner's process() fails this way when filtering left no rows.
        if "length" not in str(err):
            raise
        raise fast_encode.no_sample_left(process_kwargs.get("max_length")) from err
    finally:
        np.random.set_state(state)


def _new_dir(path: Path, key: str, suffix: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=suffix, dir=path.parent))


def _publish(tmp: Path, path: Path, key: str, parts: dict, rows: int) -> None:
    """Write the manifest into the finished save ``tmp`` and rename it to ``path``."""
    files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
    (tmp / MANIFEST).write_text(json.dumps(
        {"key": key, "rows": rows, "files": files, "parts": parts}, ensure_ascii=False, indent=1),
        encoding="utf-8")
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)
    try:
        os.rename(tmp, path)
    except OSError:
        if is_complete(path, key):  # another process finished the same build first
            return
        shutil.rmtree(path, ignore_errors=True)  # a partial or damaged save
        os.rename(tmp, path)


def _save(dataset, path: Path, key: str, parts: dict) -> None:
    """Save into a temporary directory beside ``path`` and rename it into place."""
    tmp = _new_dir(path, key, ".tmp")
    try:
        dataset.save_to_disk(str(tmp))
        _publish(tmp, path, key, parts, len(dataset))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_and_save(path: Path, key: str, parts: dict, process_kwargs: dict, seed: int) -> None:
    """Build the packed dataset for ``key`` into ``path``: the fast build, or XTuner's own when it does not apply.

    The fast build (:mod:`tianji_ft.xtuner.fast_encode`) packs the rows XTuner's
    ``process`` packs under the same seed; for arguments it does not cover it
    says why in one line and XTuner builds.
    """
    tmp = _new_dir(path, key, ".tmp")
    work = _new_dir(path, key, ".work")
    try:
        try:
            summary = fast_encode.build_to_disk(process_kwargs, seed, tmp, work, key)
        except fast_encode.Unsupported as why:
            shutil.rmtree(work, ignore_errors=True)
            _log(f"dataset cache {key}: building through XTuner's process_hf_dataset, "
                 f"the fast build does not cover it: {why}")
            _save(build(process_kwargs, seed), path, key, parts)
            return
        shutil.rmtree(work, ignore_errors=True)
        _log(f"dataset cache {key}: fast build of {summary['records']} records ({summary['tokens']} tokens) "
             f"into {summary['rows']} rows with {summary['processes']} process(es)")
        _publish(tmp, path, key, parts, summary["rows"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def _ensure_saved(path: Path, key: str, parts: dict, process_kwargs: dict, seed: int):
    """(dataset, hit) for ``key``: loaded from ``path``, or built, saved and loaded back."""
    start = time.monotonic()
    dataset = _try_load(path, key)
    if dataset is not None:
        return dataset, True, time.monotonic() - start
    _build_and_save(path, key, parts, process_kwargs, seed)
    # Return the memory-mapped save, so a miss and a hit hand back the same object.
    return _load(path), False, time.monotonic() - start


def _report(dataset, path: Path, key: str, hit: bool, seconds: float):
    what = "hit, loaded" if hit else "miss, tokenized and packed"
    _log(f"dataset cache {what} {len(dataset)} rows in {seconds:.1f}s (key {key}, {path})")
    setattr(dataset, "tianji_cache", {"key": key, "hit": hit, "path": str(path), "seconds": round(seconds, 3)})
    return dataset


def _load_or_build(path: Path, key: str, parts: dict, process_kwargs: dict, seed: int):
    dataset, hit, seconds = _ensure_saved(path, key, parts, process_kwargs, seed)
    return _report(dataset, path, key, hit, seconds)


def _distributed_load_or_build(path: Path, key: str, parts: dict, process_kwargs: dict, seed: int):
    """Rank 0 builds while the others wait on a gloo barrier (as XTuner does), then all load.

    Nodes that do not share rank 0's disk build their own copy on their
    local rank 0; the build is deterministic, so every node gets the same rows.
    """
    from datetime import timedelta

    from torch import distributed as dist

    timeout = timedelta(minutes=int(os.getenv("XTUNER_DATASET_TIMEOUT", default=60)))
    group = dist.new_group(backend="gloo", timeout=timeout)
    start = time.monotonic()
    hit = True
    if dist.get_rank() == 0:
        _, hit, _ = _ensure_saved(path, key, parts, process_kwargs, seed)
    dist.monitored_barrier(group=group, timeout=timeout)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and not is_complete(path, key):
        _ensure_saved(path, key, parts, process_kwargs, seed)
    dist.monitored_barrier(group=group, timeout=timeout)
    dataset = _load(path)
    if dist.get_rank() == 0:
        return _report(dataset, path, key, hit, time.monotonic() - start)
    # Only rank 0 knows whether it built; the others loaded what it saved.
    setattr(dataset, "tianji_cache", {"key": key, "hit": None, "path": str(path)})
    return dataset
