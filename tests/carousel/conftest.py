"""Fixtures for the carousel: a site with a tape, its disk buffer and a queue; a local
DDM whose tape library runs on a simulated clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from tape_helpers import tape_site_config

from dawms.catalog.db import Database
from dawms.catalog.site_config import sync, validate
from dawms.ddm_bridge.local import LocalDDM
from dawms.ddm_bridge.local.tape import SimClock, TapeConfig, TapeLibrary


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def tape_ddm(clock: SimClock) -> LocalDDM:
    ddm = LocalDDM()
    ddm.library = TapeLibrary(TapeConfig(drives=2, mount_s=10, per_file_s=1, seek_s=2,
                                         read_bytes_s=None, cartridge_bytes=4 * 2048),
                              clock=clock)
    return ddm


@pytest.fixture
def tape_sites(db: Database, tmp_path: Path) -> dict:
    cfg = tape_site_config(tmp_path / "storage", staging_max_files=8, staging_max_percent=50)
    with db.session() as s:
        sync(s, validate(cfg), actor="test", source="fixture")
    return cfg
