"""Stage-out: copy a job's outputs and its log to their destination URLs.

The server gives each output (and the log) one destination URL; the queue's
mover preferences (``spec.movers.write`` for outputs, ``log`` falling back to
``write`` for the log) say which schemes this site may write. The result is
what the final report carries: a ``wire.OutputReport`` (lfn, type, size,
adler32) of the bytes actually sent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from dawms.storage.movers import MoverError, get_mover, scheme_of
from dawms.wire import JobSpec, OutputReport

log = logging.getLogger(__name__)


class StageOutError(Exception):
    """An output or the log could not be copied to its destination."""


def stage_out_file(
    lfn: str, path: Path, url: str, file_type: str, allowed: Sequence[str] | None = None
) -> OutputReport:
    """Put one local file to ``url``; return its report entry."""
    if allowed and scheme_of(url) not in {s.lower() for s in allowed}:
        raise StageOutError(f"{lfn}: destination {url} uses a scheme the queue may not write "
                            f"({', '.join(allowed)})")
    if not path.is_file():
        raise StageOutError(f"{lfn}: the payload did not produce {path.name}")
    try:
        transfer = get_mover(url).put(path, url)
    except MoverError as exc:
        raise StageOutError(f"{lfn}: {exc}") from exc
    log.info("staged out %s to %s (%d bytes, %.2f s)", lfn, url, transfer.size, transfer.seconds)
    return OutputReport(lfn=lfn, type=file_type, size=transfer.size, adler32=transfer.adler32)


def stage_out_outputs(spec: JobSpec, workdir: Path) -> list[OutputReport]:
    """Put every output of ``spec`` from ``workdir``; the first failure raises."""
    allowed = spec.movers.write
    return [stage_out_file(o.lfn, workdir / o.lfn, o.url, "out", allowed) for o in spec.outputs]


def stage_out_log(spec: JobSpec, tarball: Path) -> OutputReport:
    """Put the log tarball to ``spec.log.url``."""
    if spec.log is None:
        raise StageOutError("the job has no log destination")
    return stage_out_file(spec.log.lfn, tarball, spec.log.url, "log", spec.movers.for_log())
