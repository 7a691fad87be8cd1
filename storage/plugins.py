"""A small registry of lazily imported plug-in classes (movers, pilot factories).

fsspec's registry is the model: built-in entries are ``"module:Class"``
strings imported on first use, so a backend's dependencies are only needed by
those who use it; a missing dependency becomes one error that names the pip
extra to install. Third parties add entries through an entry-point group.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    target: str  # "package.module:ClassName"
    extra: str | None = None  # the dawms pip extra that brings the backend's dependencies


class PluginRegistry(Generic[T]):
    """Name -> class of one plug-in family, e.g. URL scheme -> mover."""

    def __init__(
        self, kind: str, group: str, base: type[T], builtin: dict[str, Entry],
        error: type[Exception] = LookupError,
    ) -> None:
        self.kind = kind  # used in messages: "mover for URL scheme"
        self.group = group
        self.base = base
        self.error = error
        self._entries = dict(builtin)
        self._loaded: dict[str, type[T]] = {}
        self._entry_points_read = False

    def register(
        self, name: str, target: str | type[T], *, extra: str | None = None,
        clobber: bool = False,
    ) -> None:
        """Register ``target`` (a class or ``"module:Class"``) under ``name``."""
        name = name.lower()
        if name in self._entries and not clobber:
            raise ValueError(f"a {self.kind} {name!r} is already registered: "
                             f"{self._entries[name].target}")
        if isinstance(target, type):
            self._loaded[name] = target
            target = f"{target.__module__}:{target.__qualname__}"
        else:
            self._loaded.pop(name, None)
        self._entries[name] = Entry(target, extra)

    def copy(self) -> PluginRegistry[T]:
        """An independent registry with the same entries (for tests and sandboxes)."""
        twin = PluginRegistry(self.kind, self.group, self.base, dict(self._entries), self.error)
        twin._loaded = dict(self._loaded)
        twin._entry_points_read = self._entry_points_read
        return twin

    def names(self) -> list[str]:
        self._read_entry_points()
        return sorted(self._entries)

    def load(self, name: str) -> type[T]:
        """The class registered under ``name``, importing its module on first use."""
        name = name.lower()
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._entries:
            self._read_entry_points()
        entry = self._entries.get(name)
        if entry is None:
            raise self.error(
                f"no {self.kind} {name!r}; known: {', '.join(self.names()) or 'none'} "
                f"(third parties register in the {self.group!r} entry-point group)")
        module_name, _, class_name = entry.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = (f"pip install 'dawms[{entry.extra}]'" if entry.extra
                    else f"install the package that provides {module_name}")
            raise self.error(f"the {self.kind} {name!r} ({entry.target}) cannot be imported: "
                             f"{exc}; {hint}") from exc
        cls = getattr(module, class_name, None)
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise self.error(f"{entry.target}, registered as {self.kind} {name!r}, is not a "
                             f"{self.base.__name__}")
        self._loaded[name] = cls
        return cls

    def _read_entry_points(self) -> None:
        if self._entry_points_read:
            return
        self._entry_points_read = True
        for ep in entry_points(group=self.group):
            self._entries.setdefault(ep.name.lower(), Entry(ep.value))
