"""Which mover handles a URL: a registry of URL scheme -> mover class.

Backends are imported only when first used, so a pilot that reads ``file://``
never imports XRootD or S3 libraries, and a missing optional dependency turns
into one clear error naming the pip extra (e.g. ``root`` ->
``pip install 'dawms[xrootd]'``). Third-party movers register through the
``dawms.movers`` entry-point group (name = scheme, value = ``module:Class``).
Adding a built-in backend is one module plus one line in ``_BUILTIN``, e.g.
``"root": Entry("dawms.storage.movers.xrootd:XRootDMover", extra="xrootd")``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from dawms.storage.movers.base import (
    ChecksumMismatch,
    FsspecMover,
    Mover,
    MoverError,
    SizeMismatch,
    Transfer,
)
from dawms.storage.plugins import Entry, PluginRegistry

__all__ = [
    "ChecksumMismatch", "FsspecMover", "Mover", "MoverError", "SizeMismatch", "Transfer",
    "available_schemes", "get_mover", "get_mover_class", "register_mover", "scheme_of",
]

ENTRY_POINT_GROUP = "dawms.movers"

_BUILTIN = {
    "file": Entry("dawms.storage.movers.file:FileMover"),
}
registry: PluginRegistry[Mover] = PluginRegistry(
    "mover for URL scheme", ENTRY_POINT_GROUP, Mover, _BUILTIN, error=MoverError)


def scheme_of(url: str) -> str:
    """The URL's scheme, lowercase; a bare path counts as ``file``."""
    return urlsplit(url).scheme.lower() or "file"


def register_mover(
    scheme: str, target: str | type[Mover], *, extra: str | None = None, clobber: bool = False
) -> None:
    """Register ``target`` (a class or ``"module:Class"``) for ``scheme``."""
    registry.register(scheme, target, extra=extra, clobber=clobber)


def available_schemes() -> list[str]:
    """Every scheme with a registered mover (built-in or from entry points)."""
    return registry.names()


def get_mover_class(scheme: str) -> type[Mover]:
    """The mover class for ``scheme``; ``MoverError`` if none or not installed."""
    return registry.load(scheme)


def get_mover(url: str, **storage_options: Any) -> Mover:
    """A mover instance for ``url``'s scheme."""
    return get_mover_class(scheme_of(url))(**storage_options)
