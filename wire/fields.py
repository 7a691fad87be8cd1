"""Strict typed fields for the wire records, on standard-library dataclasses.

The pilot installs with fsspec and httpx only, so the records cannot lean on
pydantic; this module is the small part of it they need. A record is a frozen
dataclass deriving from ``Record``; each field says its bounds through
``bounded()`` (``ge``/``le`` for numbers, ``max_length``/``min_length`` for
strings, lists and maps, ``pattern`` and ``choices`` for strings, ``item`` for
the members of a list or map). ``Record.from_dict`` checks a JSON-like mapping
against the type hints and bounds and refuses anything else with a
``WireError`` naming the field; ``to_dict`` gives the JSON-ready mapping back.

Supported field types: ``int`` (never ``bool``), ``float`` (an ``int`` is
accepted), ``str``, ``bool``, ``X | None``, ``list[X]``, ``dict[str, X]`` and
nested records.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from functools import cache
from typing import Any, ClassVar, Self

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
MAP_KEY_MAX = 64  # the longest key of a ``dict[str, X]`` field

_CONSTRAINTS = frozenset({"ge", "le", "min_length", "max_length", "pattern", "choices", "item"})


class WireError(ValueError):
    """A record's input is malformed: wrong type, out of bounds, unknown or missing field."""


def bounded(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
            doc: str = "", **constraints: Any) -> Any:
    """A dataclass field with bounds (see the module docstring for the names)."""
    unknown = set(constraints) - _CONSTRAINTS
    if unknown:
        raise TypeError(f"unknown constraint(s) {sorted(unknown)}")
    if "pattern" in constraints:
        constraints["pattern"] = re.compile(constraints["pattern"])
    if "choices" in constraints:
        constraints["choices"] = tuple(constraints["choices"])
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"doc": doc, **constraints})


class Record:
    """Base of the wire records: strict ``from_dict``, JSON-ready ``to_dict``."""

    WHAT: ClassVar[str] = "record"  # how error messages name this record

    @classmethod
    def from_dict(cls, data: object) -> Self:
        """Check ``data`` field by field and build the record; ``WireError`` if malformed."""
        return _record(cls, data, cls.WHAT)

    def to_dict(self) -> dict[str, Any]:
        return {name: _dump(getattr(self, name)) for name, *_ in _plan(type(self))[1]}


@cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved type hint of every field of a record class."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


@cache
def _plan(cls: type) -> tuple[frozenset[str], tuple[tuple[str, Any, Any, bool], ...]]:
    """Per record class, once: its field names and (name, hint, rules, required) each."""
    hints = field_types(cls)
    fields = tuple((f.name, hints[f.name], f.metadata,
                    f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
                   for f in dataclasses.fields(cls))
    return frozenset(f[0] for f in fields), fields


@cache
def _shape(hint: Any) -> tuple[str, Any]:
    """What kind of value a type hint asks for, and its inner hint(s)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return ("optional" if type(None) in args else "union", inner)
    if isinstance(hint, type) and issubclass(hint, Record):
        return "record", hint
    if origin is list:
        return "list", args[0]
    if origin is dict:
        return "dict", args[1]
    if hint in (bool, int, float, str):
        return hint.__name__, None
    raise TypeError(f"unsupported field type {hint!r}")  # a bug in a record


def _record(cls: type[Record], data: object, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise WireError(f"{where}: must be an object, got {_kind(data)}")
    names, fields = _plan(cls)
    unknown = [k for k in data if k not in names]
    if unknown:
        raise WireError(f"{where}: unknown field(s) {', '.join(map(repr, unknown[:10]))}")
    values = {}
    for name, hint, rules, required in fields:
        if name not in data:
            if required:
                raise WireError(f"{where}.{name}: missing")
            continue
        values[name] = _check(hint, data[name], rules, f"{where}.{name}")
    return cls(**values)


def _check(hint: Any, value: object, rules: Mapping[str, Any], where: str) -> Any:
    kind, inner = _shape(hint)
    if kind == "optional":
        return None if value is None else _check(inner, value, rules, where)
    if kind == "union":
        return _check(inner, value, rules, where)
    if kind == "record":
        return _record(inner, value, where)
    if kind == "list":
        if not isinstance(value, list | tuple):
            raise WireError(f"{where}: must be a list, got {_kind(value)}")
        _length(value, rules, where, "items")
        item_rules = rules.get("item", {})
        return [_check(inner, v, item_rules, f"{where}[{i}]") for i, v in enumerate(value)]
    if kind == "dict":
        if not isinstance(value, Mapping):
            raise WireError(f"{where}: must be an object, got {_kind(value)}")
        _length(value, rules, where, "entries")
        item_rules = rules.get("item", {})
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not 0 < len(k) <= MAP_KEY_MAX:
                raise WireError(f"{where}: keys must be strings of 1 to {MAP_KEY_MAX} characters")
            out[k] = _check(inner, v, item_rules, f"{where}[{k!r}]")
        return out
    if kind == "bool":
        if type(value) is not bool:
            raise WireError(f"{where}: must be true or false, got {_kind(value)}")
        return value
    if kind == "int":
        if type(value) is not int:
            raise WireError(f"{where}: must be an integer, got {_kind(value)}")
        return _range(value, rules, where)
    if kind == "float":
        if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
            raise WireError(f"{where}: must be a finite number, got {_kind(value)}")
        return _range(value, rules, where)
    if not isinstance(value, str):
        raise WireError(f"{where}: must be a string, got {_kind(value)}")
    _length(value, rules, where, "characters")
    pattern = rules.get("pattern")
    if pattern is not None and not pattern.fullmatch(value):
        raise WireError(f"{where}: {_short(value)} does not match {pattern.pattern}")
    choices = rules.get("choices")
    if choices is not None and value not in choices:
        raise WireError(f"{where}: {_short(value)} is not one of {', '.join(choices)}")
    return str(value)


def _range(value: Any, rules: Mapping[str, Any], where: str) -> Any:
    ge, le = rules.get("ge"), rules.get("le")
    if (ge is not None and value < ge) or (le is not None and value > le):
        raise WireError(f"{where}: {value} is outside [{ge}, {le}]")
    return value


def _length(value: Any, rules: Mapping[str, Any], where: str, unit: str) -> None:
    low, high = rules.get("min_length", 0), rules.get("max_length")
    if len(value) < low or (high is not None and len(value) > high):
        raise WireError(f"{where}: {len(value)} {unit}, must be {low} to {high}")


def _dump(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
