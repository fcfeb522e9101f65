"""The wishes generator's content (names, scenes, styles, prompts), read from ``data/wishes/``.

The content is data so it can be edited without touching code; this module
only loads it and checks that the pieces fit together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tianji_ft.core.errors import UserError
from tianji_ft.core.paths import DATA_DIR


def default_wishes_dir() -> Path:
    return DATA_DIR / "wishes"


@dataclass(frozen=True)
class Style:
    name: str
    template: str  # the seed's "style_temple"; "{}" takes one few-shot example
    uses_example: bool
    examples: tuple[str, ...]
    length_limit: int
    input_template: str  # what the dataset records as the user's input


@dataclass(frozen=True)
class InputVariants:
    """Tianji's rebuild-input step: human-like rewrites of the plain input."""

    styles: tuple[str, ...]
    scenes: tuple[str, ...]
    templates: tuple[str, ...]


@dataclass(frozen=True)
class WishesData:
    names: tuple[str, ...]
    scenes: tuple[str, ...]
    styles: dict[str, Style]
    final_prompt: str
    injection_sentences: tuple[str, ...]
    request_system_prompt: str
    dataset_system_prompt: str
    input_variants: InputVariants
    suitable: dict[tuple[str, str], bool]  # (name, scene) -> generate it?

    def is_suitable(self, name: str, scene: str) -> bool:
        return self.suitable[(name, scene)]


def _read(folder: Path, filename: str):
    path = folder / filename
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise UserError(f"{path} is missing; restore it from the repository or pass --data-dir") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}); fix the file") from None


def _str_list(value, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"{where} must be a JSON list of strings; fix the file")
    return tuple(value)


def _load_styles(folder: Path) -> dict[str, Style]:
    raw = _read(folder, "styles.json")
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{folder / 'styles.json'} must map style names to settings; fix the file")
    styles = {}
    for name, spec in raw.items():
        where = f"{folder / 'styles.json'} style '{name}'"
        try:
            style = Style(
                name=name,
                template=spec["style_temple"],
                uses_example=bool(spec["if_example"]),
                examples=_str_list(spec["examples"], f"{where} examples"),
                length_limit=int(spec["length_limit"]),
                input_template=spec["input_template"],
            )
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"{where} lacks or mistypes {err}; it needs style_temple, if_example, examples, length_limit, input_template") from None
        if style.uses_example and not style.examples:
            raise UserError(f"{where} has if_example true but no examples; add some or set it false")
        styles[name] = style
    return styles


def _load_map(folder: Path, names, scenes) -> dict[tuple[str, str], bool]:
    path = folder / "role_scene_map.json"
    raw = _read(folder, "role_scene_map.json")
    map_scenes = _str_list(raw.get("scenes"), f"{path} scenes")
    if map_scenes != scenes:
        raise UserError(f"{path} lists scenes {list(map_scenes)} but scenes.json has {list(scenes)}; make them equal, in the same order")
    rows = raw.get("suitable")
    if not isinstance(rows, dict):
        raise UserError(f"{path} needs a 'suitable' object of name -> row; fix the file")
    missing = [n for n in names if n not in rows]
    if missing:
        raise UserError(f"{path} has no row for {missing}; add a row of {len(scenes)} 0/1 values per name")
    suitable = {}
    for name in names:
        row = rows[name]
        if not isinstance(row, list) or len(row) != len(scenes) or any(v not in (0, 1) for v in row):
            raise UserError(f"{path} row '{name}' must be {len(scenes)} values of 0 or 1; fix it")
        for scene, flag in zip(scenes, row):
            suitable[(name, scene)] = bool(flag)
    return suitable


def load_wishes_data(folder: str | Path | None = None) -> WishesData:
    folder = Path(folder) if folder else default_wishes_dir()
    names = _str_list(_read(folder, "names.json"), f"{folder / 'names.json'}")
    scenes = _str_list(_read(folder, "scenes.json"), f"{folder / 'scenes.json'}")
    for what, items in (("names.json", names), ("scenes.json", scenes)):
        if not items or len(set(items)) != len(items):
            raise UserError(f"{folder / what} must be a non-empty list without duplicates; fix the file")
    prompts = _read(folder, "prompts.json")
    variants = _read(folder, "input_variants.json")
    try:
        data = WishesData(
            names=names,
            scenes=scenes,
            styles=_load_styles(folder),
            final_prompt=prompts["final_prompt"],
            injection_sentences=_str_list(prompts["random_finalprompt_sentence"], "prompts.json random_finalprompt_sentence"),
            request_system_prompt=prompts["request_system_prompt"],
            dataset_system_prompt=prompts["dataset_system_prompt"],
            input_variants=InputVariants(
                styles=_str_list(variants["applies_to_styles"], "input_variants.json applies_to_styles"),
                scenes=_str_list(variants["scenes"], "input_variants.json scenes"),
                templates=_str_list(variants["templates"], "input_variants.json templates"),
            ),
            suitable=_load_map(folder, names, scenes),
        )
    except KeyError as err:
        raise UserError(f"{folder}: a data file lacks the key {err}; compare it with the shipped data/wishes") from None
    if not data.injection_sentences:
        raise UserError(f"{folder / 'prompts.json'} random_finalprompt_sentence is empty; keep at least the empty sentence \"\"")
    return data
