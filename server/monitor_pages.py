"""The web monitor under ``/monitor``: server-rendered pages over the monitor queries.

Jinja2 templates packaged with the server (``templates/monitor``), autoescape on:
job names, diagnostics, logs and DDM payloads are text, never markup. The only
markup not from a template is our own SVG (``monitor_svg``, which escapes its
labels). A strict Content-Security-Policy (scripts and styles from ``/monitor/
static`` only, nothing inline, nothing from elsewhere) is a second wall. One
small script (``static/monitor.js``) refreshes the parts marked
``data-refresh`` by fetching the same page again. Read-only: no page changes
anything; the login only sets a cookie (``monitor_auth``).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from dawms import __version__
from dawms.catalog.states import JOB_FINAL, TASK_FINAL

from . import monitor_logs as logs
from . import monitor_queries as mq
from .auth import PUBLIC
from .envelope import NotFound
from .monitor_api import Before, Limit, Text, filters, log_download
from .monitor_auth import (
    READ,
    LoginRequired,
    clear_cookie,
    login,
    read_form,
    safe_next,
    set_cookie,
)
from .monitor_stats import job_stats
from .monitor_svg import stats_plots
from .tokens import TokenError

router = APIRouter(prefix="/monitor", include_in_schema=False)
STATIC = {"monitor.js": "text/javascript", "monitor.css": "text/css"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}


def _dt(value: str | None) -> str:
    return "" if not value else str(value)[:19].replace("T", " ")


def _bytes(value: int | None) -> str:
    if value is None:
        return ""
    size = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return str(value)


ENV = Environment(loader=PackageLoader("dawms.server", "templates"),
                  autoescape=select_autoescape(default=True, default_for_string=True))
ENV.filters.update(dt=_dt, bytes=_bytes,
                   tojson_pretty=lambda v: json.dumps(v, indent=1, sort_keys=True, default=str))


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = ENV.get_template(f"monitor/{template}").render(
        request=request, version=__version__, path=request.url.path, **context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def _next_url(request: Request, cursor: int | None, **params: Any) -> str | None:
    if cursor is None:
        return None
    query = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{request.url.path}?{urlencode({**query, 'before': cursor})}"


def install(app: FastAPI) -> None:
    """The monitor's router and its login-form answer to a page's 401."""
    app.include_router(router)

    @app.exception_handler(LoginRequired)
    async def _login_form(request: Request, exc: LoginRequired) -> HTMLResponse:
        response = render(request, "login.html", status=401, error=None,
                          next=safe_next(request.url.path))
        response.headers["WWW-Authenticate"] = "Bearer"
        return response


# ------------------------------------------------------------------ login and assets
@router.get("/login", dependencies=[Depends(PUBLIC)])
def login_page(request: Request, next: str | None = Query(None, max_length=2000)
               ) -> HTMLResponse:
    return render(request, "login.html", error=None, next=safe_next(next))


@router.post("/login", dependencies=[Depends(PUBLIC)])
async def login_submit(request: Request) -> Response:
    form = await read_form(request)
    target = safe_next(form.get("next"))
    token = form.get("token", "")
    try:
        principal = login(request, token)
    except TokenError as exc:
        return render(request, "login.html", status=401, error=str(exc), next=target)
    response = RedirectResponse(target, status_code=303, headers=HEADERS)
    set_cookie(request, response, token)
    response.headers["X-Dawms-Subject"] = principal.subject[:128]
    return response


@router.post("/logout", dependencies=[Depends(PUBLIC)])
def logout(request: Request) -> Response:
    response = RedirectResponse("/monitor/login", status_code=303, headers=HEADERS)
    clear_cookie(request, response)
    return response


@router.get("/static/{name}", dependencies=[Depends(PUBLIC)])
def static(name: str) -> Response:
    if name not in STATIC:
        raise NotFound("no such asset")
    body = resources.files("dawms.server").joinpath("static", name).read_bytes()
    return Response(body, media_type=STATIC[name],
                    headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"})


# ------------------------------------------------------------------ pages
@router.get("/", dependencies=[Depends(READ)])
def dashboard(request: Request) -> HTMLResponse:
    with request.app.state.db.session() as s:
        data = mq.dashboard(s)
    states = sorted({st for counts in data["jobs_by_site"].values() for st in counts})
    return render(request, "dashboard.html", d=data, states=states)


@router.get("/tasks", dependencies=[Depends(READ)])
def tasks(request: Request, f: mq.Filters = Depends(filters), before: int | None = Before(),
          limit: int = Limit()) -> HTMLResponse:
    with request.app.state.db.session() as s:
        page = mq.task_list(s, f, before, limit)
    return render(request, "tasks.html", page=page, f=f,
                  next_url=_next_url(request, page["next"], **f.query(), limit=limit))


@router.get("/task/{task_id}", dependencies=[Depends(READ)])
def task(task_id: int, request: Request) -> HTMLResponse:
    with request.app.state.db.session() as s:
        data = mq.task_page(s, task_id)
        recent = mq.job_list(s, mq.Filters(task_id=task_id), None, 20)
    return render(request, "task.html", t=data, recent=recent,
                  live=data["state"] not in TASK_FINAL)


@router.get("/jobs", dependencies=[Depends(READ)])
def jobs(request: Request, f: mq.Filters = Depends(filters), before: int | None = Before(),
         limit: int = Limit()) -> HTMLResponse:
    with request.app.state.db.session() as s:
        page = mq.job_list(s, f, before, limit)
    return render(request, "jobs.html", page=page, f=f,
                  next_url=_next_url(request, page["next"], **f.query(), limit=limit))


@router.get("/job/{job_id}", dependencies=[Depends(READ)])
def job(job_id: int, request: Request) -> HTMLResponse:
    with request.app.state.db.session() as s:
        data = mq.job_page(s, job_id)
        log = logs.find_log(s, request.app.state.ddm, job_id) if data["has_log"] else None
    return render(request, "job.html", j=data, log=logs.tail(log) if log else None,
                  live=data["state"] not in JOB_FINAL)


@router.get("/job/{job_id}/log", dependencies=[Depends(READ)])
def job_log(job_id: int, request: Request) -> StreamingResponse:
    return log_download(request, job_id)


@router.get("/sites", dependencies=[Depends(READ)])
def sites(request: Request, before: int | None = Before()) -> HTMLResponse:
    with request.app.state.db.session() as s:
        data = mq.sites(s)
        changes = mq.config_changes(s, before, 10)
    return render(request, "sites.html", d=data, changes=changes,
                  next_url=_next_url(request, changes["next"]))


@router.get("/site/{name}", dependencies=[Depends(READ)])
def site(name: str, request: Request) -> HTMLResponse:
    if len(name) > 128:
        raise ValueError("a site name has at most 128 characters")
    with request.app.state.db.session() as s:
        data = mq.site_page(s, name)
        failed = mq.job_list(s, mq.Filters(site=name, state="failed"), None, 20)
    return render(request, "site.html", d=data, failed=failed)


@router.get("/data", dependencies=[Depends(READ)])
def data(request: Request, name: str | None = Text(), before: int | None = Before(),
         limit: int = Limit()) -> HTMLResponse:
    with request.app.state.db.session() as s:
        page = mq.datasets(s, name or None, before, limit)
        per_endpoint = mq.replicas_per_endpoint(s)
    return render(request, "data.html", page=page, name=name or "", endpoints=per_endpoint,
                  next_url=_next_url(request, page["next"], name=name, limit=limit))


@router.get("/dataset/{dataset_id}", dependencies=[Depends(READ)])
def dataset(dataset_id: int, request: Request, before: int | None = Before(),
            limit: int = Limit()) -> HTMLResponse:
    with request.app.state.db.session() as s:
        d = mq.dataset_page(s, dataset_id, before, limit)
    return render(request, "dataset.html", d=d,
                  next_url=_next_url(request, d["files"]["next"], limit=limit))


@router.get("/requests", dependencies=[Depends(READ)])
def data_requests(request: Request, state: str | None = Query(None, max_length=16),
                  before: int | None = Before(), limit: int = Limit()) -> HTMLResponse:
    with request.app.state.db.session() as s:
        page = mq.requests(s, state or None, before, limit)
    return render(request, "requests.html", page=page, state=state or "",
                  next_url=_next_url(request, page["next"], state=state, limit=limit))


@router.get("/ddm_events", dependencies=[Depends(READ)])
def ddm_events(request: Request, before: int | None = Before(), limit: int = Limit()
               ) -> HTMLResponse:
    with request.app.state.db.session() as s:
        page = mq.ddm_events(s, before, limit)
    return render(request, "ddm_events.html", page=page,
                  next_url=_next_url(request, page["next"], limit=limit))


@router.get("/stats", dependencies=[Depends(READ)])
def stats(request: Request, site: str | None = Text(),
          task_id: str | None = Query(None, max_length=19, pattern=r"^[0-9]*$"),
          bin_hours: int = Query(4)) -> HTMLResponse:
    if bin_hours not in (4, 24):
        raise ValueError("bin_hours is 4 or 24")
    with request.app.state.db.session() as s:
        data = job_stats(s, site=site or None, task_id=int(task_id) if task_id else None,
                         bin_hours=bin_hours)
        site_names = mq.site_names(s)
    plots = [Markup(svg) for svg in stats_plots(data)]  # noqa: S704 (our SVG, labels escaped)
    return render(request, "stats.html", d=data, plots=plots,
                  sites=site_names)
