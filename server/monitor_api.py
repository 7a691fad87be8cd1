"""The monitor's data as JSON: every page's answer, from the same query functions.

Read-only, for any authenticated caller (``ANY``). Lists are keyset-paged:
``before`` is the ``next`` of the previous reply. The HTML pages
(``monitor_pages``) call the same functions of ``monitor_queries`` and
``monitor_stats``, so the monitor shows nothing the API cannot answer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from . import monitor_logs as logs
from . import monitor_queries as mq
from .auth import ANY
from .envelope import ok
from .monitor_stats import job_stats
from .schemas import Envelope

router = APIRouter(prefix="/api/v1/monitor", tags=["monitor"], dependencies=[Depends(ANY)])



# a fresh Query per parameter: FastAPI binds a Query object to the first name it serves
def Before() -> Any:  # noqa: N802
    return Query(None, ge=1, description="the `next` of the previous page")


def Limit() -> Any:  # noqa: N802
    return Query(mq.PAGE, ge=1, le=mq.MAX_PAGE)


def Text() -> Any:  # noqa: N802
    return Query(None, max_length=255)


def when(value: str | None, name: str) -> datetime | None:
    """An ISO time from a form field ("" is none); a naive time is taken as UTC."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name}: not an ISO time (e.g. 2026-12-01T08:00)") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def filters(state: str | None = Query(None, max_length=16), owner: str | None = Text(),
            name: str | None = Text(), since: str | None = Query(None, max_length=40),
            until: str | None = Query(None, max_length=40),
            task_id: str | None = Query(None, max_length=19, pattern=r"^[0-9]*$"),
            site: str | None = Text(), queue: str | None = Text(),
            error: str | None = Query(None, max_length=32)) -> mq.Filters:
    """The list filters; an empty form field is no filter."""
    return mq.Filters(state=state or None, owner=owner or None, name=name or None,
                      since=when(since, "since"), until=when(until, "until"),
                      task_id=int(task_id) if task_id else None, site=site or None,
                      queue=queue or None, error=error or None)


@router.get("/dashboard", response_model=Envelope)
def dashboard(request: Request) -> dict[str, Any]:
    with request.app.state.db.session() as s:
        return ok(mq.dashboard(s))


@router.get("/tasks", response_model=Envelope)
def tasks(request: Request, f: mq.Filters = Depends(filters), before: int | None = Before(),
          limit: int = Limit()) -> dict[str, Any]:
    with request.app.state.db.session() as s:
        return ok(mq.task_list(s, f, before, limit))


@router.get("/task/{task_id}", response_model=Envelope)
def task(task_id: int, request: Request) -> dict[str, Any]:
    with request.app.state.db.session() as s:
        return ok(mq.task_page(s, task_id))


@router.get("/jobs", response_model=Envelope)
def jobs(request: Request, f: mq.Filters = Depends(filters), before: int | None = Before(),
         limit: int = Limit()) -> dict[str, Any]:
    with request.app.state.db.session() as s:
        return ok(mq.job_list(s, f, before, limit))


@router.get("/job/{job_id}", response_model=Envelope)
def job(job_id: int, request: Request) -> dict[str, Any]:
    """A job with the tail of its log (``log``: member -> text) when it has one."""
    with request.app.state.db.session() as s:
        data = mq.job_page(s, job_id)
        log = logs.find_log(s, request.app.state.ddm, job_id) if data["has_log"] else None
    data["log"] = logs.tail(log) if log else None
    return ok(data)


def log_download(request: Request, job_id: int) -> StreamingResponse:
    with request.app.state.db.session() as s:
        log = logs.find_log(s, request.app.state.ddm, job_id)
    return StreamingResponse(logs.stream(log), media_type="application/gzip", headers={
        "Content-Disposition": f'attachment; filename="{log.lfn}"',
        "Content-Length": str(log.size), "X-Content-Type-Options": "nosniff"})


@router.get("/job/{job_id}/log", response_class=StreamingResponse,
            responses={200: {"content": {"application/gzip": {}},
                             "description": "the log tarball"}})
def job_log(job_id: int, request: Request) -> StreamingResponse:
    """The job's log tarball, as stored."""
    return log_download(request, job_id)


@router.get("/sites", response_model=Envelope)
def sites(request: Request) -> dict[str, Any]:
    with request.app.state.db.session() as s:
        return ok(mq.sites(s))


@router.get("/site/{name}", response_model=Envelope)
def site(name: str, request: Request) -> dict[str, Any]:
    if len(name) > 128:
        raise ValueError("a site name has at most 128 characters")
    with request.app.state.db.session() as s:
        return ok(mq.site_page(s, name))


@router.get("/config", response_model=Envelope)
def config(request: Request, before: int | None = Before(), limit: int = Limit()
           ) -> dict[str, Any]:
    with request.app.state.db.session() as s:
        return ok(mq.config_changes(s, before, limit))


@router.get("/datasets", response_model=Envelope)
def datasets(request: Request, name: str | None = Text(), before: int | None = Before(),
             limit: int = Limit()) -> dict[str, Any]:
    with request.app.state.db.session() as s:
        return ok(mq.datasets(s, name or None, before, limit))


@router.get("/dataset/{dataset_id}", response_model=Envelope)
def dataset(dataset_id: int, request: Request, before: int | None = Before(),
            limit: int = Limit()) -> dict[str, Any]:
    with request.app.state.db.session() as s:
        return ok(mq.dataset_page(s, dataset_id, before, limit))


@router.get("/replicas", response_model=Envelope)
def replicas(request: Request) -> dict[str, Any]:
    with request.app.state.db.session() as s:
        return ok(mq.replicas_per_endpoint(s))


@router.get("/requests", response_model=Envelope)
def data_requests(request: Request, state: str | None = Query(None, max_length=16),
                  before: int | None = Before(), limit: int = Limit()) -> dict[str, Any]:
    with request.app.state.db.session() as s:
        return ok(mq.requests(s, state or None, before, limit))


@router.get("/ddm_events", response_model=Envelope)
def ddm_events(request: Request, before: int | None = Before(), limit: int = Limit()
               ) -> dict[str, Any]:
    with request.app.state.db.session() as s:
        return ok(mq.ddm_events(s, before, limit))


@router.get("/stats", response_model=Envelope)
def stats(request: Request, site: str | None = Text(), task_id: int | None = Query(None, ge=1),
          bin_hours: int = Query(4, description="4 or 24"),
          bins: int = Query(12, ge=1, le=60)) -> dict[str, Any]:
    """Jobs finished and failed, mean wait, mean run time, CPU efficiency per bin."""
    if bin_hours not in (4, 24):
        raise ValueError("bin_hours is 4 or 24")
    with request.app.state.db.session() as s:
        return ok(job_stats(s, site=site or None, task_id=task_id, bin_hours=bin_hours,
                            bins=bins))
