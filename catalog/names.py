"""Names of data: ``scope:name`` dataset identifiers (Rucio's DIDs).

The catalog owns the grammar because every layer stores and compares these
names; the bridge, the scheduler and the CLI only split them.
"""

from __future__ import annotations


def split_did(did: str) -> tuple[str, str]:
    """``scope:name`` -> (scope, name), with a clear error for anything else."""
    scope, sep, name = did.partition(":")
    if not sep or not scope or not name or ":" in name:
        raise ValueError(f"dataset name {did!r} must look like scope:name")
    return scope, name
