"""The embedded DDM: datasets, replicas, verified transfers, idempotent events, outputs.

Runs on both database backends with real bytes on ``file://`` endpoints. A
corrupted source (same size, other bytes) must be caught by adler32, marked
``bad`` and either replaced by an intact source or fail the request, which then
fails the waiting jobs as a DDM failure and gets them retried.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dawms.catalog import events
from dawms.catalog.db import Database
from dawms.catalog.models import (
    DataRequest,
    Dataset,
    DDMEvent,
    File,
    Job,
    JobFile,
    Replica,
    StateHistory,
    StorageEndpoint,
)
from dawms.catalog.site_config import sync, validate
from dawms.ddm_bridge.abc import FileInfo, RegistrationError, UnknownDataset
from dawms.ddm_bridge.events import apply_reports, apply_request_outcome
from dawms.ddm_bridge.local import LocalDDM, transfer
from dawms.scheduler import activator, broker, refiner
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.task import submit
from dawms.storage.checksum import bytes_adler32
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


def test_upload_and_list_files(db: Database, ddm: LocalDDM, sites: list[str],
                               tmp_path: Path) -> None:
    paths = make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 3, tmp_path, size=5000)
    with db.session() as s:
        files = ddm.list_files(s, "t:raw")
        assert [f.name for f in files] == [p.name for p in paths]
        ep = endpoint(s, "SITE_A_DISK")
        for f, p in zip(files, paths, strict=True):
            data = p.read_bytes()
            assert (f.scope, f.size, f.adler32) == ("t", 5000, bytes_adler32(data))
            assert f.guid
            assert local_path(ddm, ep, "t", f.name).read_bytes() == data
        assert set(replica_states(s, [f.id for f in files]).values()) == {"available"}


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


def test_an_unknown_dataset_is_refused(db: Database, ddm: LocalDDM, sites: list[str]) -> None:
    with db.session() as s:
        with pytest.raises(UnknownDataset, match="t:nope"):
            ddm.list_files(s, "t:nope")
        with pytest.raises(ValueError, match="scope:name"):
            ddm.list_files(s, "no-scope")


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


def test_duplicated_and_reordered_request_events_change_nothing(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 1, tmp_path)
    r1 = replicate(db, ddm, "t:raw", "SITE_B_DISK")
    r2 = replicate(db, ddm, "t:raw", "SITE_C_DISK")

    def apply(key: str, outcome: str, **kw: object) -> str:
        with db.session() as s:
            return apply_request_outcome(s, source="cb", dedup_key=key, outcome=outcome,
                                         now=NOW, **kw)

    assert apply("k1", "done", request_id=r1) == "applied"
    assert apply("k1", "done", request_id=r1) == "duplicate"
    assert apply("k1", "failed", request_id=r1, error="late") == "duplicate"
    assert apply("k2", "failed", request_id=r1, error="late") == "stale"
    assert apply("k3", "failed", external_id=f"local-{r2}", error="boom") == "applied"
    assert apply("k4", "done", external_id=f"local-{r2}") == "stale"
    with pytest.raises(LookupError):
        apply("k5", "done", request_id=987654)
    with pytest.raises(LookupError):
        apply("k6", "done", external_id="nope")
    with pytest.raises(ValueError):
        apply("k7", "maybe", request_id=r1)
    with db.session() as s:
        assert (s.get(DataRequest, r1).state, s.get(DataRequest, r1).error) == ("done", "")
        assert (s.get(DataRequest, r2).state, s.get(DataRequest, r2).error) == ("failed", "boom")
        ends = [(h.entity_id, h.to_state) for h in s.scalars(
            select(StateHistory).where(StateHistory.entity == "data_request",
                                       StateHistory.from_state == "requested"))]
        assert sorted(ends) == [(r1, "done"), (r2, "failed")]
        assert sorted(s.scalars(select(DDMEvent.dedup_key))) == ["k1", "k2", "k3", "k4"]


def test_register_outputs_checks_the_file_is_there_with_its_size(
        db: Database, ddm: LocalDDM, sites: list[str]) -> None:
    with db.session() as s:
        ep = endpoint(s, "SITE_B_DISK")
        good = local_path(ddm, ep, "t", "out._000001.1")
        good.parent.mkdir(parents=True)
        good.write_bytes(b"x" * 1234)
        adler = bytes_adler32(good.read_bytes())
        ok = FileInfo("t", "out._000001.1", 1234, adler)
        with pytest.raises(RegistrationError, match="is not at"):
            ddm.register_outputs(s, "t:out", [ok, FileInfo("t", "gone", 10, adler)], ep)
        with pytest.raises(RegistrationError, match="has 1234 bytes, the pilot reported 1000"):
            ddm.register_outputs(s, "t:out", [FileInfo("t", "out._000001.1", 1000, adler)], ep)
        assert s.scalar(select(func.count()).select_from(File)) == 0
        assert s.scalar(select(Dataset).where(Dataset.name == "out")) is None
        (f,) = ddm.register_outputs(s, "t:out", [ok], ep)
        assert (f.size, f.adler32) == (1234, adler)
    with db.session() as s:
        assert [x.name for x in ddm.list_files(s, "t:out")] == ["out._000001.1"]
        assert replica_states(s, [f.id]) == {(f.id, "SITE_B_DISK"): "available"}


def test_poll_ends_complete_requests_and_publishes_only_after_commit(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    """The poller's safety net ends requests whose files are all there. Each ending is
    an event; none may reach subscribers before the poller's transaction commits."""
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 2, tmp_path)
    r1 = replicate(db, ddm, "t:raw", "SITE_A_DISK")  # already there
    r2 = replicate(db, ddm, "t:raw", "SITE_A_DISK")
    r3 = replicate(db, ddm, "t:raw", "SITE_B_DISK")  # not there: stays open
    got: list = []
    unsubscribe = events.subscribe(got.append)
    try:
        with db.session() as s:
            reports = ddm.poll(s, NOW)
            assert sorted(r.request_id for r in reports) == [r1, r2]
            assert apply_reports(s, reports, source="poll", now=NOW) == {"applied": 2}
            assert [e for e in got if e.entity == "data_request"] == [], \
                "published before the poller committed"
    finally:
        unsubscribe()
    assert sorted(e.ids for e in got if e.to_state == "done") == [(r1,), (r2,)]
    with db.session() as s:
        assert [s.get(DataRequest, r).state for r in (r1, r2, r3)] == \
            ["done", "done", "requested"]
        assert ddm.poll(s, NOW) == []  # nothing new
        # a report applied twice changes nothing the second time
        assert apply_reports(s, reports, source="poll", now=NOW) == {"duplicate": 2}
