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

import pytest
from ddm_world import Backend, LocalWorld

from dawms.catalog.db import Database
from dawms.ddm_bridge.local import LocalDDM


def make_local(request: pytest.FixtureRequest, db: Database) -> Backend:
    ddm = LocalDDM()
    return Backend(ddm, LocalWorld(ddm), db, frozenset({"transfer"}))


@dataclass(frozen=True)
class Entry:
    make: Callable[[pytest.FixtureRequest, Database], Backend]
    marks: tuple[pytest.MarkDecorator, ...] = ()


BACKENDS: dict[str, Entry] = {
    "local": Entry(make_local),
}


@pytest.fixture(params=[pytest.param(name, marks=entry.marks, id=name)
                        for name, entry in BACKENDS.items()])
def ddm_backend(request: pytest.FixtureRequest, db: Database, sites: list[str]) -> Backend:
    return BACKENDS[request.param].make(request, db)

