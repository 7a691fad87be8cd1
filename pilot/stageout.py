"""Stage-out: copy a job's outputs and its log to their destination URLs.

The server gives each output (and the log) one destination URL; the queue's
mover preferences (``spec.movers.write`` for outputs, ``log`` falling back to
``write`` for the log) say which schemes this site may write. The result is
what the final report carries: a ``wire.OutputReport`` (lfn, type, size,
adler32) of the bytes actually sent.

Nothing leaves from outside the work dir and nothing goes outside the job's
output endpoint: the local file must be a regular file inside the work dir
(links resolved, so a payload cannot ship a link to a file of the worker node),
and the destination URL must lie under the URL prefix of the spec's
``endpoint_out`` (``spec.endpoints``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from dawms.storage.movers import MoverError, get_mover, scheme_of
from dawms.storage.paths import PathEscape, check_component, confine_path, within_url
from dawms.wire import JobSpec, OutputReport

log = logging.getLogger(__name__)


class StageOutError(Exception):
    """An output or the log could not be copied to its destination."""


def output_prefix(spec: JobSpec) -> str:
    """The URL prefix of the job's output endpoint, or "" when the spec names none."""
    return spec.endpoints.get(spec.endpoint_out, "")


def stage_out_file(
    lfn: str, path: Path, url: str, file_type: str, allowed: Sequence[str] | None = None, *,
    workdir: Path, prefix: str,
) -> OutputReport:
    """Put one local file of ``workdir`` to ``url`` under ``prefix``; return its report entry."""
    if not prefix or not within_url(prefix, url):
        raise StageOutError(f"{lfn}: destination {url[:200]} is not under the job's "
                            f"output endpoint {prefix or '(none given)'}")
    if allowed and scheme_of(url) not in {s.lower() for s in allowed}:
        raise StageOutError(f"{lfn}: destination {url} uses a scheme the queue may not write "
                            f"({', '.join(allowed)})")
    try:
        check_component(path.name, "output name")
        if path.is_symlink():
            raise PathEscape(f"{path.name} is a symbolic link")
        path = confine_path(workdir, path)
    except PathEscape as exc:
        raise StageOutError(f"{lfn}: refused to send a file from outside the work dir "
                            f"({exc})") from None
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
    prefix = output_prefix(spec)
    return [stage_out_file(o.lfn, workdir / o.lfn, o.url, "out", allowed,
                           workdir=workdir, prefix=prefix)
            for o in spec.outputs]


def stage_out_log(spec: JobSpec, tarball: Path, workdir: Path) -> OutputReport:
    """Put the log tarball (in ``workdir``) to ``spec.log.url``."""
    if spec.log is None:
        raise StageOutError("the job has no log destination")
    return stage_out_file(spec.log.lfn, tarball, spec.log.url, "log", spec.movers.for_log(),
                          workdir=workdir, prefix=output_prefix(spec))
