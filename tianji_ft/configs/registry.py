"""Find, describe, copy and compare the configs in ``xtuner_configs``.

Everything here reads config files as text and ``ast`` only: asking about a
config never runs it (and never imports torch, mmengine or xtuner).
"""

from __future__ import annotations

import ast
import difflib
import os
from pathlib import Path

from tianji_ft.configs.settings import BY_ENV
from tianji_ft.core.errors import UserError, did_you_mean
from tianji_ft.core.fsio import atomic_open
from tianji_ft.core.paths import CONFIGS_DIR

META_NAME = "tianji_meta"


def configs_dir() -> Path:
    return CONFIGS_DIR


def list_configs() -> list[str]:
    """Names of the configs in the pack (files with a ``tianji_meta``), sorted."""
    return sorted(p.stem for p in configs_dir().glob("*.py") if _has_meta(p))


def resolve_config(name_or_path: str | os.PathLike) -> Path:
    """The file for a config name (``configs list``) or an existing ``.py`` path."""
    text = os.fspath(name_or_path)
    path = Path(text)
    if path.is_file():
        return path
    stem = text[:-3] if text.endswith(".py") else text
    candidate = configs_dir() / f"{stem}.py"
    if "/" not in stem and os.sep not in stem and candidate.is_file():
        return candidate
    if not list_configs():
        raise UserError(f"unknown config '{text}': not a file, and there are no configs in {configs_dir()}")
    raise UserError(f"unknown config '{text}': not a file, nor a config name{did_you_mean(stem, list_configs())}")


def config_meta(path: str | os.PathLike) -> dict:
    """The config's ``tianji_meta`` dict, parsed without executing the file; ``{}`` if it has none."""
    node = _meta_node(_parse(Path(path)))
    return _literal(node, Path(path)) if node is not None else {}


def config_settings(path: str | os.PathLike) -> dict[str, dict]:
    """``TIANJI_*`` variable -> ``{"var": config variable, "default": value written in the file}``.

    Found by reading the settings block: every ``_env("TIANJI_X", default)``
    call; a variable read with no default there (e.g. the evaluation prompts,
    whose default is the ``else`` branch) takes the literal that stands in for it.
    """
    path = Path(path)
    found: dict[str, dict] = {}
    for stmt in _parse(path).body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
            continue
        for call in ast.walk(stmt.value):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "_env"
                    and call.args and isinstance(call.args[0], ast.Constant)):
                continue
            env = call.args[0].value
            if env in found:
                continue
            default = None
            if len(call.args) > 1:
                default = _literal(call.args[1], path)
            elif isinstance(stmt.value, ast.IfExp):
                default = _literal(stmt.value.orelse, path)
            found[env] = {"var": stmt.targets[0].id, "default": default}
    return found


def describe(name_or_path: str) -> str:
    """What ``configs show`` prints: metadata, then every setting with its flag, variable and default."""
    path = resolve_config(name_or_path)
    meta = config_meta(path)
    lines = [f"file:        {path}"]
    if not meta:
        lines.append("(no tianji_meta: not a tianji-ft config; the settings below are what it reads)")
    hub = meta.get("hub") or {}
    method = "QLoRA (4-bit nf4 + LoRA)" if meta.get("quantized") else "LoRA" if meta.get("lora") else "full fine-tune"
    objective = {"dpo": "DPO (preference pairs, LoRA-off reference)", "orpo": "ORPO (preference pairs, no reference)"}
    start = f"the merged SFT model of {meta['start_from']}" if meta.get("start_from") else None
    for label, value in (
        ("name", meta.get("name")),
        ("version", meta.get("version")),
        ("model", ", ".join(f"{v} ({k})" for k, v in hub.items())),
        ("family", meta.get("family")),
        ("template", meta.get("template")),
        ("method", method if meta else None),
        ("objective", objective.get(meta.get("objective"), meta.get("objective"))),
        ("starts from", start),
        ("deepspeed", meta.get("deepspeed")),
        ("gpus", meta.get("gpus")),
        ("data format", meta.get("data_format")),
        ("tiny data", ", ".join(meta.get("tiny_data") or [])),
        ("system", meta.get("system")),
    ):
        if value not in (None, ""):
            lines.append(f"{label + ':':<12} " + str(value).replace("\n", "\n" + " " * 13))
    if meta.get("eval_prompts"):
        lines.append("eval prompts:")
        lines += [f"  - {p}" for p in meta["eval_prompts"]]
    settings = config_settings(path)
    if settings:
        lines.append("settings (flag for tianji-ft train / variable for xtuner train / default):")
        for env, info in settings.items():
            flag = BY_ENV[env].flag if env in BY_ENV else ""
            lines.append(f"  {flag:<18} {env:<24} {_short(info['default'])}")
    return "\n".join(lines)


def config_rows() -> list[dict]:
    """One dict per config: name, version, model (Hugging Face id), template, method, data format."""
    rows = []
    for name in list_configs():
        meta = config_meta(configs_dir() / f"{name}.py")
        method = "qlora" if meta.get("quantized") else "lora" if meta.get("lora") else "full"
        if meta.get("objective"):  # preference training: "qlora+dpo", "qlora+orpo"
            method += f"+{meta['objective']}"
        rows.append({"name": name, "version": meta.get("version"), "model": (meta.get("hub") or {}).get("huggingface"),
                     "template": meta.get("template"), "method": method, "data": meta.get("data_format")})
    return rows


def table_text() -> str:
    """What ``configs list`` prints: one row per config."""
    rows = [("NAME", "VERSION", "MODEL (Hugging Face id)", "TEMPLATE", "METHOD", "DATA")]
    rows += [tuple("?" if v is None else v for v in row.values()) for row in config_rows()]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def copy_config(name_or_path: str, dest: str | os.PathLike, force: bool = False) -> Path:
    """Copy a config to ``dest`` (a file, or a folder to put ``NAME.py`` in) for editing.

    The copy gets its own ``name`` (the new file's stem, which also names its
    work dir) and records where it came from; the rest is byte-identical so
    ``configs diff`` shows exactly what was changed afterwards.
    """
    src = resolve_config(name_or_path)
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / src.name
    if dest.suffix != ".py":
        raise UserError(f"{dest}: a config copy must end in .py (mmengine reads configs by extension)")
    if dest.exists() and not force:
        raise UserError(f"{dest} exists; pass --force to overwrite it")
    if dest.resolve() == src.resolve():
        raise UserError(f"{dest} is the config itself; choose another destination")
    meta = config_meta(src)
    body = _body(src.read_text(encoding="utf-8"))
    old_name = meta.get("name")
    if old_name and dest.stem != old_name:
        origin = f"{old_name} {meta.get('version', '')}".strip()
        body = body.replace(f'\n    name="{old_name}",\n', f'\n    name="{dest.stem}",\n    copied_from="{origin}",\n', 1)
    header = "\n".join([
        f"# {dest.stem}: copied from {src} by `tianji-ft configs copy`; edit freely.",
        f"# See your changes: tianji-ft configs diff {old_name or src} {dest}",
        f"# Train: tianji-ft train {dest} ...   or   xtuner train {dest}",
    ])
    with atomic_open(dest) as fh:
        fh.write(header + "\n" + body)
    return dest


def diff_configs(a: str, b: str) -> str:
    """Changed metadata and setting defaults, then a unified diff of the code (header comments left out)."""
    path_a, path_b = resolve_config(a), resolve_config(b)
    out = []
    meta_a, meta_b = config_meta(path_a), config_meta(path_b)
    for key in sorted(set(meta_a) | set(meta_b), key=lambda k: (k not in meta_a, k)):
        if meta_a.get(key) != meta_b.get(key):
            out.append(f"meta {key}: {_short(meta_a.get(key))} -> {_short(meta_b.get(key))}")
    set_a, set_b = config_settings(path_a), config_settings(path_b)
    for env in sorted(set(set_a) | set(set_b)):
        da, db = (set_a.get(env) or {}).get("default"), (set_b.get(env) or {}).get("default")
        if da != db:
            out.append(f"default {env}: {_short(da)} -> {_short(db)}")
    lines_a = _body(path_a.read_text(encoding="utf-8")).splitlines(keepends=True)
    lines_b = _body(path_b.read_text(encoding="utf-8")).splitlines(keepends=True)
    code = list(difflib.unified_diff(lines_a, lines_b, fromfile=str(path_a), tofile=str(path_b), n=2))
    if not out and not code:
        return f"{path_a} and {path_b} are the same (apart from their header comments)"
    return "\n".join(out) + ("\n\n" if out and code else "") + "".join(code).rstrip("\n")


def _body(text: str) -> str:
    """The file without its leading comment header."""
    lines = text.splitlines(keepends=True)
    i = 0
    while i < len(lines) and lines[i].startswith("#"):
        i += 1
    return "".join(lines[i:])


def _short(value, limit: int = 100) -> str:
    text = repr(value) if not isinstance(value, str) else value.replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse(path: Path) -> ast.Module:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except FileNotFoundError:
        raise UserError(f"{path}: no such config file") from None
    except (SyntaxError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a readable Python config ({err})") from None


def _meta_node(tree: ast.Module):
    for stmt in tree.body:
        if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
                and stmt.targets[0].id == META_NAME):
            return stmt.value
    return None


def _has_meta(path: Path) -> bool:
    try:
        return META_NAME in path.read_text(encoding="utf-8") and _meta_node(_parse(path)) is not None
    except UserError:
        return False


def _literal(node, path: Path):
    """``ast.literal_eval`` that also accepts ``dict(key=...)`` calls, as the configs write them."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _literal(kw.value, path) for kw in node.keywords}
    if isinstance(node, ast.List):
        return [_literal(e, path) for e in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e, path) for e in node.elts)
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise UserError(f"{path}:{node.lineno}: {META_NAME} and setting defaults must be plain literals") from None
