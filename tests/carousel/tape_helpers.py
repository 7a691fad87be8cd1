"""Helpers for the carousel tests: a site file with a tape and its disk buffer."""

from __future__ import annotations

from pathlib import Path

from factories import site_config


def tape_site_config(root: Path, **tape: object) -> dict:
    """SITE_A (disk, queue) plus T1: disk buffer T1_DISK, tape T1_TAPE, queue T1_PROD."""
    cfg = site_config(root, ["SITE_A", "T1"])
    cfg["endpoint"].append({"name": "T1_TAPE", "site": "T1", "kind": "tape",
                            "url": f"file://{root / 'T1' / 'tape'}",
                            "staging_buffer": "T1_DISK", **tape})
    return cfg
