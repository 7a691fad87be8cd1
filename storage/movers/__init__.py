"""Which mover handles a URL: a registry of URL scheme -> mover class.

Backends are imported only when first used, so a pilot that reads ``file://``
never imports XRootD or S3 libraries, and a missing optional dependency turns
into one clear error naming the pip extra (e.g. ``root`` ->
``pip install 'dawms[xrootd]'``). Third-party movers register through the
``dawms.movers`` entry-point group (name = scheme, value = ``module:Class``).
Adding a built-in backend is one module plus one line in ``_BUILTIN``.

Storage options (endpoint URL, credentials) are per storage endpoint: the site
file's endpoint may carry an ``options`` table, which travels with the job to
the pilot; ``storage_options_for`` picks the table of the endpoint whose URL
prefix matches a URL, and ``resolve_options`` replaces ``{env = "NAME"}`` and
``{file = "PATH"}`` values with the pilot's environment variable or the
file's content, so secrets stay at the site and never sit in the catalog.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from dawms.storage.movers.base import (
    ChecksumMismatch,
    FsspecMover,
    Mover,
    MoverError,
    MoverSettings,
    SizeMismatch,
    Transfer,
    TransferTimeout,
)
from dawms.storage.plugins import Entry, PluginRegistry

__all__ = [
    "ChecksumMismatch", "FsspecMover", "Mover", "MoverError", "MoverSettings", "SizeMismatch",
    "Transfer", "TransferTimeout", "available_schemes", "get_mover", "get_mover_class",
    "register_mover", "resolve_options", "scheme_of", "storage_options_for",
]

MAX_SECRET_FILE = 64 * 1024

ENTRY_POINT_GROUP = "dawms.movers"

_WEBDAV = Entry("dawms.storage.movers.webdav:WebDAVMover", extra="davs")
_BUILTIN = {
    "file": Entry("dawms.storage.movers.file:FileMover"),
    "root": Entry("dawms.storage.movers.xrootd:XRootDMover", extra="xrootd"),
    "s3": Entry("dawms.storage.movers.s3:S3Mover", extra="s3"),
    "gs": Entry("dawms.storage.movers.gcs:GCSMover", extra="gcs"),
    "davs": _WEBDAV, "https": _WEBDAV, "dav": _WEBDAV, "http": _WEBDAV,
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


def get_mover(url: str, *, settings: MoverSettings | None = None,
              **storage_options: Any) -> Mover:
    """A mover instance for ``url``'s scheme, with the endpoint's storage options."""
    return get_mover_class(scheme_of(url))(settings=settings, **resolve_options(storage_options))


def storage_options_for(url: str, endpoints: Mapping[str, Mapping[str, Any]] | None
                        ) -> dict[str, Any]:
    """The options of the endpoint (``{url_prefix: options}``) whose prefix is the
    longest that ``url`` starts with (at a ``/`` boundary); ``{}`` if none."""
    best, found = -1, {}
    for prefix, options in (endpoints or {}).items():
        base = prefix.rstrip("/")
        if (url == base or url.startswith(base + "/")) and len(base) > best:
            best, found = len(base), dict(options)
    return found


def resolve_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Replace ``{"env": NAME}`` by ``$NAME`` and ``{"file": PATH}`` by the file's
    content (stripped, at most 64 KiB), at any depth; ``MoverError`` if missing."""
    def resolve(key: str, value: Any) -> Any:
        if isinstance(value, Mapping):
            if set(value) == {"env"}:
                name = str(value["env"])
                if name not in os.environ:
                    raise MoverError(f"storage option {key!r} wants ${name}, which is not set")
                return os.environ[name]
            if set(value) == {"file"}:
                path = str(value["file"])
                try:
                    with open(path, "rb") as f:
                        data = f.read(MAX_SECRET_FILE + 1)
                except OSError as exc:
                    raise MoverError(f"storage option {key!r}: cannot read {path}: "
                                     f"{exc.strerror}") from exc
                if len(data) > MAX_SECRET_FILE:
                    raise MoverError(f"storage option {key!r}: {path} is over 64 KiB")
                return data.decode().strip()
            return {k: resolve(f"{key}.{k}", v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(key, v) for v in value]
        return value
    return {k: resolve(k, v) for k, v in options.items()}
