"""Stage-in: bring every input of a job into its work dir, verified.

Each input lists replica URLs ranked by the server. The queue's mover
preferences (``spec.movers.read``) say which schemes this site may read
and in which order to fall back; within a scheme the server's order is kept.
A replica that fails (unreachable, wrong size, wrong adler32) is skipped for
the next one; when none works, ``StageInError`` lists every attempt.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dawms.storage.movers import MoverError, get_mover, scheme_of
from dawms.wire import InputFile, JobSpec

log = logging.getLogger(__name__)


class StageInError(Exception):
    """No replica of an input could be copied and verified."""


@dataclass(frozen=True)
class StagedFile:
    lfn: str
    path: Path
    url: str
    size: int
    adler32: str
    seconds: float


def order_urls(urls: Sequence[str], preferred: Sequence[str] | None) -> list[str]:
    """The URLs to try: by the queue's scheme preference, then the server's order.

    ``preferred`` None or empty allows every scheme in the given order.
    """
    if not preferred:
        return list(urls)
    rank = {scheme.lower(): i for i, scheme in enumerate(preferred)}
    allowed = [u for u in urls if scheme_of(u) in rank]
    return sorted(allowed, key=lambda u: rank[scheme_of(u)])  # sorted() is stable


def stage_in_file(
    item: InputFile, workdir: Path, preferred: Sequence[str] | None = None
) -> StagedFile:
    """Copy one input of the job spec to ``workdir/<lfn>``."""
    lfn = item.lfn
    if os.path.basename(lfn) != lfn or lfn in ("", ".", ".."):
        raise StageInError(f"{lfn!r}: an input name must be a plain file name")
    dst = workdir / lfn
    urls = list(item.urls)
    candidates = order_urls(urls, preferred)
    attempts = [f"{u}: scheme not allowed by the queue ({', '.join(preferred or [])})"
                for u in urls if u not in candidates]
    for url in candidates:
        try:
            transfer = get_mover(url).get(url, dst, size=item.size, adler32=item.adler32)
        except MoverError as exc:
            log.warning("stage-in of %s from %s failed: %s", lfn, url, exc)
            attempts.append(f"{url}: {exc}")
            continue
        log.info("staged in %s from %s (%d bytes, %.2f s)", lfn, url, transfer.size,
                 transfer.seconds)
        return StagedFile(lfn, dst, url, transfer.size, transfer.adler32, transfer.seconds)
    tried = "; ".join(attempts) if attempts else "no replica URL"
    raise StageInError(f"{lfn}: every replica failed: {tried}")


def stage_in(
    spec: JobSpec, workdir: Path, *, should_stop: Callable[[], bool] = lambda: False
) -> list[StagedFile]:
    """Stage in every input of ``spec``; stop early if ``should_stop()`` turns true."""
    preferred = spec.movers.read
    staged = []
    for item in spec.inputs:
        if should_stop():
            raise StageInError("stage-in interrupted")
        staged.append(stage_in_file(item, workdir, preferred))
    return staged
