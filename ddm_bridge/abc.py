"""The DDM interface: everything the scheduler may ask of a data management system.

One interface for every backend (the embedded ``local`` DDM, Rucio), one
conformance suite (``tests/ddm/``) that proves each. Methods take the caller's
session so catalog rows (datasets, files, replicas, data requests) change in the
caller's transaction; in Rucio mode those rows are a cache of what Rucio says.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from dawms.catalog.models import DataRequest, File, StorageEndpoint


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


def split_did(did: str) -> tuple[str, str]:
    """``scope:name`` -> (scope, name), with a clear error for anything else."""
    scope, sep, name = did.partition(":")
    if not sep or not scope or not name or ":" in name:
        raise ValueError(f"dataset name {did!r} must look like scope:name")
    return scope, name


class DDM(ABC):
    """A data management system as dawms uses it."""

    name: str

    @abstractmethod
    def list_files(self, session: Session, did: str) -> list[File]:
        """The files of dataset ``did`` in order (cached in the catalog); UnknownDataset."""

    @abstractmethod
    def request_replication(self, session: Session, files: list[File],
                            endpoint: StorageEndpoint, *, name: str,
                            activity: str = "Production Input") -> DataRequest:
        """Ask for ``files`` to be made available on ``endpoint`` (one dispatch block)."""

    @abstractmethod
    def poll(self, session: Session, now: datetime) -> list[int]:
        """Refresh outstanding requests from the DDM; returns ids of requests now ended."""

    @abstractmethod
    def register_outputs(self, session: Session, did: str, files: list[FileInfo],
                         endpoint: StorageEndpoint) -> list[File]:
        """Record outputs written to ``endpoint`` in dataset ``did`` (created if new)."""

    @abstractmethod
    def pfn(self, endpoint: StorageEndpoint, scope: str, name: str) -> str:
        """The URL of file ``scope:name`` on ``endpoint``."""
