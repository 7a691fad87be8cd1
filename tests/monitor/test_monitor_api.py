"""The monitor over a real catalog (SQLite and PostgreSQL): JSON, pages, login, paging.

Through the app's own HTTP stack (TestClient) with real tokens; the browser tests
(``test_monitor_browser.py``) drive the same pages in Chromium.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from world import TASK_NAME, XSS, World

from dawms.catalog.db import Database
from dawms.catalog.models import Job
from dawms.ddm_bridge.local import LocalDDM
from dawms.server import monitor_queries as mq
from dawms.server.app import create_app
from dawms.server.monitor_stats import job_stats
from dawms.server.settings import ServerSettings

pytestmark = pytest.mark.monitor


@pytest.fixture
def app_client(db: Database, ddm: LocalDDM, world: World) -> Iterator[TestClient]:
    app = create_app(db, ddm, settings=ServerSettings(auth="on"))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


def data(reply) -> dict:  # type: ignore[no-untyped-def]
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["success"] is True
    return body["data"]


def test_json_answers_every_question_of_the_pages(app_client: TestClient, world: World,
                                                  bearer: Callable[..., dict[str, str]]
                                                  ) -> None:
    h = bearer("reader")
    dash = data(app_client.get("/api/v1/monitor/dashboard", headers=h))
    assert dash["jobs_by_site"]["SITE_A"]["failed"] == 1
    assert dash["jobs_by_site"]["SITE_A"]["finished"] == 1
    assert dash["errors_24h"] == {"payload": 1} and dash["pilots_last_hour"] == 1
    task = data(app_client.get(f"/api/v1/monitor/task/{world.task_id}", headers=h))
    assert task["name"] == TASK_NAME and task["pieces"] == 4 and task["pieces_done"] == 1
    assert task["files_in"] == 8 and task["files_in_done"] == 2
    assert task["errors"] == [{"category": "payload", "diag": f"payload exited 3: {XSS}",
                               "count": 1}]
    job = data(app_client.get(f"/api/v1/monitor/job/{world.failed}", headers=h))
    assert job["error_category"] == "payload" and job["pilot_id"] == "pilot-<i>1</i>"
    assert [a["attempt"] for a in job["attempts"]] == [1, 2]  # the retry is listed
    assert [h["to"] for h in job["history"]][-2:] == ["running", "failed"]
    stdout = next(t for n, t in job["log"]["members"].items() if n.endswith("payload.stdout"))
    assert stdout.endswith(f"payload said {XSS}\nthe end\n")
    inputs = [f for f in job["files"] if f["type"] == "in"]
    assert inputs and all(f["replicas"] == [{"endpoint": "SITE_A_DISK", "state": "available"}]
                          for f in inputs)
    sites = data(app_client.get("/api/v1/monitor/sites", headers=h))
    a = next(q for q in sites["queues"] if q["name"] == "SITE_A_PROD")
    assert a["failure_rate_24h"] == 0.5 and a["pilots_last_hour"] == 1
    assert data(app_client.get("/api/v1/monitor/config", headers=h))["items"][0]["actor"] == "test"
    ds = data(app_client.get("/api/v1/monitor/datasets?name=t:raw.*", headers=h))["items"]
    assert [d["did"] for d in ds] == ["t:raw.A"] and ds[0]["files"] == 8
    files = data(app_client.get(f"/api/v1/monitor/dataset/{ds[0]['id']}?limit=3", headers=h))
    assert len(files["files"]["items"]) == 3 and files["files"]["next"] is not None
    assert files["replicas_per_endpoint"] == {"SITE_A_DISK (available)": 8}
    for path in ("/api/v1/monitor/requests", "/api/v1/monitor/ddm_events",
                 "/api/v1/monitor/replicas", "/api/v1/monitor/site/SITE_A"):
        data(app_client.get(path, headers=h))


def test_log_tarball_downloads_as_stored(app_client: TestClient, world: World,
                                         bearer: Callable[..., dict[str, str]]) -> None:
    reply = app_client.get(f"/api/v1/monitor/job/{world.failed}/log", headers=bearer("reader"))
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/gzip"
    assert "attachment" in reply.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(reply.content)) as tar:
        names = tar.getnames()
    assert any(n.endswith("payload.stderr") for n in names)
    # a job without a log: a clear 404 in the envelope
    reply = app_client.get(f"/api/v1/monitor/job/{world.running}/log", headers=bearer("reader"))
    assert reply.status_code == 404 and "not registered" in reply.json()["message"]


def test_keyset_pages_cover_the_list_once_in_order(app_client: TestClient, world: World,
                                                   bearer: Callable[..., dict[str, str]]
                                                   ) -> None:
    h, seen, before = bearer("reader"), [], None
    for _ in range(10):
        params = {"limit": 2, **({"before": before} if before else {})}
        page = data(app_client.get("/api/v1/monitor/jobs", params=params, headers=h))
        seen += [j["id"] for j in page["items"]]
        before = page["next"]
        if before is None:
            break
    assert seen == sorted(world.jobs, reverse=True)
    # the HTML next link carries the cursor and the filters, never a token
    html = app_client.get("/monitor/jobs?limit=2&state=", headers=h).text
    assert f'href="/monitor/jobs?limit=2&amp;before={seen[1]}"' in html
    assert "token" not in html.split("<main>")[1]


def test_filters(app_client: TestClient, world: World,
                 bearer: Callable[..., dict[str, str]]) -> None:
    h = bearer("reader")

    def ids(**params: object) -> list[int]:
        return [j["id"] for j in data(app_client.get("/api/v1/monitor/jobs", params=params,
                                                     headers=h))["items"]]

    assert ids(state="failed") == [world.failed]
    assert ids(error="payload", site="SITE_A") == [world.failed]
    assert ids(name="mon<b>*") == sorted(world.jobs, reverse=True)
    assert ids(name="mon%") == [] and ids(name="mon_b*") == []  # LIKE's wildcards are text
    assert ids(owner="nobody") == []
    assert ids(since=(datetime.now(UTC) + timedelta(days=1)).isoformat()) == []
    tasks = data(app_client.get("/api/v1/monitor/tasks", params={"state": "ready"},
                                headers=h))["items"]
    assert [t["id"] for t in tasks] == [world.task_id]
    reply = app_client.get("/api/v1/monitor/jobs", params={"limit": 100000}, headers=h)
    assert reply.status_code == 422  # every size bounded
    reply = app_client.get("/api/v1/monitor/stats", params={"bin_hours": 5}, headers=h)
    assert reply.status_code == 400 and "4 or 24" in reply.json()["message"]


def test_stats_bins(db: Database, world: World) -> None:
    with db.session() as s:
        ended = s.scalar(select(Job.ended_at).where(Job.id == world.finished))
        for hours in (4, 24):
            stats = job_stats(s, site="SITE_A", bin_hours=hours, now=ended)
            last = stats["bins"][-1]
            assert len(stats["bins"]) == 12
            assert (last["finished"], last["failed"]) == (1, 1), stats
            assert last["mean_run_s"] == 60.0  # running at +30 s, finished at +90 s
            assert last["cpu_eff"] == 0.8  # 40 cpu s over 50 wall s on one core
            # activated 2 min before the pilots' clock; started at +30 s and +20 s
            assert last["mean_wait_s"] == pytest.approx(145.0, abs=1)
        assert job_stats(s, site="SITE_B", now=ended)["bins"][-1]["finished"] == 0
        assert job_stats(s, task_id=world.task_id, now=ended)["bins"][-1]["failed"] == 1


def test_pages_escape_what_users_pilots_and_payloads_wrote(
        app_client: TestClient, world: World, bearer: Callable[..., dict[str, str]]) -> None:
    h = {**bearer("reader"), "Accept": "text/html"}
    pages = [f"/monitor/job/{world.failed}", f"/monitor/task/{world.task_id}", "/monitor/tasks",
             "/monitor/jobs", "/monitor/", "/monitor/sites", "/monitor/data", "/monitor/stats",
             "/monitor/requests", "/monitor/ddm_events", "/monitor/site/SITE_A",
             f"/monitor/stats?task_id={world.task_id}&bin_hours=24"]
    for path in pages:
        reply = app_client.get(path, headers=h)
        assert reply.status_code == 200, (path, reply.text)
        assert "<script>window" not in reply.text and "<b>task" not in reply.text, path
        assert "<i>1" not in reply.text, path
        assert "script-src 'self'" in reply.headers["content-security-policy"]
    job = app_client.get(f"/monitor/job/{world.failed}", headers=h).text
    assert "payload exited 3: &lt;script&gt;window.__pwned = 1&lt;/script&gt;" in job
    assert "payload said &lt;script&gt;" in job  # the log tail, escaped
    assert "mon&lt;b&gt;task&lt;/b&gt;" in app_client.get(
        f"/monitor/task/{world.task_id}", headers=h).text


def test_login_turns_a_token_into_a_strict_cookie(app_client: TestClient, db: Database,
                                                  ddm: LocalDDM, make_token) -> None:
    html = {"Accept": "text/html"}
    reply = app_client.get("/monitor/", headers=html)
    assert reply.status_code == 401 and 'action="/monitor/login"' in reply.text
    assert reply.headers["www-authenticate"] == "Bearer"
    assert app_client.get("/monitor/").json()["success"] is False  # API callers: the envelope
    bad = app_client.post("/monitor/login", data={"token": "not-a-jwt"}, headers=html,
                          follow_redirects=False)
    assert bad.status_code == 401 and "set-cookie" not in bad.headers
    token = make_token("reader", "carol")
    good = app_client.post("/monitor/login", data={"token": token, "next": "//evil.example/x"},
                           follow_redirects=False)
    assert good.status_code == 303 and good.headers["location"] == "/monitor/"
    cookie = good.headers["set-cookie"].lower()
    for attribute in ("httponly", "samesite=strict", "path=/monitor"):
        assert attribute in cookie
    assert "secure" not in cookie  # loopback: plain HTTP is the development case
    assert token not in good.headers["location"]
    assert app_client.get("/monitor/", headers=html).status_code == 200  # the cookie reads
    out = app_client.post("/monitor/logout", follow_redirects=False)
    assert out.status_code == 303 and 'dawms_monitor=""' in out.headers["set-cookie"]
    # off loopback the cookie is Secure
    with TestClient(create_app(db, ddm, settings=ServerSettings(auth="on")),
                    base_url="https://monitor.example.org") as remote:
        reply = remote.post("/monitor/login", data={"token": token,
                                                    "next": "/monitor/jobs?state=failed"},
                            follow_redirects=False)
        assert reply.headers["location"] == "/monitor/jobs?state=failed"
        assert "secure" in reply.headers["set-cookie"].lower()


def test_next_is_never_an_open_redirect() -> None:
    from dawms.server.monitor_auth import safe_next

    for target in ("//evil", "https://evil", "/api/v1/x", "/monitor\\..", "/monitorx",
                   "/monitor/\nx", None, ""):
        assert safe_next(target) == "/monitor/"
    assert safe_next("/monitor/task/3") == "/monitor/task/3"


def test_like_pattern_escapes() -> None:
    assert mq.like_pattern("a*b%c_d\\") == "a%b\\%c\\_d\\\\"
