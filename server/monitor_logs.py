"""A job's log for the monitor: the tail of each member inline, the tarball as a download.

The log tarball is an ordinary registered file (the pilot's ``pilot/log.py``):
its replica's URL comes from the DDM's ``pfn()``, so this works for the local DDM
and for Rucio alike. Everything in it was written by the payload, so nothing is
trusted: the tarball is read only up to ``MAX_TARBALL_BYTES``, only regular
members are read, each only its last ``TAIL_BYTES``, at most ``MAX_MEMBERS`` of
them, decoded with replacement; the page escapes the text.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
from sqlalchemy import select
from sqlalchemy.orm import Session

from dawms.catalog.models import File, JobFile, Replica, StorageEndpoint

from .envelope import NotFound

TAIL_BYTES = 16 * 1024
MAX_MEMBERS = 16
MAX_TARBALL_BYTES = 64 * 1024 * 1024
CHUNK = 256 * 1024


@dataclass(frozen=True)
class LogFile:
    lfn: str
    size: int
    url: str


def find_log(s: Session, ddm: Any, job_id: int) -> LogFile:
    """The job's registered log tarball and a URL of an available replica of it."""
    jf = s.scalar(select(JobFile).where(JobFile.job_id == job_id, JobFile.type == "log"))
    if jf is None:
        raise NotFound(f"job {job_id} has no log file")
    row = s.execute(select(File, StorageEndpoint)
                    .join(Replica, Replica.file_id == File.id)
                    .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
                    .where(File.scope == jf.scope, File.name == jf.lfn,
                           Replica.state == "available")
                    .order_by(StorageEndpoint.kind, StorageEndpoint.name)).first()
    if row is None:
        raise NotFound(f"the log of job {job_id} ({jf.lfn}) is not registered on any disk")
    file, endpoint = row
    return LogFile(file.name, file.size, ddm.pfn(endpoint, file.scope, file.name))


def tail(log: LogFile) -> dict[str, Any]:
    """The last ``TAIL_BYTES`` of each regular member (``{"members": {name: text}}``),
    or why it could not be read (``{"error": ...}``)."""
    if log.size > MAX_TARBALL_BYTES:
        return {"members": {}, "error": f"the log is {log.size} bytes; download it"}
    members: dict[str, str] = {}
    try:
        with fsspec.open(log.url, "rb") as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
            for info in tar:
                if len(members) >= MAX_MEMBERS:
                    break
                if not info.isreg():
                    continue
                handle = tar.extractfile(info)
                if handle is None:
                    continue
                skip = max(0, info.size - TAIL_BYTES)
                while skip > 0:  # a stream: read forward past the head, never keep it
                    skip -= len(handle.read(min(skip, CHUNK))) or skip
                members[info.name[-200:]] = handle.read(TAIL_BYTES).decode("utf-8", "replace")
    except (OSError, tarfile.TarError, EOFError) as exc:
        return {"members": members, "error": f"the log could not be read: {exc}"[:500]}
    return {"members": members, "error": None}


def stream(log: LogFile) -> Iterator[bytes]:
    """The tarball's bytes, in chunks."""
    with fsspec.open(log.url, "rb") as raw:
        while chunk := raw.read(CHUNK):
            yield chunk
