"""The DDM backends the conformance suite runs against: one registry entry each.

An entry makes a ``ddm_world.Backend`` over the catalog of the test (the ``db``
fixture, SQLite and PostgreSQL, with the three sites of ``sites``). A backend that
needs an outside service brings its marker, e.g. Rucio::

    "rucio": Entry(make_rucio, marks=(pytest.mark.rucio,)),

where ``make_rucio(request, db)`` returns ``Backend(RucioDDM(...), RucioWorld(...),
db, frozenset({...its daemons}))`` and ``RucioWorld.complete`` runs Rucio's judge and
conveyor once (``fail``: replicas set ``U`` so the rule gets STUCK).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from ddm_world import Backend, LocalWorld, with_tape
from rucio_world import make_rucio

from dawms.catalog.db import Database
from dawms.catalog.site_config import sync, validate
from dawms.ddm_bridge.local import LocalDDM
from dawms.ddm_bridge.local.tape import SimClock, TapeConfig, TapeLibrary
from factories import site_config


def make_local(request: pytest.FixtureRequest, db: Database) -> Backend:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    cfg = with_tape(site_config(tmp_path / "storage", ["SITE_A", "SITE_B", "SITE_C"]),
                    tmp_path / "storage")
    with db.session() as s:  # the `sites` fixture's, plus SITE_C's tape
        sync(s, validate(cfg), actor="test", source="ddm conformance (local)")
    ddm = LocalDDM()
    # one drive, 10 s mounts and 1 s a file on a simulated clock: recalls end one by one
    ddm.library = TapeLibrary(TapeConfig(drives=1, mount_s=10, per_file_s=1, seek_s=0,
                                         read_bytes_s=None), clock=SimClock())
    return Backend(ddm, LocalWorld(ddm), db, frozenset({"transfer", "tape"}))


@dataclass(frozen=True)
class Entry:
    make: Callable[[pytest.FixtureRequest, Database], Backend]
    marks: tuple[pytest.MarkDecorator, ...] = ()


BACKENDS: dict[str, Entry] = {
    "local": Entry(make_local),
    "rucio": Entry(make_rucio, marks=(pytest.mark.rucio,)),
}


@pytest.fixture(params=[pytest.param(name, marks=entry.marks, id=name)
                        for name, entry in BACKENDS.items()])
def ddm_backend(request: pytest.FixtureRequest, db: Database, sites: list[str]) -> Backend:
    return BACKENDS[request.param].make(request, db)

