"""Stage-in: bring every input of a job into its work dir, verified.

Each input lists replica URLs ranked by the server. The queue's mover
preferences (``spec.movers.read``) say which schemes this site may read
and in which order to fall back; within a scheme the server's order is kept.
A replica that fails (unreachable, wrong size, wrong adler32) is skipped for
the next one; when none works, ``StageInError`` lists every attempt.
Every replica given up is kept as a ``BadReplicaReport`` (checksum, size, missing,
or unreadable) on the staged file or on the error, so the job's report tells the
server which copies are damaged.

Nothing is fetched from outside the job's storage endpoints: a replica URL must
lie under the URL prefix of one of the endpoints the spec lists
(``spec.endpoints``, name -> prefix), and the local copy must land inside the
work dir (a plain file name, checked after resolving links).

A queue with direct access (``spec.direct_access``, from the site file) reads
inputs in place, as PanDA's direct I/O: ``direct_inputs`` picks for each input
the first allowed replica whose size on the storage matches the catalog's (the
same ranking, the same endpoint confinement), and the payload gets its URL
instead of a local copy. Nothing is copied, so nothing is checksummed here: the
bytes are read by the payload itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dawms.storage.movers import (
    ChecksumMismatch,
    MoverError,
    SizeMismatch,
    get_mover,
    scheme_of,
)
from dawms.storage.paths import PathEscape, check_component, confine_path, within_url
from dawms.wire import BadReplicaReason, BadReplicaReport, InputFile, JobSpec
from dawms.wire.job import URL_MAX

log = logging.getLogger(__name__)


class StageInError(Exception):
    """No replica of an input could be copied and verified; ``bad`` lists the replicas
    given up on the way (of this input and of the inputs staged before it)."""

    def __init__(self, message: str, bad: Sequence[BadReplicaReport] = ()) -> None:
        super().__init__(message)
        self.bad = list(bad)


@dataclass(frozen=True)
class StagedFile:
    lfn: str
    path: Path
    url: str
    size: int
    adler32: str
    seconds: float
    skipped: tuple[BadReplicaReport, ...] = ()  # replicas tried before ``url`` and given up


_MISSING = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def classify(exc: MoverError) -> BadReplicaReason:
    """Why a replica failed: damaged bytes, a missing file, or a storage that did not answer
    (a transient error, or one that survived the mover's retries: not proof of damage)."""
    if isinstance(exc, ChecksumMismatch):
        return BadReplicaReason.CHECKSUM
    if isinstance(exc, SizeMismatch) and not exc.retryable:  # not a truncated stream
        return BadReplicaReason.SIZE
    cause: BaseException | None = exc
    for _ in range(8):  # the mover wraps what fsspec raised: look down the chain
        if cause is None:
            break
        if isinstance(cause, _MISSING):
            return BadReplicaReason.MISSING
        cause = cause.__cause__ or cause.__context__
    return BadReplicaReason.UNREADABLE


def order_urls(urls: Sequence[str], preferred: Sequence[str] | None) -> list[str]:
    """The URLs to try: by the queue's scheme preference, then the server's order.

    ``preferred`` None or empty allows every scheme in the given order.
    """
    if not preferred:
        return list(urls)
    rank = {scheme.lower(): i for i, scheme in enumerate(preferred)}
    allowed = [u for u in urls if scheme_of(u) in rank]
    return sorted(allowed, key=lambda u: rank[scheme_of(u)])  # sorted() is stable


def endpoint_prefixes(spec: JobSpec) -> list[str]:
    """The URL prefixes of the storage endpoints a job spec names (the record checked
    that each is ``scheme://...``)."""
    return list(spec.endpoints.values())


def stage_in_file(
    item: InputFile, workdir: Path, preferred: Sequence[str] | None = None, *,
    allowed: Sequence[str],
) -> StagedFile:
    """Copy one input of the job spec to ``workdir/<lfn>``, reading only from URLs
    under one of the ``allowed`` endpoint prefixes."""
    lfn = item.lfn
    try:
        dst = confine_path(workdir, Path(workdir) / check_component(lfn, "input name"))
    except PathEscape as exc:
        raise StageInError(f"{lfn[:60]!r}: an input name must be a plain file name "
                           f"({exc})") from None
    urls = list(item.urls)
    inside = [u for u in urls if any(within_url(p, u) for p in allowed)]
    candidates = order_urls(inside, preferred)
    attempts = [f"{u[:200]}: not under any storage endpoint of the job" for u in urls
                if u not in inside]
    attempts += [f"{u}: scheme not allowed by the queue ({', '.join(preferred or [])})"
                 for u in inside if u not in candidates]
    bad: list[BadReplicaReport] = []
    for url in candidates:
        try:
            transfer = get_mover(url).get(url, dst, size=item.size, adler32=item.adler32)
        except MoverError as exc:
            reason = classify(exc)
            log.warning("stage-in of %s from %s failed (%s): %s", lfn, url, reason, exc)
            attempts.append(f"{url}: {exc}")
            if len(url) <= URL_MAX:
                bad.append(BadReplicaReport(lfn=lfn, url=url, reason=reason,
                                            detail=str(exc)[:500]))
            continue
        log.info("staged in %s from %s (%d bytes, %.2f s)", lfn, url, transfer.size,
                 transfer.seconds)
        return StagedFile(lfn, dst, url, transfer.size, transfer.adler32, transfer.seconds,
                          tuple(bad))
    tried = "; ".join(attempts) if attempts else "no replica URL"
    raise StageInError(f"{lfn}: every replica failed: {tried}", bad)


@dataclass(frozen=True)
class DirectInput:
    lfn: str
    url: str
    size: int


def direct_input(item: InputFile, preferred: Sequence[str] | None = None, *,
                 allowed: Sequence[str]) -> DirectInput:
    """The URL the payload reads ``item`` from: the first allowed replica that is there
    with the catalog's size."""
    urls = list(item.urls)
    inside = [u for u in urls if any(within_url(p, u) for p in allowed)]
    candidates = order_urls(inside, preferred)
    attempts = [f"{u[:200]}: not under any storage endpoint of the job" for u in urls
                if u not in inside]
    attempts += [f"{u}: scheme not allowed by the queue ({', '.join(preferred or [])})"
                 for u in inside if u not in candidates]
    for url in candidates:
        try:
            fs, path = get_mover(url).fs_for(url)
            size = int(fs.size(path))
        except (MoverError, OSError, ValueError, TypeError) as exc:
            attempts.append(f"{url}: {exc}")
            continue
        if size != item.size:
            attempts.append(f"{url}: {size} bytes, the catalog says {item.size}")
            continue
        log.info("direct access to %s at %s (%d bytes)", item.lfn, url, size)
        return DirectInput(item.lfn, url, size)
    tried = "; ".join(attempts) if attempts else "no replica URL"
    raise StageInError(f"{item.lfn}: no replica can be read in place: {tried}")


def direct_inputs(spec: JobSpec) -> list[DirectInput]:
    """Direct access: the URL of every input, in the spec's order."""
    allowed = endpoint_prefixes(spec)
    return [direct_input(item, spec.movers.read, allowed=allowed) for item in spec.inputs]


def stage_in(
    spec: JobSpec, workdir: Path, *, should_stop: Callable[[], bool] = lambda: False
) -> list[StagedFile]:
    """Stage in every input of ``spec``; stop early if ``should_stop()`` turns true."""
    preferred = spec.movers.read
    allowed = endpoint_prefixes(spec)
    staged: list[StagedFile] = []
    for item in spec.inputs:
        before = [b for f in staged for b in f.skipped]
        if should_stop():
            raise StageInError("stage-in interrupted", before)
        try:
            staged.append(stage_in_file(item, workdir, preferred, allowed=allowed))
        except StageInError as exc:
            raise StageInError(str(exc), before + exc.bad) from None
    return staged


def bad_replicas(staged: Sequence[StagedFile]) -> list[BadReplicaReport]:
    """Every replica given up while ``staged`` came in (for the ``running`` report)."""
    return [b for f in staged for b in f.skipped]
