"""The broker: queue filters, PanDA's weights, going to the data, and the set-up step.

The pure parts (``fits``, ``data_weight``, the load weight) are checked on
hand-computed numbers; the rest runs the refiner and the broker on both database
backends with real files on ``file://`` endpoints, and checks which queue got
each job, which data requests were made and how jobs link to them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import (
    DataRequest,
    DataRequestFile,
    Job,
    JobFile,
    Queue,
    StateHistory,
    StorageEndpoint,
    Task,
)
from dawms.catalog.site_config import ConfigError, sync, validate
from dawms.ddm_bridge.local import LocalDDM, transfer
from dawms.scheduler import activator, broker, refiner
from dawms.scheduler.broker import QueueLoad, data_weight, fits
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.task import submit
from factories import make_dataset, site_config

CFG = SchedulerConfig()
SITES = ["SITE_A", "SITE_B", "SITE_C"]


def spec(name: str, did: str, **extra: object) -> dict:
    return {"name": name, "transformation": "true {inputs}", "input_datasets": [did],
            "output_dataset": f"t:{name}.{{task_id}}", "split": {"files_per_job": 2},
            **extra}


def define(db: Database, ddm: LocalDDM, task_spec: dict) -> int:
    with db.session() as s:
        task_id = submit(s, task_spec, ddm).id
    assert refiner.run_once(db, ddm) > 0
    return task_id


def resync(db: Database, tmp_path: Path, status: dict[str, str] | None = None,
           **queue: object) -> None:
    cfg = site_config(tmp_path / "storage", SITES, **queue)
    for q in cfg["queue"]:
        if q["name"] in (status or {}):
            q["status"] = status[q["name"]]
    with db.session() as s:
        sync(s, validate(cfg), actor="test", source="test")


def queue_of(s, job_id: int) -> str:  # type: ignore[no-untyped-def]
    return s.scalar(select(Queue.name).join(Job, Job.queue_id == Queue.id)
                    .where(Job.id == job_id))


# ------------------------------------------------------------------- fits
def _queue(**kw: object) -> Queue:
    base = {"name": "Q", "status": "online", "cores": 8, "memory_mb": 16000,
            "max_walltime_s": 86400, "max_disk_mb": 50000}
    return Queue(**{**base, **kw})


def _job(**kw: object) -> Job:
    return Job(**{"cores": 8, "memory_mb": 16000, "walltime_s": 86400, "disk_mb": 50000, **kw})


@pytest.mark.parametrize(("queue_kw", "job_kw", "why"), [
    ({"status": "offline"}, {}, "queue is offline"),
    ({"status": "brokeroff"}, {}, "queue is brokeroff"),
    ({"status": "test"}, {}, "queue is test"),
    ({}, {"cores": 9}, "needs cores=9, queue has 8"),
    ({}, {"memory_mb": 16001}, "needs memory_mb=16001, queue has 16000"),
    ({}, {"walltime_s": 86401}, "needs walltime_s=86401, queue has 86400"),
    ({}, {"disk_mb": 50001}, "needs disk_mb=50001, queue has 50000"),
])
def test_fits_refuses_with_the_reason(queue_kw: dict, job_kw: dict, why: str) -> None:
    assert fits(_queue(**queue_kw), _job(**job_kw)) == why


def test_fits_accepts_a_job_at_exactly_the_limits() -> None:
    assert fits(_queue(), _job()) == ""
    assert fits(_queue(), _job(cores=1, memory_mb=1, walltime_s=1, disk_mb=1)) == ""


# ------------------------------------------------------------------- weights
SIZES = {1: 100, 2: 300, 3: 600}  # 1000 bytes in all
HELD = {1: [10], 2: [20], 3: [10, 20]}  # file id -> endpoint ids with a disk copy


@pytest.mark.parametrize(("endpoints", "weight", "missing"), [
    ([10], (700 + 1000) / (1000 * (1 / 100 + 1)), [2]),  # 1.68317
    ([20], (900 + 1000) / (1000 * (1 / 100 + 1)), [1]),  # 1.88119
    ([10, 20], (1000 + 1000) / (1000 * 1), []),  # 2.0: everything local
    ([30], (0 + 1000) / (1000 * (3 / 100 + 1)), [1, 2, 3]),  # 0.97087: nothing local
])
def test_data_weight_is_pandas_formula(endpoints: list[int], weight: float,
                                       missing: list[int]) -> None:
    w, miss = data_weight(SIZES, HELD, endpoints)
    assert w == pytest.approx(weight)
    assert sorted(miss) == missing


def test_data_weight_hand_numbers() -> None:
    assert data_weight(SIZES, HELD, [10])[0] == pytest.approx(1.683168, rel=1e-6)
    assert data_weight(SIZES, HELD, [30])[0] == pytest.approx(0.970874, rel=1e-6)
    # a queue holding more of the bytes always weighs more
    assert data_weight(SIZES, HELD, [20])[0] > data_weight(SIZES, HELD, [10])[0]


def test_load_weight_is_pandas_formula() -> None:
    # (running+1) / ((activated+assigned+starting+defined+10) * max(1, min(2, asg/act)))
    assert QueueLoad(running=4, activated=2, assigned=6, starting=1, defined=3).weight() \
        == pytest.approx(5 / (22 * 2))  # ratio 3 capped at 2
    assert QueueLoad(running=9, activated=4, assigned=6).weight() \
        == pytest.approx(10 / (20 * 1.5))
    assert QueueLoad().weight() == pytest.approx(1 / 10)
    assert QueueLoad(activated=5, assigned=1).weight() == pytest.approx(1 / 16)  # ratio < 1


# ------------------------------------------------------------------- brokerage
def test_jobs_go_to_the_queue_holding_their_inputs(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "t:raw", "SITE_B_DISK", 4, tmp_path)
    task_id = define(db, ddm, spec("near", "t:raw"))
    assert broker.run_once(db, ddm, CFG) == 2
    with db.session() as s:
        jobs = list(s.scalars(select(Job)))
        assert {queue_of(s, j.id) for j in jobs} == {"SITE_B_PROD"}
        assert {j.state for j in jobs} == {"activated"}
        assert s.scalar(select(func.count()).select_from(DataRequest)) == 0
        for j in jobs:
            assert [f["urls"][0].split("/storage/")[1].split("/")[0]
                    for f in j.spec["inputs"]] == ["SITE_B", "SITE_B"]
        assert s.get(Task, task_id).state == "ready"


def test_a_job_with_inputs_split_over_two_sites_requests_only_the_missing_half(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    src = tmp_path / "half"
    src.mkdir()
    (src / "half._0").write_bytes(b"a" * 3000)
    (src / "half._1").write_bytes(b"b" * 3000)
    with db.session() as s:
        eps = {e.name: e for e in s.scalars(select(StorageEndpoint))}
        ddm.upload(s, "t:half", [src / "half._0"], eps["SITE_A_DISK"])
        ddm.upload(s, "t:half", [src / "half._1"], eps["SITE_B_DISK"])
    define(db, ddm, spec("half", "t:half"))
    assert broker.run_once(db, ddm, CFG) == 1
    with db.session() as s:
        job = s.scalar(select(Job))
        site = queue_of(s, job.id).removesuffix("_PROD")
        assert site in ("SITE_A", "SITE_B") and job.state == "assigned"
        other = "half._1" if site == "SITE_A" else "half._0"
        links = dict(s.execute(select(JobFile.lfn, JobFile.request_id)
                               .where(JobFile.job_id == job.id, JobFile.type == "in")).all())
        req = s.scalar(select(DataRequest))
        assert links == {other: req.id, ("half._0" if other == "half._1" else "half._1"): None}
        assert s.get(StorageEndpoint, req.endpoint_id).name == f"{site}_DISK"
        assert req.files_total == 1
    transfer.run_once(db)
    assert activator.run_once(db, ddm, CFG, request_ids=[req.id]) == 1
    with db.session() as s:
        job = s.scalar(select(Job))
        assert job.state == "activated"
        assert all(f"/{site}/disk/" in f["urls"][0] for f in job.spec["inputs"])


def test_a_job_that_fits_nowhere_waits_then_goes_when_a_queue_appears(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 2, tmp_path)
    task_id = define(db, ddm, spec("big", "t:raw", resources={"cores": 16}))
    assert broker.run_once(db, ddm, CFG) == 0
    with db.session() as s:
        job = s.scalar(select(Job))
        assert job.state == "waiting" and job.queue_id is None
        hist = s.scalar(select(StateHistory).where(StateHistory.entity == "job",
                                                   StateHistory.to_state == "waiting"))
        assert hist.from_state == "defined" and hist.actor == "scheduler:broker"
        for q in ("SITE_A_PROD", "SITE_B_PROD", "SITE_C_PROD"):
            assert f"{q}: needs cores=16, queue has 1" in hist.reason
        assert s.get(Task, task_id).state == "defined"
    assert broker.run_once(db, ddm, CFG) == 0  # still nowhere; no new history
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(StateHistory)
                        .where(StateHistory.to_state == "waiting")) == 1
    resync(db, tmp_path, cores=16)
    assert broker.run_once(db, ddm, CFG) == 1
    with db.session() as s:
        job = s.scalar(select(Job))
        assert job.state == "activated" and queue_of(s, job.id) == "SITE_A_PROD"
        assert s.scalar(select(StateHistory.from_state).where(
            StateHistory.entity == "job", StateHistory.to_state == "activated")) == "waiting"
        assert s.get(Task, task_id).state == "ready"


def test_missing_inputs_make_one_request_per_task_and_endpoint(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "t:raw.X", "SITE_C_DISK", 8, tmp_path, seed=1)
    make_dataset(db, ddm, "t:raw.Y", "SITE_C_DISK", 8, tmp_path, seed=2)
    resync(db, tmp_path, status={"SITE_C_PROD": "offline"})
    tasks = [define(db, ddm, spec("x", "t:raw.X", split={"files_per_job": 1})),
             define(db, ddm, spec("y", "t:raw.Y", split={"files_per_job": 1}))]
    assert broker.run_once(db, ddm, CFG) == 16
    with db.session() as s:
        jobs = list(s.scalars(select(Job)))
        assert {j.state for j in jobs} == {"assigned"}
        used = {(j.task_id, queue_of(s, j.id)) for j in jobs}
        assert {q for _, q in used} == {"SITE_A_PROD", "SITE_B_PROD"}  # load spreads them
        reqs = list(s.scalars(select(DataRequest)))
        assert len(reqs) == len(used) == 4
        for req in reqs:
            ep = s.get(StorageEndpoint, req.endpoint_id).name
            files = set(s.scalars(select(DataRequestFile.file_id)
                                  .where(DataRequestFile.request_id == req.id)))
            linked = list(s.execute(
                select(JobFile.file_id, Job.task_id, Job.queue_id)
                .join(Job, Job.id == JobFile.job_id).where(JobFile.request_id == req.id)))
            assert files == {f for f, _, _ in linked} and req.files_total == len(files)
            assert len({t for _, t, _ in linked}) == 1  # one task's bunch
            assert {s.get(Queue, q).name for _, _, q in linked} == {ep.replace("DISK", "PROD")}
        assert s.scalar(select(func.count()).select_from(JobFile).where(
            JobFile.type == "in", JobFile.request_id.is_(None))) == 0
        assert {t for t, _ in used} == set(tasks)


def test_a_file_already_in_flight_is_not_requested_twice(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "t:raw", "SITE_C_DISK", 4, tmp_path)
    resync(db, tmp_path, status={"SITE_B_PROD": "offline", "SITE_C_PROD": "offline"})
    define(db, ddm, spec("one", "t:raw"))
    define(db, ddm, spec("two", "t:raw"))  # brokered in the same cycle as "one"
    assert broker.run_once(db, ddm, CFG) == 4
    define(db, ddm, spec("three", "t:raw"))  # brokered a cycle later
    assert broker.run_once(db, ddm, CFG) == 2
    with db.session() as s:
        req = s.scalar(select(DataRequest))
        assert s.scalar(select(func.count()).select_from(DataRequest)) == 1
        assert s.scalar(select(func.count()).select_from(DataRequestFile)) == 4
        assert set(s.scalars(select(Job.state))) == {"assigned"}
        assert set(s.scalars(select(JobFile.request_id).where(JobFile.type == "in"))) \
            == {req.id}
    assert transfer.run_once(db) == 4  # each file copied once
    assert activator.run_once(db, ddm, CFG, request_ids=[req.id]) == 6


def test_a_queue_with_no_disk_to_read_from_gets_no_jobs(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    """Only disk replicas count for activation, so a queue reading only from tape can
    never run a job; one such (mis)configured queue must not stop brokerage."""
    make_dataset(db, ddm, "t:raw", "SITE_C_DISK", 4, tmp_path)
    cfg = site_config(tmp_path / "storage", SITES)
    cfg["endpoint"].append({"name": "SITE_A_TAPE", "site": "SITE_A", "kind": "tape",
                            "url": f"file://{tmp_path}/storage/SITE_A/tape"})
    cfg["queue"].append({"name": "SITE_A_TAPEQ", "site": "SITE_A",
                         "read_endpoints": ["SITE_A_TAPE"], "write_endpoint": "SITE_A_DISK"})
    for q in cfg["queue"]:
        if q["name"] in ("SITE_B_PROD", "SITE_C_PROD"):
            q["status"] = "offline"
    with pytest.raises(ConfigError, match="SITE_A_TAPEQ: read_endpoints need a disk"):
        validate(cfg)  # the site file refuses it...
    with db.session() as s:  # ...and should one reach the catalog, the broker copes
        sync(s, {k: list(v) for k, v in cfg.items()}, actor="test", source="test")
    define(db, ddm, spec("tapeq", "t:raw", split={"files_per_job": 1}))
    assert broker.run_once(db, ddm, CFG) == 4
    with db.session() as s:
        assert {queue_of(s, j) for j in s.scalars(select(Job.id))} == {"SITE_A_PROD"}
