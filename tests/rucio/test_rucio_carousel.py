"""The carousel on the real Rucio: a TAPE RSE, staging rules, Rucio's conveyor.

A dataset whose only replicas are on a TAPE RSE (``rse_type`` TAPE) is found
tape-only at refinement through the Rucio DDM; the carousel releases it in
bunches within the tape's limit, each a rule to the disk buffer's RSE with the
tape as ``source_replica_expression`` and activity ``Staging``; Rucio's own
conveyor (mock transfertool, bytes moved as FTS would) completes them, the
jobs whose files are on the buffer go on while the rest wait, the rules are
kept while the task runs (housekeeping leaves them alone, their lifetime is
renewed) and expired once it is done, after which Rucio's judge-cleaner
removes them; the outputs are in the task's output and log datasets with their
adler32, both closed in Rucio once the task is done.
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rucio_helpers import World, make_rucio_dataset, site_file, unique
from sqlalchemy import func, select

from dawms import carousel
from dawms.carousel.config import CarouselConfig
from dawms.carousel.daemon import in_flight
from dawms.catalog.db import Database
from dawms.catalog.models import (
    DataRequest,
    DataRequestFile,
    File,
    Job,
    JobFile,
    Queue,
    StagingRequest,
    StorageEndpoint,
    Task,
)
from dawms.catalog.site_config import sync, validate
from dawms.catalog.transition import claim_jobs
from dawms.ddm_bridge.events import apply_reports
from dawms.ddm_bridge.rucio import housekeeping
from dawms.ddm_bridge.rucio.ddm import RucioDDM
from dawms.scheduler import broker, finisher, refiner
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.task import submit
from factories import report, write_outputs

pytestmark = [pytest.mark.rucio, pytest.mark.carousel]
N = 4


@pytest.fixture(scope="module")
def tape_world(world: World, rucio_client, tmp_path_factory: pytest.TempPathFactory) -> World:  # type: ignore[no-untyped-def]
    """The run's world plus a TAPE RSE at SITE_B (its disk is the buffer)."""
    rse = f"DAWMS_{world.tag.upper()}_TAPE"
    d = tmp_path_factory.mktemp("rucio-tape")
    rucio_client.add_rse(rse, rse_type="TAPE")
    rucio_client.add_protocol(rse, {
        "scheme": "file", "hostname": "localhost", "port": 0, "prefix": f"{d}/",
        "impl": "rucio.rse.protocols.posix.Default",
        "domains": {"lan": {"read": 1, "write": 1, "delete": 1},
                    "wan": {"read": 1, "write": 1, "delete": 1, "third_party_copy_read": 1,
                            "third_party_copy_write": 1}}})
    rucio_client.set_local_account_limit("root", rse, -1)
    for other in world.rses.values():
        rucio_client.add_distance(rse, other, {"distance": 1})
        rucio_client.add_distance(other, rse, {"distance": 1})
    assert rucio_client.get_rse(rse)["rse_type"] == "TAPE"
    return World(world.tag, world.scope, {**world.rses, "TAPE": rse}, {**world.dirs, rse: d})


@pytest.fixture
def tape_sites(db: Database, tape_world: World) -> World:
    cfg = site_file(tape_world)
    cfg["endpoint"].append({"name": "SITE_B_TAPE", "site": "SITE_B", "kind": "tape",
                            "url": f"file://{tape_world.dirs[tape_world.rse('TAPE')]}",
                            "rse": tape_world.rse("TAPE"), "staging_buffer": "SITE_B_DISK",
                            "staging_max_files": 4, "staging_max_percent": 50})
    with db.session() as s:
        sync(s, validate(cfg), actor="test", source="rucio carousel")
    return tape_world


def recall_open_rules(db: Database, ddm: RucioDDM, pump) -> int:  # type: ignore[no-untyped-def]
    """What FTS would do for the open staging rules (bring online, copy to the buffer);
    then Rucio's conveyor once. Returns how many files were copied."""
    copied = 0
    with db.session() as s:
        tape = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "SITE_B_TAPE"))
        for req in s.scalars(select(DataRequest).where(DataRequest.kind == "stage",
                                                       DataRequest.state == "requested")):
            dest = s.get(StorageEndpoint, req.endpoint_id)
            for f in s.scalars(select(File).join(DataRequestFile,
                                                 DataRequestFile.file_id == File.id)
                               .where(DataRequestFile.request_id == req.id)):
                src = Path(ddm.pfn(tape, f.scope, f.name).removeprefix("file://"))
                dst = Path(ddm.pfn(dest, f.scope, f.name).removeprefix("file://"))
                if not dst.exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dst)
                    copied += 1
    pump(transfers=True)
    return copied


def expires(rule: dict) -> datetime:
    """A rule's expiry as an aware UTC datetime (Rucio's clock is UTC)."""
    at = rule["expires_at"]
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def poll(db: Database, ddm: RucioDDM) -> None:
    now = datetime.now(UTC)
    with db.session() as s:
        apply_reports(s, ddm.poll(s, now), source="poll", now=now)


def states(db: Database, model) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with db.session() as s:
        return dict(s.execute(select(model.state, func.count()).group_by(model.state)).all())


def test_a_tape_only_dataset_is_staged_by_rucio_rules_and_released_when_done(
        db: Database, rucio_ddm: RucioDDM, tape_sites: World, rucio_client, pump,  # type: ignore[no-untyped-def]
        tmp_path: Path) -> None:
    did = unique(tape_sites, "raw")
    make_rucio_dataset(rucio_client, tape_sites, did, "TAPE", N, tmp_path)
    spec = {"name": "reproc", "transformation": "true {inputs}", "input_datasets": [did],
            # unique: each test's catalog numbers its tasks from 1, Rucio keeps the names
            "output_dataset": f"{unique(tape_sites, 'out')}.{{task_id}}",
            "split": {"files_per_job": 2}}
    cfg = CarouselConfig()
    with db.session() as s:
        task_id = submit(s, spec, rucio_ddm).id
        tape = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "SITE_B_TAPE"))
        tape_id, tape_rse = tape.id, tape.rse_name
        buffer_rse = s.scalar(select(StorageEndpoint).where(
            StorageEndpoint.name == "SITE_B_DISK")).rse_name
    # detection through Rucio: the only replicas are on the TAPE RSE
    refiner.run_once(db, rucio_ddm)
    with db.session() as s:
        assert s.get(Task, task_id).state == "staging"
    assert states(db, StagingRequest) == {"queued": 1}
    assert states(db, Job) == {"throttled": N // 2}

    seen_partial, rules = False, set()
    for _ in range(10):
        carousel.run_once(db, rucio_ddm, datetime.now(UTC), cfg)
        with db.session() as s:
            assert in_flight(s, tape_id)[0] <= 2  # 4 files x 50 %
            for req in s.scalars(select(DataRequest).where(DataRequest.kind == "stage")):
                rules.add(req.external_id)
        broker.run_once(db, rucio_ddm, SchedulerConfig())
        jobs = states(db, Job)
        if jobs.get("throttled") and set(jobs) - {"throttled"}:
            seen_partial = True  # some jobs went on while others waited for the tape
        with db.session() as s:
            if s.get(Task, task_id).state != "staging":
                break
        recall_open_rules(db, rucio_ddm, pump)
        poll(db, rucio_ddm)
    assert seen_partial
    assert states(db, StagingRequest) == {"done": 1}
    assert len(rules) == N // 2  # bunches of 2 files, one rule each
    for rule_id in rules:  # what Rucio was asked, rule by rule
        rule = rucio_client.get_replication_rule(rule_id)
        assert (rule["rse_expression"], rule["source_replica_expression"], rule["activity"]) \
            == (buffer_rse, tape_rse, "Staging")
        assert str(rule["state"]).rsplit(".", 1)[-1] == "OK"
        assert expires(rule) > utcnow() + timedelta(days=14)  # the pin
    # housekeeping leaves the pins alone (they are the carousel's)
    housekeeping.run_once(db, rucio_ddm)
    for rule_id in rules:
        # (a deletion would have cut the lifetime to Rucio's hour of grace)
        assert expires(rucio_client.get_replication_rule(rule_id)) > utcnow() + timedelta(days=14)
    # the pin renewed: the rules' lifetime moves
    with db.session() as s:
        drs = list(s.scalars(select(DataRequest).where(DataRequest.kind == "stage")))
        rucio_ddm.extend_staging(s, drs, 40 * 86400)
    for rule_id in rules:
        assert expires(rucio_client.get_replication_rule(rule_id)) > \
            utcnow() + timedelta(days=39)

    # the jobs run at the buffer's site and finish; the task is done
    broker.run_once(db, rucio_ddm, SchedulerConfig())
    now = datetime.now(UTC)
    with db.session() as s:
        qid = s.scalar(select(Queue.id).where(Queue.name == "SITE_B_PROD"))
        claimed = claim_jobs(s, qid, 10, "pilot-1", now=now)
    assert len(claimed) == N // 2
    assert carousel.run_once(db, rucio_ddm, now, cfg).copies_released == 0  # still needed
    for job_id, attempt, token, jspec in claimed:
        fence = {"job_id": job_id, "attempt": attempt, "lease_token": token}
        report(db, rucio_ddm, fence, "running", now)
        report(db, rucio_ddm, fence, "finished", now, exit_code=0,
               outputs=write_outputs(jspec))
    deadline = time.monotonic() + 120
    while True:  # the finisher closes the jobs, then the task
        finisher.run_once(db, now)
        with db.session() as s:
            task = s.get(Task, task_id)
            if task.state == "done":
                break
            jobs = [(j.id, j.state, j.error_diag) for j in s.scalars(select(Job))]
        assert time.monotonic() < deadline, (task.state, task.error, jobs)
        time.sleep(0.5)
    assert carousel.run_once(db, rucio_ddm, now, cfg).copies_released == N
    for rule_id in rules:  # expired at once ...
        assert expires(rucio_client.get_replication_rule(rule_id)) <= utcnow()
    assert carousel.run_once(db, rucio_ddm, now, cfg).copies_released == 0  # once
    # the outputs are in the task's output (and log) dataset in Rucio with their adler32,
    # and housekeeping closes both now that the task is done
    housekeeping.run_once(db, rucio_ddm)
    with db.session() as s:
        task = s.get(Task, task_id)
        outputs = list(s.scalars(select(JobFile).where(JobFile.type.in_(["out", "log"]))))
        datasets = {"out": task.output_dataset, "log": task.log_dataset}
    assert len(outputs) == N  # an output and a log per job
    for kind, did in datasets.items():
        scope, name = did.split(":")
        assert rucio_client.get_did(scope, name)["open"] is False, f"{did} is still open"
        listed = {f["name"]: f for f in rucio_client.list_files(scope, name)}
        mine = [o for o in outputs if o.type == kind]
        assert set(listed) == {o.lfn for o in mine}
        for o in mine:
            assert (listed[o.lfn]["adler32"], listed[o.lfn]["bytes"]) == (o.adler32, o.size)
    pump(transfers=False, cleaner=True)
    from rucio.common.exception import RuleNotFound

    for rule_id in rules:  # ... and gone after Rucio's judge-cleaner ran
        with pytest.raises(RuleNotFound):
            rucio_client.get_replication_rule(rule_id)
