"""What the DDM conformance suite needs of a backend besides the interface itself.

A ``Backend`` is a DDM under test over a catalog that holds the three disk endpoints
``SITE_A_DISK``, ``SITE_B_DISK`` and ``SITE_C_DISK`` (known to that DDM too), plus
its ``World``: how a test plays the outside world of that DDM, putting bytes on an
endpoint as a pilot's stage-out does, and letting the DDM carry out replications
the way it really does (the local DDM: its transfer worker; Rucio: its daemons).
``tests/ddm/conftest.py`` lists the backends; adding one is one entry there.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass

import fsspec
from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import DataRequestFile, File, Replica, StorageEndpoint
from dawms.catalog.states import ReplicaState
from dawms.ddm_bridge.abc import DDM
from dawms.ddm_bridge.local import transfer

ENDPOINTS = ("SITE_A_DISK", "SITE_B_DISK", "SITE_C_DISK")


class World(ABC):
    """The outside world of one DDM backend, as the tests drive it."""

    def __init__(self, ddm: DDM) -> None:
        self.ddm = ddm

    def place(self, endpoint: StorageEndpoint, scope: str, name: str, data: bytes) -> str:
        """Write ``data`` where ``pfn()`` says ``scope:name`` lives on ``endpoint``, with
        nothing registered (as a pilot's stage-out does); returns the URL."""
        url = self.ddm.pfn(endpoint, scope, name)
        fs, path = fsspec.core.url_to_fs(url)
        fs.makedirs(fs._parent(path), exist_ok=True)
        with fs.open(path, "wb") as out:
            out.write(data)
        return url

    def read(self, endpoint: StorageEndpoint, scope: str, name: str) -> bytes | None:
        """The bytes of ``scope:name`` on ``endpoint`` (None if there are none)."""
        fs, path = fsspec.core.url_to_fs(self.ddm.pfn(endpoint, scope, name))
        if not fs.exists(path):
            return None
        with fs.open(path, "rb") as f:
            return f.read()

    @abstractmethod
    def complete(self, db: Database, *, fail: Collection[int] = ()) -> None:
        """Let the DDM carry out every open replication request the way it does,
        without telling dawms (no callback, no report applied): afterwards ``poll()``
        must report each one. The requests (ids) in ``fail`` must end failed."""


class LocalWorld(World):
    """The local DDM: replications are carried out by its transfer worker; a request
    fails when every source of its files is corrupted (same size, other bytes)."""

    def complete(self, db: Database, *, fail: Collection[int] = ()) -> None:
        with db.session() as s:
            sources = s.execute(
                select(File.scope, File.name, StorageEndpoint)
                .join(DataRequestFile, DataRequestFile.file_id == File.id)
                .join(Replica, Replica.file_id == File.id)
                .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
                .where(DataRequestFile.request_id.in_(list(fail)),
                       Replica.state == ReplicaState.AVAILABLE)).all()
            for scope, name, endpoint in sources:
                data = self.read(endpoint, scope, name)
                assert data, f"{scope}:{name} has no bytes on {endpoint.name}"
                self.place(endpoint, scope, name, bytes(b ^ 0xFF for b in data))
        while transfer.carry_out(db)[0]:  # the worker's work, without its reports
            pass


@dataclass
class Backend:
    """A DDM under test, its world, its catalog, and the daemons it must declare."""

    ddm: DDM
    world: World
    db: Database
    daemons: frozenset[str]

    def endpoint(self, session, name: str) -> StorageEndpoint:  # type: ignore[no-untyped-def]
        return session.scalar(select(StorageEndpoint).where(StorageEndpoint.name == name))
