"""The scheduler's data-aware flow without pilots: refine, broker, replicate, activate."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import DataRequest, Job, JobFile, Queue, Replica, StateHistory, Task
from dawms.ddm_bridge.local import LocalDDM, transfer
from dawms.scheduler import activator, broker, refiner
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.task import submit
from factories import make_dataset

SPEC = {"name": "flow", "transformation": "true {inputs}", "input_datasets": ["t:raw.A"],
        "output_dataset": "t:out.{task_id}", "split": {"files_per_job": 2}}


def test_jobs_go_to_the_data_then_replicate_when_it_is_busy(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "t:raw.A", "SITE_A_DISK", 60, tmp_path)
    cfg = SchedulerConfig()
    with db.session() as s:
        task_id = submit(s, SPEC, ddm).id
    assert refiner.run_once(db, ddm) == 30
    assert broker.run_once(db, ddm, cfg) == 30
    with db.session() as s:
        placed = dict(s.execute(select(Queue.name, func.count()).join(Job, Job.queue_id == Queue.id)
                                .group_by(Queue.name)).all())
        states = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())
        assert s.get(Task, task_id).state == "ready"
    # the data site is preferred until its backlog makes an empty site worth a copy
    assert placed["SITE_A_PROD"] > placed.get("SITE_B_PROD", 0)
    assert placed.get("SITE_B_PROD", 0) + placed.get("SITE_C_PROD", 0) > 0
    assert states["activated"] == placed["SITE_A_PROD"]
    assert states["assigned"] == 30 - placed["SITE_A_PROD"]
    # assigned jobs are not activated before their inputs arrive
    assert activator.run_once(db, ddm, cfg) == 0
    copied = transfer.run_once(db)
    assert copied == 2 * states["assigned"]
    with db.session() as s:
        req_ids = list(s.scalars(select(DataRequest.id).where(DataRequest.state == "done")))
        assert req_ids and s.scalar(select(func.count()).select_from(DataRequest)
                                    .where(DataRequest.state != "done")) == 0
    assert activator.run_once(db, ddm, cfg, request_ids=req_ids) == states["assigned"]
    with db.session() as s:
        assert set(s.scalars(select(Job.state))) == {"activated"}
        # each activated job's inputs are available on disk at its own site
        for job in s.scalars(select(Job)):
            for f in job.spec["inputs"]:
                assert f["urls"][0].startswith("file://"), f
                assert f"/{job.spec['queue'].removesuffix('_PROD')}/" in f["urls"][0]
        n_hist = s.scalar(select(func.count()).select_from(StateHistory)
                          .where(StateHistory.entity == "job"))
        assert n_hist >= 30 * 2  # created + brokered (+ activated)
        assert s.scalar(select(func.count()).select_from(Replica)
                        .where(Replica.state != "available")) == 0
        assert s.scalar(select(func.count()).select_from(JobFile)
                        .where(JobFile.request_id.is_not(None))) == copied


def test_unknown_dataset_breaks_nothing(db: Database, ddm: LocalDDM, sites: list[str]) -> None:
    import pytest

    from dawms.scheduler.task import TaskSpecError

    with db.session() as s, pytest.raises(TaskSpecError, match="t:nope is not known"):
        submit(s, {**SPEC, "input_datasets": ["t:nope"]}, ddm)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Task)) == 0
