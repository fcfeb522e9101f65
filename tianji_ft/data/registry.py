"""The converter registry: ``@converter("firefly")`` and lookup by name.

A converter is a plain generator function ``f(rows, **options)``: it takes
an iterable of raw rows (parsed JSON values, or dicts of text for CSV/XLSX)
and yields exactly one result per row, in order: a conversation record
(a dict; a preference record for the converters of
:mod:`tianji_ft.data.preference_converters`) or a :class:`~tianji_ft.data.accounting.Rejected` saying why the
row cannot be used. That one-for-one contract is what lets the pipeline
account for every input record. A converter that modifies records it keeps
may accept ``notes`` (a ``collections.Counter``) and count the changes.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Union

from tianji_ft.data.accounting import Reject, Rejected
from tianji_ft.core.errors import UserError, did_you_mean

# Modules whose import registers converters.
_CONVERTER_MODULES = ("tianji_ft.data.converters", "tianji_ft.data.msagent", "tianji_ft.data.wishes",
                      "tianji_ft.data.preference_converters")

Fields = Union[tuple, Callable[[dict], tuple]]


@dataclass(frozen=True)
class Converter:
    name: str
    func: Callable[..., Iterator]
    fields: Fields  # fields every row needs: checked on each file's first row
    hint: str  # what to do when they are missing
    produces: str = "conversation"  # the records it makes: "conversation" or "preference"

    def defaults(self) -> dict:
        """The converter's options and their defaults."""
        return {name: p.default for name, p in inspect.signature(self.func).parameters.items()
                if p.kind is p.KEYWORD_ONLY and name != "notes"}

    def takes_notes(self) -> bool:
        return "notes" in inspect.signature(self.func).parameters

    def required_fields(self, options: dict) -> tuple:
        if callable(self.fields):
            return tuple(self.fields({**self.defaults(), **options}))
        return tuple(self.fields)


CONVERTERS: dict[str, Converter] = {}


def converter(name: str, fields: Fields = (), hint: str = "", produces: str = "conversation"):
    """Register a converter under ``name`` (the KIND of ``tianji-ft data convert``)."""

    def register(func):
        CONVERTERS[name] = Converter(name, func, fields, hint, produces)
        return func

    return register


def _load() -> None:
    for module in _CONVERTER_MODULES:
        importlib.import_module(module)


def get_converter(name: str) -> Converter:
    for module in _CONVERTER_MODULES:  # only as far as the one that has it: start-up stays short
        if name in CONVERTERS:
            break
        importlib.import_module(module)
    try:
        return CONVERTERS[name]
    except KeyError:
        for module in _CONVERTER_MODULES:  # every name, for the suggestion
            importlib.import_module(module)
        raise UserError(f"unknown converter '{name}'{did_you_mean(name, CONVERTERS)}") from None


def all_converters() -> dict[str, Converter]:
    _load()
    return dict(sorted(CONVERTERS.items()))


def rowwise(rows: Iterable, convert_row: Callable) -> Iterator:
    """Apply ``convert_row`` to each row; a :class:`Reject` it raises becomes a result."""
    for row in rows:
        try:
            yield convert_row(row)
        except Reject as err:
            yield Rejected(err.reason, err.detail)
