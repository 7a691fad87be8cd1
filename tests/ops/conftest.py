"""Fixtures of the ops tests: a two-site world and the real app in process as admin."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from ops_helpers import app_client, two_sites

from dawms.catalog.db import Database
from dawms.ddm_bridge.local import LocalDDM


@pytest.fixture
def world(db: Database, tmp_path: Path) -> Path:
    """SITE_A (takes the work) and SITE_B (brokeroff; its disk serves reads)."""
    root = tmp_path / "storage"
    two_sites(db, root)
    return root


@pytest.fixture
def api(db: Database, ddm: LocalDDM, world: Path,
        bearer: Callable[..., dict[str, str]]) -> Iterator[TestClient]:
    """The real app over ``db`` as a production manager."""
    with app_client(db, ddm, bearer("admin", "ops")) as client:
        yield client
