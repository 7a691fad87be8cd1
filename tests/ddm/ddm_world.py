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
from pathlib import Path

import fsspec
from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import DataRequest, DataRequestFile, File, Replica, StorageEndpoint
from dawms.catalog.states import ReplicaState
from dawms.ddm_bridge.abc import DDM
from dawms.ddm_bridge.local import LocalDDM, transfer
from dawms.ddm_bridge.local.staging import run_tape

ENDPOINTS = ("SITE_A_DISK", "SITE_B_DISK", "SITE_C_DISK")
TAPE, BUFFER = "SITE_C_TAPE", "SITE_C_DISK"  # a tape and its disk buffer (the carousel's)


def with_tape(cfg: dict, root: Path, **extra: object) -> dict:
    """The site file ``cfg`` plus SITE_C's tape ``SITE_C_TAPE`` staging to SITE_C_DISK."""
    cfg["endpoint"].append({"name": TAPE, "site": "SITE_C", "kind": "tape",
                            "url": f"file://{root / 'SITE_C' / 'tape'}",
                            "staging_buffer": BUFFER, **extra})
    return cfg


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

    @abstractmethod
    def recall(self, db: Database, *, at_least: int | None = None) -> None:
        """Let the DDM recall the files of every open ``stage`` request from tape onto
        its buffer the way it does (all of them; with ``at_least``, that many of each
        request at least but not all). Whether the request has ended by then is the
        backend's business: ``poll()`` and the reports it applied must say so."""

    @abstractmethod
    def staged_copy_held(self, db: Database, request_id: int) -> bool:
        """Whether the DDM still holds (pins) what stage request ``request_id`` staged."""


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

    def recall(self, db: Database, *, at_least: int | None = None) -> None:
        """The tape worker on the library's simulated clock, event by event."""
        assert isinstance(self.ddm, LocalDDM)
        lib, clock = self.ddm.library, self.ddm.library.clock
        for _ in range(10000):
            run_tape(db, self.ddm)
            with db.session() as s:
                counts = [n for (n,) in s.execute(
                    select(DataRequest.files_done).where(DataRequest.kind == "stage",
                                                         DataRequest.state == "requested"))]
            if not counts or (at_least is not None and min(counts) >= at_least):
                return
            nxt = lib.next_event()
            assert nxt is not None, "open recalls but the library has nothing to do"
            clock.set(max(nxt, clock.now()))  # type: ignore[attr-defined]
        raise AssertionError("the recalls did not end")

    def staged_copy_held(self, db: Database, request_id: int) -> bool:
        with db.session() as s:
            rows = s.execute(
                select(File.scope, File.name, StorageEndpoint)
                .join(DataRequestFile, DataRequestFile.file_id == File.id)
                .join(DataRequest, DataRequest.id == DataRequestFile.request_id)
                .join(Replica, (Replica.file_id == File.id)
                      & (Replica.endpoint_id == DataRequest.endpoint_id))
                .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
                .where(DataRequest.id == request_id,
                       Replica.state == ReplicaState.AVAILABLE)).all()
        return any(self.read(ep, scope, name) is not None for scope, name, ep in rows)


@dataclass
class Backend:
    """A DDM under test, its world, its catalog, the daemons it must declare, and the
    scope its test names its data in (a DDM that outlives the test, as a Rucio server
    does, gets a fresh scope per test: names a test registers stay registered)."""

    ddm: DDM
    world: World
    db: Database
    daemons: frozenset[str]
    scope: str = "t"

    def did(self, name: str) -> str:
        return f"{self.scope}:{name}"

    def endpoint(self, session, name: str) -> StorageEndpoint:  # type: ignore[no-untyped-def]
        return session.scalar(select(StorageEndpoint).where(StorageEndpoint.name == name))
