"""Deterministic file paths on storage endpoints, and keeping paths under their root.

``lfn2pfn`` is Rucio's ``hash`` algorithm:
``<prefix>/<scope>/<md5[0:2]>/<md5[2:4]>/<name>`` where md5 is of ``scope:name``:
it spreads files over directories, and anyone who knows the endpoint and the
name can find the file without asking the catalog.

Names come from outside (task specs, uploads, DDMs, job specs), so every path
built from one is checked to stay under its root: ``confine_url`` for URLs
(``file://`` and every other scheme: same scheme and host, the path normalised,
then required to lie under the prefix's path) and ``confine_path`` for local
paths (symbolic links resolved first, so a link cannot point out of the root).
Refusals raise ``PathEscape`` whose text names only the path asked for and the
root, never anything found outside it (no sizes, no existence).

The catalog owns the full name grammar (``catalog/names.py``); this module,
which imports nothing of ours, checks what makes a name safe as one path
component, and confinement catches anything else.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from pathlib import Path
from urllib.parse import unquote, urlsplit

_MAX_COMPONENT = 255  # NAME_MAX of common file systems


class PathEscape(ValueError):
    """A path or URL would leave the root it must stay under."""


def check_component(part: str, what: str = "name") -> str:
    """``part`` if it is usable as exactly one path component, else PathEscape."""
    if not isinstance(part, str) or not part or part in (".", "..") or len(part) > _MAX_COMPONENT:
        raise PathEscape(f"{what} {str(part)[:60]!r} is not a plain file name")
    if any(c in part for c in "/\\\0%?#") or part.startswith("-"):
        raise PathEscape(f"{what} {part[:60]!r} is not a plain file name")
    return part


def _split(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise PathEscape(f"{url[:200]!r}: a storage URL may not carry a query or a fragment")
    path = unquote(parts.path)  # what a server that decodes %2e%2e would see
    if "\0" in path or "\\" in path:
        raise PathEscape(f"{url[:200]!r}: the path contains a NUL or a backslash")
    return parts.scheme.lower(), parts.netloc.lower(), path


def within_url(prefix: str, url: str) -> bool:
    """Whether ``url``, normalised, lies strictly under the endpoint prefix ``prefix``."""
    try:
        confine_url(prefix, url)
    except PathEscape:
        return False
    return True


def confine_url(prefix: str, url: str) -> str:
    """``url`` if it lies strictly under ``prefix`` (same scheme and host, normalised path
    under the prefix's path), else PathEscape. Works for ``file://`` and other schemes."""
    scheme, host, path = _split(url)
    pscheme, phost, ppath = _split(prefix)
    if not scheme or (scheme, host) != (pscheme, phost):
        raise PathEscape(f"{url[:200]!r} is not under {prefix!r}")
    # normpath keeps a leading '//' (XRootD's absolute paths: root://host//data/...)
    root = posixpath.normpath(ppath or "/").rstrip("/")
    target = posixpath.normpath(path or "/")
    if not target.startswith(root + "/") or target == root + "/":
        raise PathEscape(f"{url[:200]!r} is not under {prefix!r}")
    return url


def confine_path(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path:
    """The real path of ``path`` if it lies strictly under ``root`` (links resolved), else
    PathEscape. ``path`` need not exist; a relative one is taken relative to ``root``."""
    real_root = Path(os.path.realpath(root))
    candidate = Path(path) if os.path.isabs(path) else Path(root) / path
    real = Path(os.path.realpath(candidate))
    if real == real_root or real_root not in real.parents:
        raise PathEscape(f"{os.fspath(path)[:200]!r} is not inside {os.fspath(root)!r}")
    return real


def lfn2pfn(url_prefix: str, scope: str, name: str) -> str:
    """The URL of ``scope:name`` under ``url_prefix``; PathEscape if a name could not stay
    under it (a separator, ``..``, a leading ``-``...)."""
    check_component(scope, "scope")
    check_component(name)
    digest = hashlib.md5(f"{scope}:{name}".encode()).hexdigest()
    url = f"{url_prefix.rstrip('/')}/{scope}/{digest[0:2]}/{digest[2:4]}/{name}"
    return confine_url(url_prefix, url)
