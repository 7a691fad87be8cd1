"""Set-up (PanDA's setupper): ask the DDM for the inputs a bunch of jobs misses.

One replication request per (task, destination endpoint) bunch, named like
PanDA's dispatch block (``<task>_dis<id>``); files already on their way to that
endpoint ride on the request that carries them instead of being asked twice.
The broker calls it when it assigns jobs, the activator when a job still misses
a file that no open request is bringing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from dawms.catalog.models import DataRequest, DataRequestFile, File, JobFile, StorageEndpoint, Task
from dawms.catalog.states import RequestState
from dawms.ddm_bridge.abc import DDM

log = logging.getLogger(__name__)


def request_missing(session: Session, ddm: DDM,
                    bunches: dict[tuple[int, int], set[int]]) -> dict[tuple[int, int], int]:
    """For ``(task id, endpoint id) -> file ids``, make sure each file is requested to
    its endpoint; returns ``(file id, endpoint id) -> request id``."""
    file_request: dict[tuple[int, int], int] = {}
    for (task_id, endpoint_id), file_ids in bunches.items():
        in_flight = dict(session.execute(
            select(DataRequestFile.file_id, DataRequest.id)
            .join(DataRequest, DataRequest.id == DataRequestFile.request_id)
            .where(DataRequest.endpoint_id == endpoint_id,
                   DataRequest.state == RequestState.REQUESTED,
                   DataRequestFile.done == 0,
                   DataRequestFile.file_id.in_(list(file_ids)))).all())
        for fid, rid in in_flight.items():
            file_request[(fid, endpoint_id)] = rid
        new = sorted(file_ids - set(in_flight))
        if not new:
            continue
        task = session.get(Task, task_id)
        endpoint = session.get(StorageEndpoint, endpoint_id)
        files = list(session.scalars(select(File).where(File.id.in_(new))))
        req = ddm.request_replication(session, files, endpoint,
                                      name=f"{task.name}_dis{uuid.uuid4().hex[:10]}")
        for fid in new:
            file_request[(fid, endpoint_id)] = req.id
        log.info("request %s: %d files of task %s to %s", req.id, len(new), task_id,
                 endpoint.name)
    return file_request


def link_requests(session: Session, links: Iterable[tuple[int, int, int]]) -> None:
    """Record on each job's input file which request brings it: (job, file, request)."""
    rows = [{"j": j, "f": f, "r": r} for j, f, r in links]
    if rows:
        session.connection().execute(
            update(JobFile.__table__)
            .where(JobFile.job_id == bindparam("j"), JobFile.file_id == bindparam("f"),
                   JobFile.type == "in")
            .values(request_id=bindparam("r")), rows)
