"""A job's log tarball, read from the endpoint that holds it through the storage
package, for ``dawms job log``.

The pilot uploads the tarball (payload stdout and stderr, the pilot's log, the job
description) to the queue's write endpoint and the server registers it as the job's
``log`` file. This route finds an available replica, copies it with the mover of its
URL scheme into a temporary file (size and adler32 checked against the catalog) and
sends it; the temporary file is removed once sent. A log above ``MAX_LOG_BYTES`` is
refused rather than sent.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse
from sqlalchemy import select
from starlette.background import BackgroundTask

from dawms.catalog.models import File, Job, JobFile, Replica, StorageEndpoint
from dawms.catalog.states import ReplicaState
from dawms.storage.movers import get_mover
from dawms.storage.movers.base import MoverError

from .auth import ANY
from .envelope import ERROR_RESPONSES, NotFound

router = APIRouter(prefix="/api/v1", tags=["job"], dependencies=[Depends(ANY)])
MAX_LOG_BYTES = 256 * 1024 * 1024


class LogUnreadable(HTTPException):
    def __init__(self, message: str) -> None:
        super().__init__(502, message)


@router.get("/job/{job_id}/log", response_class=FileResponse,
            responses={200: {"content": {"application/gzip": {}},
                             "description": "the job's log tarball (.tgz)"},
                       502: ERROR_RESPONSES[400] | {
                           "description": "the endpoint holding the log cannot be read"}})
def job_log(job_id: int, request: Request) -> FileResponse:
    """The job's log tarball; 404 if the job has none registered yet."""
    db, ddm = request.app.state.db, request.app.state.ddm
    with db.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        row = s.execute(select(File, StorageEndpoint)
                        .join(JobFile, JobFile.file_id == File.id)
                        .join(Replica, Replica.file_id == File.id)
                        .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
                        .where(JobFile.job_id == job_id, JobFile.type == "log",
                               Replica.state == ReplicaState.AVAILABLE)
                        .order_by(StorageEndpoint.kind != "disk", Replica.id)).first()
        if row is None:
            raise NotFound(f"job {job_id} has no log registered (it is {job.state}; the "
                           "pilot uploads it when the job ends)")
        f, endpoint = row
        if f.size > MAX_LOG_BYTES:
            raise ValueError(f"the log of job {job_id} is {f.size} bytes; this server sends "
                             f"at most {MAX_LOG_BYTES} (read it from {endpoint.name})")
        url = ddm.pfn(endpoint, f.scope, f.name)
        name, size, adler32, where = f.name, f.size, f.adler32, endpoint.name
    fd, tmp = tempfile.mkstemp(prefix="dawms-log-", suffix=".tgz")
    os.close(fd)
    try:
        get_mover(url).get(url, tmp, size=size, adler32=adler32)
    except MoverError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise LogUnreadable(f"cannot read the log of job {job_id} from {where}: {exc}"
                            ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return FileResponse(tmp, media_type="application/gzip", filename=name,
                        background=BackgroundTask(Path(tmp).unlink, missing_ok=True))
