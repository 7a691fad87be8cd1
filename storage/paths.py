"""Deterministic file paths on storage endpoints (Rucio's ``hash`` lfn2pfn).

``<prefix>/<scope>/<md5[0:2]>/<md5[2:4]>/<name>`` where md5 is of ``scope:name``:
spreads files over directories, and anyone who knows the endpoint and the name
can find the file without asking the catalog.
"""

from __future__ import annotations

import hashlib


def lfn2pfn(url_prefix: str, scope: str, name: str) -> str:
    digest = hashlib.md5(f"{scope}:{name}".encode()).hexdigest()
    return f"{url_prefix.rstrip('/')}/{scope}/{digest[0:2]}/{digest[2:4]}/{name}"
