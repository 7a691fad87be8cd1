"""The DDM interface: everything the scheduler may ask of a data management system.

One interface for every backend (the embedded ``local`` DDM, Rucio), one
conformance suite (``tests/ddm/``) that proves each. Methods take the caller's
session so catalog rows (datasets, files, replicas, data requests) change in the
caller's transaction; in Rucio mode those rows are a cache of what Rucio says.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from dawms.catalog.models import DataRequest, File, StorageEndpoint

if TYPE_CHECKING:
    from dawms.catalog.db import Database


class DDMError(Exception):
    """The DDM refused or failed a request."""


class UnknownDataset(DDMError):
    """No such dataset in the DDM."""


class RegistrationError(DDMError):
    """An output could not be registered (missing, wrong size, unknown endpoint)."""


@dataclass(frozen=True)
class FileInfo:
    """A file as the DDM knows it: identity plus the checksum that proves its bytes."""

    scope: str
    name: str
    size: int
    adler32: str
    guid: str = ""
    events: int | None = None


@dataclass(frozen=True)
class BadReplica:
    """One replica the catalog just marked ``bad``: which file, at which endpoint."""

    replica_id: int
    file_id: int
    scope: str
    name: str
    endpoint: StorageEndpoint


class Outcome(StrEnum):
    """How a data request ended, as a backend reports it."""

    DONE = "done"  # every file is on the destination
    FAILED = "failed"  # the DDM gave up (a STUCK rule past its retries, no intact source)
    CANCELLED = "cancelled"  # the request was withdrawn (rule deleted)


@dataclass(frozen=True)
class RequestReport:
    """What a backend found out about one data request; the core applies it.

    Backends never write catalog state themselves (as Rucio's transfertools return
    status reports to the conveyor): ``poll()`` returns these and
    ``ddm_bridge.events.apply_reports`` moves the requests through ``transition()``
    once each, deduplicated by ``dedup_key``. A request is named by ``request_id``
    or by the backend's ``external_id`` (a Rucio rule id).
    """

    outcome: Outcome
    dedup_key: str
    request_id: int | None = None
    external_id: str | None = None
    error: str = ""


@dataclass(frozen=True)
class Subscription:
    """A standing order (a task's ``[subscription]``): new datasets of ``scope`` whose
    names match ``pattern`` (``*`` wildcards) get a copy on each of ``endpoints``,
    through rules of ``activity`` that live ``lifetime_s`` (None: for ever)."""

    name: str
    scope: str
    pattern: str
    endpoints: tuple[StorageEndpoint, ...]
    activity: str = "Production Input"
    lifetime_s: int | None = None
    comment: str = ""


class Ran(int):
    """What one ``run_once`` of a daemon did: the count it reports (jobs brokered,
    files copied...) and ``full``, true when it took a whole bunch and moved some of
    it on, so more may be waiting: the runner calls it again at once and sleeps only
    when a run was not full (Rucio's ``run_daemon``). It is an ``int`` so a caller
    that wants only the count uses it as one; a plain ``int`` counts as not full."""

    full: bool

    def __new__(cls, count: int, *, full: bool) -> Ran:
        self = super().__new__(cls, count)
        self.full = full
        return self

    def __repr__(self) -> str:
        return f"Ran({int(self)}, full={self.full})"


@dataclass(frozen=True)
class DaemonSpec:
    """A daemon a backend needs beside the scheduler's own (the local DDM's transfer
    worker). ``run_once(db)`` returns a ``Ran``: while it is ``full`` the runner calls
    it again at once. ``wake_on`` lists the ``(entity, to_state)`` of committed
    changes that should wake it."""

    name: str
    run_once: Callable[[Database], Ran]
    interval_s: float
    wake_on: tuple[tuple[str, str], ...] = ()


class DDM(ABC):
    """A data management system as dawms uses it."""

    name: str

    @abstractmethod
    def list_files(self, session: Session, did: str) -> list[File]:
        """The files of dataset ``did`` in order (cached in the catalog); UnknownDataset."""

    @abstractmethod
    def upload(self, session: Session, did: str, paths: Iterable[str | Path],
               endpoint: StorageEndpoint) -> list[File]:
        """Copy local files onto ``endpoint``, checksummed, and register them in ``did``
        (``dawms data upload``). A name already registered with other bytes is refused
        and nothing is written; the same bytes again change nothing."""

    @abstractmethod
    def request_replication(self, session: Session, files: list[File],
                            endpoint: StorageEndpoint, *, name: str,
                            activity: str = "Production Input") -> DataRequest:
        """Ask for ``files`` to be made available on ``endpoint`` (one dispatch block)."""

    @abstractmethod
    def poll(self, session: Session, now: datetime) -> list[RequestReport]:
        """Look at outstanding requests; return a report for each that ended. Writes
        no request state: the caller applies the reports (``events.apply_reports``)."""

    @abstractmethod
    def register_outputs(self, session: Session, did: str, files: list[FileInfo],
                         endpoint: StorageEndpoint) -> list[File]:
        """Record outputs written to ``endpoint`` in dataset ``did`` (created if new)."""

    @abstractmethod
    def pfn(self, endpoint: StorageEndpoint, scope: str, name: str) -> str:
        """The URL of file ``scope:name`` on ``endpoint``."""

    def stored_checksums(self, endpoint: StorageEndpoint,
                         files: list[FileInfo]) -> dict[str, tuple[int, str]]:
        """(size, adler32) of each of ``files`` as the storage holds it, by name, for those
        the backend can tell (read from the bytes or asked of the storage); a file missing
        from the answer is registered on the pilot's word. Called with no transaction
        open (it may read whole files): output registration compares the pilot's report
        with it and refuses a mismatch. The default can tell nothing."""
        return {}

    @abstractmethod
    def declare_bad(self, session: Session, bad: list[BadReplica], reason: str) -> list[int]:
        """Tell the DDM that the replicas ``bad`` (already ``bad`` in the catalog, through
        ``transition()``) hold damaged bytes, so it repairs or forgets them (local: a new
        copy from an intact source; Rucio: ``declare_bad_file_replicas``). Returns the
        catalog ids of the files a repair was asked for. The DDM being unreachable must
        not undo the catalog's marking: a backend logs it and returns."""

    def subscribe(self, session: Session, sub: Subscription) -> str:
        """Create the standing order ``sub`` in the DDM; returns the DDM's id for it.
        A backend without subscriptions refuses (``DDMError``) and changes nothing."""
        raise DDMError(f"the {self.name} DDM has no subscriptions: a task's [subscription] "
                       "needs the Rucio DDM (DAWMS_DDM=rucio)")

    def daemons(self) -> list[DaemonSpec]:
        """The daemons this backend needs; the runner starts exactly these."""
        return []

    # ------------------------------------------------------------- tape (the carousel)
    # A backend that can recall from tape overrides these; the carousel calls nothing
    # else. Rucio: a rule of the files to the disk buffer with the tape as source and
    # activity ``Staging``, its lifetime the pin, deleting it the release.
    def request_staging(self, session: Session, files: list[File], source: StorageEndpoint,
                        destination: StorageEndpoint, *, name: str,
                        lifetime_s: int) -> DataRequest:
        """Recall ``files`` from tape ``source`` onto disk ``destination``, kept there for
        ``lifetime_s`` unless extended (one bunch of the carousel). A ``stage`` request
        that ends through ``poll()`` reports like any other."""
        raise DDMError(f"the {self.name} DDM cannot stage from tape")

    def tape_locality(self, session: Session, source: StorageEndpoint,
                      file_ids: list[int]) -> dict[int, tuple[str, int]]:
        """``file id -> (cartridge, position)`` on tape ``source`` where the backend knows
        it, so the carousel can ask for the files of one cartridge together; files left
        out are released in dataset order."""
        return {}

    def extend_staging(self, session: Session, requests: list[DataRequest],  # noqa: B027
                       lifetime_s: int) -> None:
        """Keep what ``requests`` staged for ``lifetime_s`` more (Rucio: the rules'
        lifetime). Backends whose copies stay until released need do nothing."""

    def release_staging(self, session: Session, requests: list[DataRequest],
                        keep: set[int]) -> int:
        """Let go of what ``requests`` staged, except the files of ``keep`` (still needed);
        returns how many copies were released."""
        raise DDMError(f"the {self.name} DDM cannot stage from tape")
