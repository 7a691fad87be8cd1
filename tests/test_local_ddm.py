"""What only the embedded DDM has: ``add_files`` and its transfer worker.

The DDM interface itself (listing, upload, requests and their reports, outputs,
pfn, daemons) is proved for every backend by ``tests/ddm/``. Here: runs on both
database backends with real bytes on ``file://`` endpoints. A corrupted source
(same size, other bytes) must be caught by adler32, marked ``bad`` and either
replaced by an intact source or fail the request, which then fails the waiting
jobs as a DDM failure and gets them retried.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import (
    DataRequest,
    Dataset,
    File,
    Job,
    JobFile,
    Replica,
    StateHistory,
    StorageEndpoint,
)
from dawms.catalog.site_config import sync, validate
from dawms.ddm_bridge.abc import FileInfo, RegistrationError
from dawms.ddm_bridge.events import apply_reports
from dawms.ddm_bridge.local import LocalDDM, transfer
from dawms.scheduler import activator, broker, refiner
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.task import submit
from factories import make_dataset, site_config

NOW = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)


def endpoint(s, name: str) -> StorageEndpoint:  # type: ignore[no-untyped-def]
    return s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == name))


def local_path(ddm: LocalDDM, ep: StorageEndpoint, scope: str, name: str) -> Path:
    return Path(ddm.pfn(ep, scope, name).removeprefix("file://"))


def replica_states(s, file_ids: list[int]) -> dict[tuple[int, str], str]:  # type: ignore[no-untyped-def]
    rows = s.execute(select(Replica.file_id, StorageEndpoint.name, Replica.state)
                     .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
                     .where(Replica.file_id.in_(file_ids)))
    return {(f, e): st for f, e, st in rows}


def corrupt(path: Path) -> None:
    """Same size, other bytes: only a checksum can tell."""
    data = path.read_bytes()
    path.write_bytes(bytes(b ^ 0xFF for b in data[:16]) + data[16:])
    assert len(path.read_bytes()) == len(data)


def replicate(db: Database, ddm: LocalDDM, did: str, to: str) -> int:
    with db.session() as s:
        return ddm.request_replication(s, ddm.list_files(s, did), endpoint(s, to),
                                       name="test_dis").id


def test_add_files_is_idempotent_and_shares_known_files(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 3, tmp_path)
    with db.session() as s:
        infos = [FileInfo(f.scope, f.name, f.size, f.adler32) for f in ddm.list_files(s, "t:raw")]
        ddm.add_files(s, "t:raw", infos, endpoint(s, "SITE_A_DISK"))  # again: no-op
        ddm.add_files(s, "t:copy", infos[:2], endpoint(s, "SITE_B_DISK"))
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(File)) == 3
        assert len(ddm.list_files(s, "t:raw")) == 3
        copy = ddm.list_files(s, "t:copy")
        assert [f.name for f in copy] == [i.name for i in infos[:2]]
        states = replica_states(s, [f.id for f in copy])
        assert {e for _, e in states} == {"SITE_A_DISK", "SITE_B_DISK"} and len(states) == 4


def test_add_files_refuses_a_known_file_with_another_checksum(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 1, tmp_path)
    with db.session() as s:
        f = ddm.list_files(s, "t:raw")[0]
        good = (f.size, f.adler32)
    for size, adler in ((good[0], "deadbeef"), (good[0] + 1, good[1])):
        with pytest.raises(RegistrationError, match="already registered"), db.session() as s:
            ddm.add_files(s, "t:other", [FileInfo("t", f.name, size, adler)],
                          endpoint(s, "SITE_B_DISK"))
    with db.session() as s:
        assert (s.get(File, f.id).size, s.get(File, f.id).adler32) == good
        assert s.scalar(select(Dataset).where(Dataset.name == "other")) is None
        assert list(replica_states(s, [f.id])) == [(f.id, "SITE_A_DISK")]


def test_transfer_copies_and_verifies(db: Database, ddm: LocalDDM, sites: list[str],
                                      tmp_path: Path) -> None:
    paths = make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 3, tmp_path, size=7000)
    rid = replicate(db, ddm, "t:raw", "SITE_B_DISK")
    with db.session() as s:
        ids = [f.id for f in ddm.list_files(s, "t:raw")]
        assert {st for (_, e), st in replica_states(s, ids).items() if e == "SITE_B_DISK"} \
            == {"copying"}
    assert transfer.run_once(db) == 3
    with db.session() as s:
        ep = endpoint(s, "SITE_B_DISK")
        for p in paths:
            assert local_path(ddm, ep, "t", p.name).read_bytes() == p.read_bytes()
        assert set(replica_states(s, ids).values()) == {"available"}
        req = s.get(DataRequest, rid)
        assert (req.state, req.files_done, req.files_total, req.bytes_done) == \
            ("done", 3, 3, 21000)
        assert (req.acquired_by, req.acquired_until, req.error) == (None, None, "")
        assert [(h.from_state, h.to_state) for h in s.scalars(select(StateHistory).where(
            StateHistory.entity == "data_request"))] == [("", "requested"), ("requested", "done")]
    assert transfer.run_once(db) == 0  # nothing left to do


def test_a_corrupted_source_fails_the_request_and_its_jobs_are_retried(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 4, tmp_path)
    cfg = site_config(tmp_path / "storage", sites)
    for q in cfg["queue"]:
        q["status"] = "online" if q["name"] == "SITE_B_PROD" else "offline"
    with db.session() as s:
        sync(s, validate(cfg), actor="test", source="test")
        submit(s, {"name": "bad", "transformation": "true {inputs}",
                   "input_datasets": ["t:raw"], "output_dataset": "t:o.{task_id}",
                   "split": {"files_per_job": 2}}, ddm)
        first = ddm.list_files(s, "t:raw")[0]
        corrupt(local_path(ddm, endpoint(s, "SITE_A_DISK"), "t", first.name))
    sched = SchedulerConfig()
    refiner.run_once(db, ddm)
    assert broker.run_once(db, ddm, sched) == 2
    with db.session() as s:
        (rid,) = s.scalars(select(DataRequest.id))
        doomed = s.scalar(select(JobFile.job_id).where(JobFile.file_id == first.id))
    transfer.run_once(db)
    with db.session() as s:
        req = s.get(DataRequest, rid)
        assert req.state == "failed" and f"t:{first.name}" in req.error
        assert "adler32" in req.error and req.files_done == 3
        reps = replica_states(s, [first.id])
        assert reps == {(first.id, "SITE_A_DISK"): "bad", (first.id, "SITE_B_DISK"): "unavailable"}
        assert not local_path(ddm, endpoint(s, "SITE_B_DISK"), "t", first.name).exists()
        hist = s.scalar(select(StateHistory).where(StateHistory.entity == "data_request",
                                                   StateHistory.to_state == "failed"))
        assert f"t:{first.name}" in hist.reason
    assert activator.run_once(db, ddm, sched, request_ids=[rid]) == 1  # the intact job
    with db.session() as s:
        old = s.get(Job, doomed)
        assert (old.state, old.error_category) == ("failed", "ddm")
        new = s.scalar(select(Job).where(Job.retry_of == doomed))
        assert (new.state, new.attempt, new.job_index) == ("defined", 2, old.job_index)
        other = s.scalar(select(Job).where(Job.id != doomed, Job.retry_of.is_(None)))
        assert other.state == "activated"


def test_a_corrupted_source_is_skipped_for_an_intact_one(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    paths = make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 2, tmp_path)
    with db.session() as s:
        ddm.upload(s, "t:raw", paths, endpoint(s, "SITE_C_DISK"))  # a second copy
        first = ddm.list_files(s, "t:raw")[0]
        corrupt(local_path(ddm, endpoint(s, "SITE_A_DISK"), "t", first.name))
    rid = replicate(db, ddm, "t:raw", "SITE_B_DISK")
    assert transfer.run_once(db) == 2
    with db.session() as s:
        assert s.get(DataRequest, rid).state == "done"
        dest = local_path(ddm, endpoint(s, "SITE_B_DISK"), "t", first.name)
        assert dest.read_bytes() == paths[0].read_bytes()
        assert replica_states(s, [first.id]) == {(first.id, "SITE_A_DISK"): "bad",
                                                 (first.id, "SITE_C_DISK"): "available",
                                                 (first.id, "SITE_B_DISK"): "available"}
        reason = s.scalar(select(StateHistory.reason).where(StateHistory.to_state == "bad"))
        assert "checksum mismatch" in reason




def test_the_worker_ends_no_request_itself_and_never_takes_one_back(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    """``carry_out`` copies and records replicas but ends nothing: poll() reports. A
    request carried out or given up waits for that report; the worker never takes
    it again (it would copy nothing, and a loop over it would never end)."""
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 2, tmp_path)
    make_dataset(db, ddm, "t:bad", "SITE_A_DISK", 1, tmp_path, seed=3)
    ok = replicate(db, ddm, "t:raw", "SITE_B_DISK")
    bad = replicate(db, ddm, "t:bad", "SITE_B_DISK")
    with db.session() as s:
        (f,) = ddm.list_files(s, "t:bad")
        corrupt(local_path(ddm, endpoint(s, "SITE_A_DISK"), "t", f.name))
    claimed, ran = transfer.carry_out(db)
    assert (sorted(claimed), ran) == ([ok, bad], 2)
    with db.session() as s:
        assert [s.get(DataRequest, r).state for r in (ok, bad)] == ["requested", "requested"]
        assert "adler32" in s.get(DataRequest, bad).error
        assert (s.get(DataRequest, ok).acquired_by, s.get(DataRequest, bad).acquired_by) \
            == (None, None)
    assert transfer.carry_out(db) == ([], 0)  # neither is taken back
    with db.session() as s:
        reports = {r.request_id: r for r in ddm.poll(s, NOW)}
        assert {r: reports[r].outcome.value for r in reports} == {ok: "done", bad: "failed"}
        assert apply_reports(s, list(reports.values()), source="poll", now=NOW) \
            == {"applied": 2}
        assert s.get(DataRequest, bad).state == "failed"
