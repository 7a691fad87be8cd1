"""Explain, predict, escalate, dry-run: each blocking reason from a real scenario.

Every scenario is built the way it happens (site files, uploaded data, the real
refiner, broker, transfer worker and carousel on a frozen clock) on SQLite and on
PostgreSQL, and ``explain_job`` / ``explain_task`` must name the layer and the
reason: no queue passes (and why each one refuses), files still copying with the
last failure of a file, jobs of higher priority ahead with the last pilot seen,
the place in the carousel queue with the tape quota full. Stuck requests escalate
(rebrokered, then failed ``ddm_stuck``); the task's estimate follows its
throughput; a dry run writes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text

from dawms import carousel
from dawms.catalog.db import Database
from dawms.catalog.models import DataRequest, Job, Queue, StateHistory, StorageEndpoint
from dawms.catalog.site_config import sync, validate
from dawms.catalog.transition import claim_jobs
from dawms.ddm_bridge.local import LocalDDM, transfer
from dawms.ddm_bridge.local.tape import SimClock, TapeConfig, TapeLibrary
from dawms.scheduler import broker, refiner, stuck
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.dryrun import dry_run
from dawms.scheduler.explain import explain_job, explain_task
from dawms.scheduler.predict import task_prediction
from dawms.scheduler.task import TaskSpecError, submit
from dawms.storage.paths import lfn2pfn
from factories import make_dataset, report, site_config, write_outputs

pytestmark = pytest.mark.explain
# requests take their creation time from the wall clock: each test's frozen clock
# starts there (set again before every test, not once at import)
T0 = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(autouse=True)
def _clock_starts_now() -> None:
    global T0
    T0 = datetime.now(UTC).replace(microsecond=0)
CFG = SchedulerConfig()


def spec(name: str, did: str, **extra: object) -> dict:
    return {"name": name, "transformation": "true {inputs}", "input_datasets": [did],
            "output_dataset": f"t:{name}.{{task_id}}", "split": {"files_per_job": 2},
            **extra}


def setup_sites(db: Database, root: Path, **per_queue: dict) -> None:
    cfg = site_config(root / "storage", ["SITE_A", "SITE_B", "SITE_C"])
    for q in cfg["queue"]:
        q.update(per_queue.get(q["name"], {}))
    with db.session() as s:
        sync(s, validate(cfg), actor="test", source="test")


def define(db: Database, ddm: LocalDDM, task_spec: dict, now: datetime | None = None) -> int:
    now = now or T0
    with db.session() as s:
        task_id = submit(s, task_spec, ddm, now=now).id
    assert refiner.run_once(db, ddm, now) > 0
    return task_id


def jobs_of(db: Database, task_id: int) -> list[Job]:
    with db.session() as s:
        return list(s.scalars(select(Job).where(Job.task_id == task_id).order_by(Job.id)))


def explain(db: Database, job_id: int, now: datetime, cfg: SchedulerConfig = CFG):
    with db.session() as s:
        return explain_job(s, job_id, now, cfg)


# ------------------------------------------------------------------ waiting
def test_waiting_names_every_queue_and_why_it_refuses(db: Database, ddm: LocalDDM,
                                                      tmp_path: Path) -> None:
    setup_sites(db, tmp_path, SITE_A_PROD={"status": "offline"},
                SITE_B_PROD={"memory_mb": 4000},
                SITE_C_PROD={"max_queued": 1, "memory_mb": 16000})
    make_dataset(db, ddm, "t:raw", "SITE_C_DISK", 4, tmp_path)
    first = define(db, ddm, spec("first", "t:raw", resources={"memory_mb": 8000},
                                 split={"files_per_job": 4}))
    assert broker.run_once(db, ddm, CFG, T0) == 1  # only SITE_C takes 8000 MB: it fills
    second = define(db, ddm, spec("second", "t:raw", resources={"memory_mb": 8000}))
    broker.run_once(db, ddm, CFG, T0)
    (job,) = jobs_of(db, second)[:1]
    assert job.state == "waiting"
    e = explain(db, job.id, T0 + timedelta(minutes=5))
    assert e.layer == "broker"
    assert e.reason == ("waiting: no queue passes (SITE_A_PROD: queue is offline; "
                        "SITE_B_PROD: needs memory_mb=8000, queue has 4000; "
                        "SITE_C_PROD: 1 queued >= max_queued 1)")
    assert "online" in e.unblock and "backlog" in e.unblock
    assert e.details["broker_said"].startswith("no queue passes")
    # the task groups its jobs by the same reason
    with db.session() as s:
        t = explain_task(s, second, T0 + timedelta(minutes=5))
    assert t["blockers"][0]["layer"] == "broker" and t["blockers"][0]["jobs"] == 2
    assert t["summary"].startswith("defined: 2 jobs held in broker: waiting: no queue passes")
    # once the backlog drains, the answer changes with it
    with db.session() as s:
        s.execute(text("UPDATE queue SET max_queued = 10 WHERE name = 'SITE_C_PROD'"))
    e = explain(db, job.id, T0 + timedelta(minutes=6))
    assert e.reason.startswith("waiting: SITE_C_PROD can take it now")
    assert first != second


# ------------------------------------------------------------------ assigned
def test_assigned_names_files_copying_the_request_and_the_last_file_failure(
        db: Database, ddm: LocalDDM, tmp_path: Path) -> None:
    setup_sites(db, tmp_path, SITE_A_PROD={"status": "brokeroff"},
                SITE_C_PROD={"status": "offline"})
    paths = make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 2, tmp_path)
    task_id = define(db, ddm, spec("t", "t:raw"))
    assert broker.run_once(db, ddm, CFG, T0) == 1
    (job,) = jobs_of(db, task_id)
    assert job.state == "assigned"
    with db.session() as s:
        req = s.scalar(select(DataRequest))
    e = explain(db, job.id, T0 + timedelta(hours=5, minutes=3))
    assert e.layer == "data"
    assert e.reason == (f"assigned: 2 of 2 input files still copying to SITE_B_DISK: "
                        f"request {req.id} requested, 0 of 2 files done, 5 h without progress")
    # a corrupt source (same size, other bytes): the worker records why, per file
    src = Path(lfn2pfn(f"file://{tmp_path / 'storage' / 'SITE_A' / 'disk'}", "t",
                       paths[0].name).removeprefix("file://"))
    assert src.exists()
    src.write_bytes(bytes(b ^ 0xFF for b in src.read_bytes()))
    transfer.carry_out(db, T0)  # copies; ends nothing (poll reports it)
    e = explain(db, job.id, T0 + timedelta(hours=6))
    assert f"last failure on file t:{paths[0].name}: " in e.reason
    assert "source has size 2048 adler32" in e.reason
    assert e.details["requests"][0]["last_failures"][0]["file"] == f"t:{paths[0].name}"


# ------------------------------------------------------------------ activated
def test_activated_counts_jobs_ahead_and_the_last_pilot_seen(db: Database, ddm: LocalDDM,
                                                             tmp_path: Path) -> None:
    setup_sites(db, tmp_path, SITE_B_PROD={"status": "offline"},
                SITE_C_PROD={"status": "offline"})
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 8, tmp_path)
    high = define(db, ddm, spec("high", "t:raw", priority=900))
    low = define(db, ddm, spec("low", "t:raw", priority=100))
    broker.run_once(db, ddm, CFG, T0)
    assert {j.state for j in jobs_of(db, high) + jobs_of(db, low)} == {"activated"}
    with db.session() as s:
        qid = s.scalar(select(Queue.id).where(Queue.name == "SITE_A_PROD"))
        (claimed,) = claim_jobs(s, qid, 1, "pilot-7", now=T0)  # the first high one
    later = T0 + timedelta(minutes=40)
    target = jobs_of(db, low)[1]
    e = explain(db, target.id, later)
    assert e.layer == "dispatch"
    # 3 high-priority jobs left + the low one before it
    assert e.reason == ("activated: 4 jobs of higher priority ahead on SITE_A_PROD, last pilot "
                        "seen 40 min ago")
    assert e.unblock == "a pilot of SITE_A_PROD asks for work"
    # the claimed one is with its pilot
    p = explain(db, claimed[0], later)
    assert p.layer == "pilot" and "pilot-7" in p.reason and "40 min ago" in p.reason


# ------------------------------------------------------------------ staging
def test_staging_gives_the_place_in_the_carousel_queue_and_the_full_quota(
        db: Database, tmp_path: Path) -> None:
    cfg = site_config(tmp_path / "storage", ["SITE_A", "T1"])
    cfg["endpoint"].append({"name": "T1_TAPE", "site": "T1", "kind": "tape",
                            "url": f"file://{tmp_path / 'storage' / 'T1' / 'tape'}",
                            "staging_buffer": "T1_DISK", "staging_max_files": 4,
                            "staging_max_percent": 50})
    with db.session() as s:
        sync(s, validate(cfg), actor="test", source="test")
    ddm = LocalDDM()
    ddm.library = TapeLibrary(TapeConfig(drives=1, mount_s=10, per_file_s=1, seek_s=2,
                                         read_bytes_s=None, cartridge_bytes=4 * 2048),
                              clock=SimClock())
    make_dataset(db, ddm, "t:rawA", "T1_TAPE", 4, tmp_path)
    make_dataset(db, ddm, "t:rawB", "T1_TAPE", 4, tmp_path, seed=2)
    first = define(db, ddm, spec("a", "t:rawA", priority=900))
    second = define(db, ddm, spec("b", "t:rawB", priority=100))
    carousel.run_once(db, ddm, T0)  # releases 2 files (50 % of 4) of the first request
    job = jobs_of(db, second)[0]
    e = explain(db, job.id, T0 + timedelta(minutes=1))
    assert e.layer == "carousel"
    with db.session() as s:
        from dawms.catalog.models import StagingRequest

        r1, r2 = (s.scalar(select(StagingRequest.id).where(StagingRequest.task_id == t))
                  for t in (first, second))
    assert e.reason == (f"staging: 2 of 2 input files still on tape (queued 2): request {r2} "
                        f"queued: position 2 in the carousel queue for T1_TAPE; tape quota "
                        f"full (2 of 2 files staging) until request {r1} frees room")
    with db.session() as s:
        t = explain_task(s, second, T0 + timedelta(minutes=1))
    assert t["staging"][0]["position"] == 2 and t["staging"][0]["quota_full"]


# ------------------------------------------------------------------ stuck
def test_a_stuck_request_rebrokers_its_jobs_then_fails_them(db: Database, ddm: LocalDDM,
                                                            tmp_path: Path) -> None:
    setup_sites(db, tmp_path, SITE_A_PROD={"status": "brokeroff"})
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 2, tmp_path)
    task_id = define(db, ddm, spec("t", "t:raw"))
    broker.run_once(db, ddm, CFG, T0)
    (job,) = jobs_of(db, task_id)
    cfg = SchedulerConfig(stuck_after_s=3600, stuck_max=2, stuck_moves_max=1)
    with db.session() as s:
        first_req = s.scalar(select(DataRequest))
    now = first_req.created_at  # the wall clock's, not the module's T0
    assert stuck.run_once(db, cfg, now) == 0
    now += timedelta(minutes=59)
    assert stuck.run_once(db, cfg, now) == 0
    with db.session() as s:
        assert s.get(DataRequest, first_req.id).stuck_count == 0
    now += timedelta(minutes=2)
    assert stuck.run_once(db, cfg, now) == 0  # one stuck period
    with db.session() as s:
        assert s.get(DataRequest, first_req.id).stuck_count == 1
    e = explain(db, job.id, now + timedelta(minutes=1), cfg)
    assert "stuck 1 of 2" in e.reason
    now += timedelta(hours=1)
    assert stuck.run_once(db, cfg, now) == 1  # the second: given up, the job moves
    with db.session() as s:
        req = s.get(DataRequest, first_req.id)
        old = s.get(Job, job.id)
        succ = s.scalar(select(Job).where(Job.task_id == task_id, Job.id != job.id))
        assert req.state == "cancelled" and req.error.startswith("stuck: no file arrived")
        assert old.state == "closed"
        gone = s.scalar(select(Queue.name).where(Queue.id == old.queue_id))
        assert succ.state == "defined" and succ.attempt == old.attempt
        assert succ.broker_hint == {"exclude": [gone], "stuck_moves": 1}
    broker.run_once(db, ddm, CFG, now)
    with db.session() as s:
        succ = s.get(Job, succ.id)
        assert succ.state == "assigned"
        assert s.scalar(select(Queue.name).where(Queue.id == succ.queue_id)) != gone
    for _ in range(2):  # stuck again, twice: this time it fails
        now += timedelta(hours=1, minutes=1)
        stuck.run_once(db, cfg, now)
    with db.session() as s:
        succ = s.get(Job, succ.id)
        assert (succ.state, succ.error_category) == ("failed", "ddm_stuck")
        assert "no file arrived for 3600 s" in succ.error_diag
        # not retried: another attempt would wait on the same data
        assert s.scalar(select(func.count()).select_from(Job).where(
            Job.task_id == task_id)) == 2
    e = explain(db, succ.id, now)
    assert e.layer == "done" and e.reason.startswith("failed (ddm_stuck)")


def test_progress_restarts_the_stuck_clock(db: Database, ddm: LocalDDM, tmp_path: Path) -> None:
    setup_sites(db, tmp_path, SITE_A_PROD={"status": "brokeroff"})
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 2, tmp_path)
    define(db, ddm, spec("t", "t:raw"))
    broker.run_once(db, ddm, CFG, T0)
    cfg = SchedulerConfig(stuck_after_s=3600, stuck_max=2)
    with db.session() as s:
        rid, made = s.execute(select(DataRequest.id, DataRequest.created_at)).one()
        s.execute(text("UPDATE data_request SET files_done = 1 WHERE id = :i"), {"i": rid})
    stuck.run_once(db, cfg, made + timedelta(minutes=50))  # progress seen at 50 min
    stuck.run_once(db, cfg, made + timedelta(minutes=100))  # 50 min later: not stuck
    with db.session() as s:
        assert s.get(DataRequest, rid).stuck_count == 0
    stuck.run_once(db, cfg, made + timedelta(minutes=111))
    with db.session() as s:
        assert s.get(DataRequest, rid).stuck_count == 1


# ------------------------------------------------------------------ predict
def test_the_estimate_follows_the_tasks_throughput(db: Database, ddm: LocalDDM,
                                                   tmp_path: Path) -> None:
    setup_sites(db, tmp_path, SITE_B_PROD={"status": "offline"},
                SITE_C_PROD={"status": "offline"})
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 8, tmp_path)
    task_id = define(db, ddm, spec("t", "t:raw", split={"files_per_job": 1}))
    broker.run_once(db, ddm, CFG, T0)
    with db.session() as s:
        p = task_prediction(s, task_id, T0)
    assert p["eta"] is None and "scout" in p["basis"]
    assert (p["jobs_total"], p["files_total"], p["jobs_done"]) == (8, 8, 0)
    with db.session() as s:
        qid = s.scalar(select(Queue.id).where(Queue.name == "SITE_A_PROD"))
    # 4 pieces, one after the other, 10 minutes each
    for i in range(4):
        start = T0 + timedelta(minutes=10 * i)
        with db.session() as s:
            ((jid, att, tok, spec_),) = claim_jobs(s, qid, 1, "p", now=start)
        fence = {"job_id": jid, "attempt": att, "lease_token": tok}
        report(db, ddm, fence, "running", start)
        report(db, ddm, fence, "finished", start + timedelta(minutes=10), exit_code=0,
               outputs=write_outputs(spec_))
    now = T0 + timedelta(minutes=40)
    with db.session() as s:
        p = task_prediction(s, task_id, now)
    assert (p["jobs_done"], p["files_done"], p["fraction_done"]) == (4, 4, 0.5)
    # 4 pieces in 40 min: the 4 left take 40 min more; ±1/sqrt(4) on the rate
    assert datetime.fromisoformat(p["eta"]) == now + timedelta(minutes=40)
    assert datetime.fromisoformat(p["eta_low"]) == now + timedelta(minutes=40 / 1.5)
    assert datetime.fromisoformat(p["eta_high"]) == now + timedelta(minutes=80)


# ------------------------------------------------------------------ dry run
def _snapshot(db: Database) -> dict[str, list]:
    with db.engine.connect() as conn:
        return {t: sorted(map(tuple, conn.execute(text(f"SELECT * FROM {t}")).all()), key=repr)
                for t in inspect(db.engine).get_table_names()}


def test_a_dry_run_plans_the_task_and_writes_nothing(db: Database, ddm: LocalDDM,
                                                     tmp_path: Path) -> None:
    cfg = site_config(tmp_path / "storage", ["SITE_A", "SITE_B", "T1"])
    cfg["endpoint"].append({"name": "T1_TAPE", "site": "T1", "kind": "tape",
                            "url": f"file://{tmp_path / 'storage' / 'T1' / 'tape'}",
                            "staging_buffer": "T1_DISK"})
    cfg["queue"][0]["status"] = "brokeroff"  # SITE_A's data must move to SITE_B
    cfg["queue"][2]["memory_mb"] = 1000
    with db.session() as s:
        sync(s, validate(cfg), actor="test", source="test")
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 4, tmp_path)
    make_dataset(db, ddm, "t:tape", "T1_TAPE", 2, tmp_path, seed=3)
    before = _snapshot(db)
    files_before = sorted(p for p in (tmp_path / "storage").rglob("*"))
    plan = dry_run(db, ddm, {**spec("t", "t:raw"), "input_datasets": ["t:raw", "t:tape"]},
                   owner="alice")
    assert _snapshot(db) == before
    assert sorted(p for p in (tmp_path / "storage").rglob("*")) == files_before
    assert plan["written"] is False and plan["jobs_total"] == 3
    assert plan["jobs_by_queue"] == {"SITE_B_PROD": 3}
    assert (plan["files_to_move"], plan["bytes_to_move"]) == (4, 4 * 2048)
    assert (plan["files_from_tape"], plan["bytes_from_tape"], plan["tapes"]) == \
        (2, 2 * 2048, ["T1_TAPE"])
    assert plan["queues"] == {"SITE_A_PROD": "queue is brokeroff", "SITE_B_PROD": "",
                              "T1_PROD": "needs memory_mb=2000, queue has 1000"}
    job1 = plan["jobs"][0]
    assert job1["weights"]["SITE_A_PROD"] == "queue is brokeroff"
    assert isinstance(job1["weights"]["SITE_B_PROD"], float)
    assert plan["task"]["owner"] == "alice"
    # an invalid spec is refused as a submission would be, and nothing is written
    with pytest.raises(TaskSpecError, match="split.files_per_job"):
        dry_run(db, ddm, {**spec("t", "t:raw"), "split": {"files_per_job": -1}})
    with pytest.raises(TaskSpecError, match="not known"):
        dry_run(db, ddm, spec("t", "nosuch:ds"))
    assert _snapshot(db) == before
    with db.session() as s:
        assert not s.scalar(select(func.count()).select_from(StateHistory).where(
            StateHistory.entity == "task"))
        assert s.scalar(select(func.count()).select_from(StorageEndpoint)) == 4


class _CachingDDM(LocalDDM):
    """A DDM that writes while it lists (as the Rucio DDM refreshes its cache) and
    records any call that would change the DDM."""

    def __init__(self) -> None:
        super().__init__()
        self.changes: list[str] = []

    def list_files(self, session, did):  # type: ignore[no-untyped-def]
        from dawms.ddm_bridge.events import record

        record(session, source="cache", dedup_key=f"listed:{did}", kind="listed",
               payload={}, now=T0)
        return super().list_files(session, did)

    def request_replication(self, *a, **kw):  # type: ignore[no-untyped-def]
        self.changes.append("request_replication")
        return super().request_replication(*a, **kw)

    def subscribe(self, *a, **kw):  # type: ignore[no-untyped-def]
        self.changes.append("subscribe")
        return super().subscribe(*a, **kw)


def test_a_dry_run_keeps_nothing_the_ddm_cached_and_asks_it_for_nothing(
        db: Database, tmp_path: Path) -> None:
    setup_sites(db, tmp_path, SITE_A_PROD={"status": "brokeroff"})
    ddm = _CachingDDM()
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 4, tmp_path)
    before = _snapshot(db)
    plan = dry_run(db, ddm, spec("t", "t:raw"))
    assert plan["files_to_move"] == 4 and ddm.changes == []
    assert _snapshot(db) == before  # the cache rows written while listing are gone
