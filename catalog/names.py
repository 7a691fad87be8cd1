"""Names of data: scopes, dataset and file names, ``scope:name`` identifiers (Rucio's DIDs).

One grammar for every name that enters dawms, because names become paths on
storage (``storage/paths.py`` joins them under an endpoint's root) and words of
payload commands. It is a subset of Rucio's generic schema, so every dawms name
is also a valid Rucio DID:

- a scope: 1 to 25 characters (``MAX_SCOPE``);
- a dataset or file name: 2 to 250 characters (``MAX_NAME``);
- both: letters, digits, ``.``, ``_`` and ``-`` only (so no ``/``, no ``:``, no
  space, no shell or URL metacharacter), starting with a letter or a digit (never
  ``.``, ``-`` or ``_``), and never containing ``..``.

The catalog owns the grammar because every layer stores and compares these
names. This module is standard library only (like ``states.py``): the wire
records and the pilot, which may not import the catalog, read it through
``wire/names.py`` (tests/test_architecture.py keeps it standard library only).
"""

from __future__ import annotations

import re

MAX_SCOPE = 25
MAX_NAME = 250
MIN_NAME = 2  # Rucio's name pattern wants at least two characters
# letters, digits, `._-`; first a letter or digit; a dot never followed by a dot.
# Written without look-arounds so the same text works as an OpenAPI/JSON-schema pattern.
NAME_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9_-]|\.[A-Za-z0-9_-])*\.?$"
_NAME_RE = re.compile(NAME_PATTERN)
DID_PATTERN = NAME_PATTERN.removesuffix("$") + ":" + NAME_PATTERN.removeprefix("^")
_SHOWN = 60  # how much of a refused name an error message repeats


class InvalidName(ValueError):
    """A scope, name or ``scope:name`` that breaks the grammar; the message says how."""


def _show(text: str) -> str:
    return repr(text) if len(text) <= _SHOWN else f"{text[:_SHOWN]!r}... ({len(text)} characters)"


def name_problem(text: object, what: str = "name", max_length: int = MAX_NAME,
                 min_length: int = MIN_NAME) -> str | None:
    """Why ``text`` is not a valid ``what``, or None when it is."""
    if not isinstance(text, str):
        return f"{what} must be a string, not {type(text).__name__}"
    if len(text) > max_length:
        return f"{what} {_show(text)} is longer than {max_length} characters"
    if len(text) < min_length:
        return f"{what} {_show(text)} is shorter than {min_length} characters"
    if _NAME_RE.fullmatch(text):
        return None
    if "/" in text or "\\" in text:
        return f"{what} {_show(text)} contains a path separator"
    if ".." in text:
        return f"{what} {_show(text)} contains '..'"
    if text[0] in "._-":
        return f"{what} {_show(text)} must start with a letter or a digit"
    return (f"{what} {_show(text)} may contain only letters, digits, '.', '_' and '-'")


def check_scope(scope: object) -> str:
    """``scope`` if it follows the grammar, else InvalidName."""
    if problem := name_problem(scope, "scope", MAX_SCOPE, 1):
        raise InvalidName(problem)
    return scope  # type: ignore[return-value]


def check_name(name: object, what: str = "name") -> str:
    """``name`` (of a dataset or a file) if it follows the grammar, else InvalidName."""
    if problem := name_problem(name, what):
        raise InvalidName(problem)
    return name  # type: ignore[return-value]


def is_valid_name(name: object) -> bool:
    return name_problem(name) is None


def split_did(did: str) -> tuple[str, str]:
    """``scope:name`` -> (scope, name), both checked against the grammar."""
    if not isinstance(did, str):
        raise InvalidName(f"a dataset name must be a string, not {type(did).__name__}")
    scope, sep, name = did.partition(":")
    if not sep or not scope or not name or ":" in name:
        raise InvalidName(f"dataset name {_show(did)} must look like scope:name")
    check_scope(scope)
    check_name(name)
    return scope, name
