"""The role x endpoint matrix, generated from the app's routes (mounted sub-apps included).

Every route must declare a rule, and that rule must be the policy written here
(``POLICY``): a route added without a rule, or with another rule, fails. Then
every route is called as every role with a valid request: a role the policy
refuses gets 401/403 and the catalog is unchanged (every row compared); a role it
admits is not refused. Object-level bindings (an analyst's own tasks, a pilot's
and a factory's queues) are checked on their own below.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from world_helpers import ROLES, World, snapshot

from dawms.catalog.models import Job, Queue
from dawms.server.auth import PUBLIC
from dawms.server.routes import api_routes, rule_of

pytestmark = pytest.mark.auth

ALL = set(ROLES)
MANAGERS = {"admin", "production", "analyst"}
MONITOR_API = ("dashboard", "tasks", "task/{task_id}", "jobs", "job/{job_id}",
               "job/{job_id}/log", "sites", "site/{name}", "config", "datasets",
               "dataset/{dataset_id}", "replicas", "requests", "ddm_events", "stats")
MONITOR_PAGES = ("", "tasks", "task/{task_id}", "jobs", "job/{job_id}", "job/{job_id}/log",
                 "sites", "site/{name}", "data", "dataset/{dataset_id}", "requests",
                 "ddm_events", "stats")
POLICY: dict[tuple[str, str], set[str] | None] = {  # None: public, no token needed
    ("GET", "/openapi.json"): None,
    ("GET", "/healthz"): None,
    ("GET", "/readyz"): None,
    ("GET", "/metrics"): {"admin", "reader"},
    ("GET", "/api/v1/ping"): ALL,
    ("POST", "/api/v1/pilot/acquire_jobs"): {"admin", "pilot"},
    ("POST", "/api/v1/pilot/update_job"): {"admin", "pilot"},
    ("POST", "/api/v1/pilot/update_jobs_bulk"): {"admin", "pilot"},
    ("POST", "/api/v1/pilot/get_command"): {"admin", "pilot"},
    ("POST", "/api/v1/task/submit"): MANAGERS,
    ("GET", "/api/v1/task/list"): ALL,
    ("GET", "/api/v1/task/{task_id}"): ALL,
    ("POST", "/api/v1/task/kill"): MANAGERS,
    ("POST", "/api/v1/task/reassign"): MANAGERS,
    ("POST", "/api/v1/task/priority"): MANAGERS,
    ("GET", "/api/v1/job/list"): ALL,
    ("GET", "/api/v1/job/{job_id}"): ALL,
    ("POST", "/api/v1/job/kill"): MANAGERS,
    ("POST", "/api/v1/job/reassign"): MANAGERS,
    ("GET", "/api/v1/summary"): ALL,
    ("POST", "/api/v1/ddm/event"): {"admin", "ddm"},
    ("POST", "/api/v1/ddm/rucio/messages"): {"admin", "ddm"},
    ("POST", "/api/v1/ddm/rucio/_bulk"): {"admin", "ddm"},
    ("GET", "/api/v1/factory/demand"): {"admin", "factory"},
    ("POST", "/api/v1/factory/pilot_token"): {"admin", "factory"},
    ("GET", "/api/v1/staging/list"): ALL,
    ("POST", "/api/v1/staging/cancel"): {"admin", "production"},
    ("POST", "/api/v1/staging/priority"): {"admin", "production"},
    ("GET", "/api/v1/job/{job_id}/explain"): ALL,
    ("GET", "/api/v1/task/{task_id}/explain"): ALL,
    ("POST", "/api/v1/task/dry_run"): MANAGERS,
    ("GET", "/api/v1/task/{task_id}/progress"): ALL,
    ("GET", "/api/v1/job/{job_id}/log"): ALL,
    ("GET", "/api/v1/dataset/list"): ALL,
    ("GET", "/api/v1/dataset/{scope}/{name}"): ALL,
    ("GET", "/api/v1/request/list"): ALL,
    ("GET", "/api/v1/site/list"): ALL,
    ("GET", "/api/v1/site/{name}"): ALL,
    ("GET", "/api/v1/queue/list"): ALL,
    ("GET", "/api/v1/queue/{name}"): ALL,
    ("POST", "/api/v1/replica/declare_bad"): {"admin", "production"},
    # the web monitor: read-only for every role; its login, logout and assets are public
    **{("GET", f"/api/v1/monitor/{p}"): ALL for p in MONITOR_API},
    **{("GET", f"/monitor/{p}"): ALL for p in MONITOR_PAGES},
    ("GET", "/monitor/login"): None,
    ("POST", "/monitor/login"): None,
    ("POST", "/monitor/logout"): None,
    ("GET", "/monitor/static/{name}"): None,
}


def operations(app: FastAPI) -> list[tuple[str, str, Any]]:
    """(method, path, rule) of every operation the app serves."""
    return [(m, r.path, rule_of(app, r)) for r in api_routes(app)
            for m in sorted(r.methods - {"HEAD"})]


def undeclared(app: FastAPI) -> list[str]:
    """Operations with no rule, or a rule other than ``POLICY`` says."""
    problems = []
    for method, path, rule in operations(app):
        if rule is None:
            problems.append(f"{method} {path}: no rule")
        elif (method, path) not in POLICY:
            problems.append(f"{method} {path}: not in the policy table")
        elif POLICY[(method, path)] is None:
            if rule is not PUBLIC:
                problems.append(f"{method} {path}: should be public")
        elif rule.roles != POLICY[(method, path)]:
            problems.append(f"{method} {path}: admits {sorted(rule.roles or ['anyone'])}, "
                            f"policy {sorted(POLICY[(method, path)] or [])}")
    return problems


def test_every_route_declares_the_rule_of_the_policy(world: World) -> None:
    app = world.api.app
    assert undeclared(app) == []
    assert {(m, p) for m, p, _ in operations(app)} == set(POLICY)


def test_a_route_without_a_rule_fails_the_matrix(world: World) -> None:
    """The test of the test: a new route, or one in a mounted sub-app, without a rule."""
    app: FastAPI = world.api.app

    @app.get("/api/v1/forgotten")
    def forgotten() -> dict[str, str]:
        return {}

    sub = FastAPI()

    @sub.post("/inside")
    def inside() -> dict[str, str]:
        return {}

    app.mount("/mounted", sub)
    problems = undeclared(app)
    assert "GET /api/v1/forgotten: no rule" in problems
    assert "POST /mounted/inside: no rule" in problems


def _samples(world: World) -> dict[tuple[str, str], dict[str, Any]]:
    """A valid request per operation (what an admitted caller could send)."""
    alice_jobs, prod_jobs = world.jobs_of(world.alice_task), world.jobs_of(world.prod_task)
    fence = {"job_id": alice_jobs[0], "attempt": 1, "lease_token": "0" * 32,
             "state": "running"}
    return {
        ("GET", "/openapi.json"): {},
        ("GET", "/healthz"): {},
        ("GET", "/readyz"): {},
        ("GET", "/api/v1/ping"): {},
        ("POST", "/api/v1/pilot/acquire_jobs"): {
            "json": {"queue": "SITE_A_PROD", "pilot_id": "matrix", "n_jobs": 1}},
        ("POST", "/api/v1/pilot/update_job"): {"json": fence},
        ("POST", "/api/v1/pilot/update_jobs_bulk"): {"json": {"updates": [fence]}},
        ("POST", "/api/v1/pilot/get_command"): {
            "json": {k: fence[k] for k in ("job_id", "attempt", "lease_token")}},
        ("POST", "/api/v1/task/submit"): {"json": {k: v for k, v in _spec().items()}},
        ("GET", "/api/v1/task/list"): {},
        ("GET", "/api/v1/task/{task_id}"): {"path": {"task_id": world.alice_task}},
        ("POST", "/api/v1/task/kill"): {"json": {"task_id": world.alice_task}},
        ("POST", "/api/v1/task/reassign"): {"json": {"task_id": world.alice_task}},
        ("POST", "/api/v1/task/priority"): {"json": {"task_id": world.alice_task,
                                                     "priority": 700}},
        ("GET", "/api/v1/job/list"): {},
        ("GET", "/api/v1/job/{job_id}"): {"path": {"job_id": prod_jobs[0]}},
        ("POST", "/api/v1/job/kill"): {"json": {"job_ids": alice_jobs[1:2]}},
        ("POST", "/api/v1/job/reassign"): {"json": {"job_ids": alice_jobs[2:3]}},
        ("GET", "/api/v1/summary"): {},
        ("POST", "/api/v1/ddm/event"): {
            "json": {"dedup_key": "matrix", "outcome": "done", "external_id": "none"}},
        # hermes' plain JSON form; this world's DDM is local, so an admitted caller gets 400
        ("POST", "/api/v1/ddm/rucio/messages"): {"json": [_hermes_message()]},
        ("POST", "/api/v1/ddm/rucio/_bulk"): {"json": [_hermes_message()]},
        ("GET", "/api/v1/factory/demand"): {"params": {"queue": "SITE_A_PROD"}},
        ("POST", "/api/v1/factory/pilot_token"): {"json": {"queues": ["SITE_A_PROD"]}},
        ("GET", "/api/v1/staging/list"): {},
        ("GET", "/metrics"): {},
        ("POST", "/api/v1/staging/cancel"): {"json": {"request_ids": [1]}},
        ("POST", "/api/v1/staging/priority"): {"json": {"request_ids": [1], "priority": 5}},
        ("GET", "/api/v1/job/{job_id}/explain"): {"path": {"job_id": prod_jobs[0]}},
        ("GET", "/api/v1/task/{task_id}/explain"): {"path": {"task_id": world.alice_task}},
        ("POST", "/api/v1/task/dry_run"): {"json": _spec()},
        ("GET", "/api/v1/task/{task_id}/progress"): {"path": {"task_id": world.alice_task}},
        ("GET", "/api/v1/job/{job_id}/log"): {"path": {"job_id": prod_jobs[0]}},
        ("GET", "/api/v1/dataset/list"): {},
        ("GET", "/api/v1/dataset/{scope}/{name}"): {"path": {"scope": "matrix", "name": "raw"}},
        ("GET", "/api/v1/request/list"): {},
        ("GET", "/api/v1/site/list"): {},
        ("GET", "/api/v1/site/{name}"): {"path": {"name": "SITE_A"}},
        ("GET", "/api/v1/queue/list"): {},
        ("GET", "/api/v1/queue/{name}"): {"path": {"name": "SITE_A_PROD"}},
        ("POST", "/api/v1/replica/declare_bad"): {"json": {
            "replicas": [{"did": "auth:nosuchfile", "endpoint": "SITE_A_DISK"}],
            "reason": "matrix"}},
        **{("GET", f"{root}{p}"): {"path": {"task_id": world.alice_task,
                                             "job_id": prod_jobs[0], "name": "SITE_A",
                                             "dataset_id": 1}}
           for root, pages in (("/api/v1/monitor/", MONITOR_API), ("/monitor/", MONITOR_PAGES))
           for p in pages},
        ("GET", "/monitor/login"): {},
        ("POST", "/monitor/login"): {  # a good token: the cookie is set, on to the next page
            "data": {"token": world.headers("reader")["Authorization"].split()[1],
                     "next": "/monitor/login"}},
        ("POST", "/monitor/logout"): {},
        ("GET", "/monitor/static/{name}"): {"path": {"name": "monitor.js"}},
    }


def _hermes_message() -> dict[str, Any]:
    return {"id": "matrix", "event_type": "RULE_OK", "created_at": "2026-12-01 17:00:00",
            "payload": {"scope": "matrix", "name": "none", "rule_id": "f" * 32}}


def _spec() -> dict[str, Any]:
    from world_helpers import spec

    return spec("matrix")


def _call(world: World, method: str, path: str, sample: dict[str, Any],
          headers: dict[str, str]) -> Any:
    url = path.format(**sample.get("path", {}))
    return world.api.request(method, url, json=sample.get("json"), data=sample.get("data"),
                             params=sample.get("params"), headers=headers)


@pytest.mark.parametrize("operation", sorted(POLICY), ids=lambda op: f"{op[0]} {op[1]}")
def test_role_matrix(world: World, operation: tuple[str, str]) -> None:
    method, path = operation
    sample = _samples(world)[operation]
    admitted = POLICY[operation]
    if admitted is None:  # public: answers without a token
        assert _call(world, method, path, sample, {}).status_code == 200
        return
    before = snapshot(world.db)
    for headers in ({}, {"Authorization": "Bearer not-a-jwt"},
                    {"Authorization": "Basic bm9ib2R5Om5vdGhpbmc="}):
        reply = _call(world, method, path, sample, headers)
        assert reply.status_code == 401, (headers, reply.text)
        assert reply.json()["success"] is False
    for role in sorted(ALL - admitted):
        reply = _call(world, method, path, sample, world.headers(role))
        assert reply.status_code == 403, (role, reply.text)
        body = reply.json()
        assert body["success"] is False and f"role {role} may not" in body["message"]
        assert snapshot(world.db) == before, f"a refused call as {role} changed the catalog"
    for role in sorted(admitted):
        reply = _call(world, method, path, sample, world.headers(role))
        assert reply.status_code not in (401, 403), (role, reply.text)


# ---------------------------------------------------------------- object-level bindings
def test_analyst_manages_only_own_tasks_and_is_the_owner_of_what_they_submit(
        world: World) -> None:
    api, analyst = world.api, world.headers("analyst")
    prod_jobs = world.jobs_of(world.prod_task)
    before = snapshot(world.db)
    for path, body in (("/api/v1/task/kill", {"task_id": world.prod_task}),
                       ("/api/v1/task/reassign", {"task_id": world.prod_task}),
                       ("/api/v1/task/priority", {"task_id": world.prod_task,
                                                  "priority": 1}),
                       ("/api/v1/job/kill", {"job_ids": prod_jobs[:1]}),
                       ("/api/v1/job/reassign", {"job_ids": prod_jobs[:1]}),
                       ("/api/v1/job/kill", {"job_ids": [*world.jobs_of(world.alice_task),
                                                         prod_jobs[0]]})):
        reply = api.post(path, json=body, headers=analyst)
        assert reply.status_code == 403, (path, reply.text)
        assert "not yours" in reply.json()["message"]
        assert snapshot(world.db) == before
    # an analyst cannot submit in another's name; the header of old is ignored
    reply = api.post("/api/v1/task/submit", json={**_spec(), "owner": "bob"}, headers=analyst)
    assert reply.status_code == 403 and snapshot(world.db) == before
    reply = api.post("/api/v1/task/submit", json=_spec(),
                     headers={**analyst, "X-Dawms-User": "bob"})
    assert reply.status_code == 200
    task = api.get(f"/api/v1/task/{reply.json()['data']['task_id']}", headers=analyst)
    assert task.json()["data"]["owner"] == "alice"
    # and their own task they may kill; the history names them
    reply = api.post("/api/v1/task/kill", json={"task_id": world.alice_task}, headers=analyst)
    assert reply.status_code == 200, reply.text
    history = api.get(f"/api/v1/task/{world.alice_task}", headers=analyst).json()["data"]
    assert history["state"] == "aborted"
    assert history["history"][-1]["actor"] == "user:alice"


def test_production_manages_any_task(world: World) -> None:
    reply = world.api.post("/api/v1/task/kill", json={"task_id": world.alice_task},
                           headers=world.headers("production"))
    assert reply.status_code == 200


def _queue_of(world: World, job_id: int) -> str:
    with world.db.session() as s:
        return s.scalar(select(Queue.name).join(Job, Job.queue_id == Queue.id)
                        .where(Job.id == job_id))


def test_pilot_acquires_and_reports_only_jobs_of_its_queues(world: World, make_token) -> None:
    api = world.api
    site_c = {"Authorization": f"Bearer {make_token('pilot', 'c', ['SITE_C_PROD'])}"}
    before = snapshot(world.db)
    reply = api.post("/api/v1/pilot/acquire_jobs", json={"queue": "SITE_A_PROD",
                                                         "pilot_id": "thief"}, headers=site_c)
    assert reply.status_code == 403 and "not bound to queue 'SITE_A_PROD'" in reply.text
    assert snapshot(world.db) == before
    # the right pilot takes a job; another queue's pilot holding its lease still cannot report
    got = api.post("/api/v1/pilot/acquire_jobs", json={"queue": "SITE_A_PROD",
                                                       "pilot_id": "a"},
                   headers=world.headers("pilot")).json()["data"]["jobs"][0]
    assert _queue_of(world, got["job_id"]) == "SITE_A_PROD"
    fence = {"job_id": got["job_id"], "attempt": got["attempt"],
             "lease_token": got["lease_token"]}
    taken = snapshot(world.db)
    reply = api.post("/api/v1/pilot/update_job", json={**fence, "state": "failed",
                                                       "error_category": "pilot"},
                     headers=site_c)
    assert reply.status_code == 403 and snapshot(world.db) == taken
    reply = api.post("/api/v1/pilot/update_jobs_bulk",
                     json={"updates": [{**fence, "state": "failed"}]}, headers=site_c)
    assert reply.status_code == 200
    assert reply.json()["data"][0]["success"] is False
    assert "not of a queue" in reply.json()["data"][0]["message"]
    assert snapshot(world.db) == taken
    # the lease stays the fence for the right pilot
    reply = api.post("/api/v1/pilot/update_job",
                     json={**fence, "lease_token": "f" * 32, "state": "running"},
                     headers=world.headers("pilot"))
    assert reply.status_code == 409 and snapshot(world.db) == taken
    reply = api.post("/api/v1/pilot/update_job", json={**fence, "state": "running"},
                     headers=world.headers("pilot"))
    assert reply.status_code == 200


def test_factory_sees_and_mints_only_for_its_queues(world: World) -> None:
    api, factory = world.api, world.headers("factory")
    before = snapshot(world.db)
    for reply in (api.get("/api/v1/factory/demand", params={"queue": ["SITE_A_PROD",
                                                                        "SITE_B_PROD"]},
                          headers=factory),
                  api.post("/api/v1/factory/pilot_token",
                           json={"queues": ["SITE_A_PROD", "SITE_B_PROD"]}, headers=factory)):
        assert reply.status_code == 403 and "SITE_B_PROD" in reply.json()["message"]
    assert snapshot(world.db) == before
    demand = api.get("/api/v1/factory/demand", params={"queue": "SITE_A_PROD"},
                     headers=factory).json()["data"]
    with world.db.session() as s:  # the broker picks among the best few: count, not assume
        activated = s.scalar(select(func.count()).select_from(Job).join(
            Queue, Queue.id == Job.queue_id).where(Queue.name == "SITE_A_PROD",
                                                   Job.state == "activated"))
    assert activated > 0 and demand["SITE_A_PROD"]["activated"] == activated
    minted = api.post("/api/v1/factory/pilot_token",
                      json={"queues": ["SITE_A_PROD"], "lifetime_s": 10 * 86400},
                      headers=factory).json()["data"]
    import jwt

    claims = jwt.decode(minted["token"], options={"verify_signature": False})
    assert claims["role"] == "pilot" and claims["queues"] == ["SITE_A_PROD"]
    assert claims["exp"] - claims["iat"] == 2 * 86400  # capped by DAWMS_PILOT_TOKEN_MAX_S
    pilot = {"Authorization": f"Bearer {minted['token']}"}
    assert api.post("/api/v1/pilot/acquire_jobs", json={"queue": "SITE_A_PROD",
                                                        "pilot_id": "minted"},
                    headers=pilot).status_code == 200
    # a minted pilot token cannot mint further
    assert api.post("/api/v1/factory/pilot_token", json={"queues": ["SITE_A_PROD"]},
                    headers=pilot).status_code == 403
