"""Which requests a wishes run makes, and the exact prompt and input of each.

Every item draws its random choices (few-shot example, injection sentence,
input variant) from its own generator seeded by (seed, round, style, name,
scene), so a resumed run renders the same prompts as the run it continues,
whatever order the items complete in.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from tianji_ft.synth.wishes_data import WishesData
from tianji_ft.core.errors import UserError


@dataclass(frozen=True)
class WishItem:
    id: str
    round: int
    style: str
    name: str
    scene: str
    prompt: str  # the user message sent to the model
    input: str  # the user turn the dataset records


@dataclass(frozen=True)
class WishPlan:
    items: list[WishItem]
    skipped_pairs: list[tuple[str, str]]  # unsuitable (name, scene), once per pair
    skipped_requests: int  # unsuitable pairs x styles x rounds
    styles: tuple[str, ...]
    rounds: int


def item_id(round_: int, style: str, name: str, scene: str) -> str:
    return f"{round_}|{style}|{name}|{scene}"


def item_rng(seed: int, round_: int, style: str, name: str, scene: str) -> random.Random:
    # sha256 rather than hash(): Python salts str hashes per process.
    key = "\0".join((str(seed), str(round_), style, name, scene)).encode("utf-8")
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def render_prompt(data: WishesData, style: str, name: str, scene: str, rng: random.Random) -> str:
    """The seed's prompt: its choices are drawn in the seed's order (example, then injection)."""
    spec = data.styles[style]
    style_prompt = spec.template.format(rng.choice(spec.examples)) if spec.uses_example else spec.template
    return data.final_prompt.format(spec.length_limit, style_prompt, name, scene, rng.choice(data.injection_sentences))


def render_input(data: WishesData, style: str, name: str, scene: str, rng: random.Random, variants: bool) -> str:
    iv = data.input_variants
    if variants and style in iv.styles and scene in iv.scenes:
        return rng.choice(iv.templates).format(name=name, scene=scene)
    return data.styles[style].input_template.format(name=name, scene=scene, style=style)


def _select(wanted, known: tuple[str, ...], what: str, flag: str) -> tuple[str, ...]:
    if not wanted:
        return known
    # Scenes may carry stray spaces in the seed ("工作升职 "); match on the stripped text.
    by_key = {k.strip(): k for k in known}
    unknown = [w for w in wanted if w.strip() not in by_key]
    if unknown:
        raise UserError(f"unknown {what} {unknown} in {flag}; choose from {[k.strip() for k in known]}")
    chosen = {by_key[w.strip()] for w in wanted}
    return tuple(k for k in known if k in chosen)


def plan_wishes(
    data: WishesData,
    styles=None,
    rounds: int = 1,
    seed: int = 0,
    input_variants: bool = False,
    names=None,
    scenes=None,
) -> WishPlan:
    styles = _select(styles, tuple(data.styles), "style", "--styles")
    names = _select(names, data.names, "name", "--names")
    scenes = _select(scenes, data.scenes, "scene", "--scenes")
    if rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {rounds}")
    items: list[WishItem] = []
    skipped = [(n, s) for n in names for s in scenes if not data.is_suitable(n, s)]
    for round_ in range(1, rounds + 1):
        for style in styles:
            for name in names:
                for scene in scenes:
                    if not data.is_suitable(name, scene):
                        continue
                    rng = item_rng(seed, round_, style, name, scene)
                    prompt = render_prompt(data, style, name, scene, rng)
                    text = render_input(data, style, name, scene, rng, input_variants)
                    items.append(WishItem(item_id(round_, style, name, scene), round_, style, name, scene, prompt, text))
    return WishPlan(items, skipped, len(skipped) * len(styles) * rounds, styles, rounds)
