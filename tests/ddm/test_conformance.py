"""The DDM interface, proved against every backend (``ddm_backend``, see conftest.py).

What the scheduler relies on, whatever the DDM: datasets list their files in order,
uploads are checksummed and never overwrite, replication requests are rows in the
catalog that ``poll()`` reports once they end and ``events.apply_reports`` applies
exactly once, outputs are registered all-or-nothing only when their bytes are
there, ``pfn()`` is a pure function of endpoint and name, and a backend declares the
daemons it needs. Real bytes on real endpoints; no backend is mocked.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ddm_world import Backend
from sqlalchemy import func, select

from dawms.catalog import events
from dawms.catalog.models import (
    DataRequest,
    DataRequestFile,
    Dataset,
    DDMEvent,
    File,
    Replica,
    StateHistory,
    StorageEndpoint,
)
from dawms.ddm_bridge.abc import (
    DaemonSpec,
    FileInfo,
    Outcome,
    Ran,
    RegistrationError,
    RequestReport,
    UnknownDataset,
)
from dawms.ddm_bridge.events import apply_reports, apply_request_outcome
from dawms.scheduler.runner import Scheduler

pytestmark = pytest.mark.ddm
NOW = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)


def write(dir_: Path, name: str, data: bytes) -> Path:
    dir_.mkdir(parents=True, exist_ok=True)
    (dir_ / name).write_bytes(data)
    return dir_ / name


def adler(data: bytes) -> str:
    return f"{zlib.adler32(data):08x}"


def upload(b: Backend, did: str, at: str, files: dict[str, bytes], tmp: Path) -> list[File]:
    src = tmp / "src" / f"{did.replace(':', '_')}.{at}.{len(files)}"
    with b.db.session() as s:
        return b.ddm.upload(s, did, [write(src, n, d) for n, d in files.items()],
                            b.endpoint(s, at))


def catalog_counts(b: Backend) -> tuple[int, ...]:
    with b.db.session() as s:
        return tuple(s.scalar(select(func.count()).select_from(t))
                     for t in (Dataset, File, Replica, DataRequest, StateHistory, DDMEvent))


def replicas(b: Backend, file_ids: list[int]) -> dict[tuple[int, str], str]:
    with b.db.session() as s:
        rows = s.execute(select(Replica.file_id, StorageEndpoint.name, Replica.state)
                         .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
                         .where(Replica.file_id.in_(file_ids)))
        return {(f, e): st for f, e, st in rows}


def request(b: Backend, did: str, to: str, name: str = "t_dis1") -> int:
    with b.db.session() as s:
        return b.ddm.request_replication(s, b.ddm.list_files(s, did), b.endpoint(s, to),
                                         name=name).id


def reports_for(b: Backend, reports: list[RequestReport], rid: int) -> list[RequestReport]:
    with b.db.session() as s:
        external = s.get(DataRequest, rid).external_id
    return [r for r in reports if r.request_id == rid
            or (r.external_id is not None and r.external_id == external)]


def poll(b: Backend) -> list[RequestReport]:
    with b.db.session() as s:
        return b.ddm.poll(s, NOW)


def apply(b: Backend, reports: list[RequestReport]) -> dict[str, int]:
    with b.db.session() as s:
        return apply_reports(s, reports, source="poll", now=NOW)


def request_ends(b: Backend, rid: int) -> list[tuple[str, str]]:
    with b.db.session() as s:
        return [(h.from_state, h.to_state) for h in s.scalars(
            select(StateHistory).where(StateHistory.entity == "data_request",
                                       StateHistory.entity_id == rid)
            .order_by(StateHistory.id))]


FILES = {f"raw._{i:06d}": bytes([i]) * (1000 + i) + b"payload" for i in range(1, 4)}


# ------------------------------------------------------------------ datasets
def test_list_files_gives_the_dataset_in_order_with_checksums(ddm_backend: Backend,
                                                             tmp_path: Path) -> None:
    b = ddm_backend
    upload(b, b.did("raw"), "SITE_A_DISK", FILES, tmp_path)
    later = {"raw._000009": b"added later"}
    upload(b, b.did("raw"), "SITE_A_DISK", later, tmp_path)
    with b.db.session() as s:
        files = b.ddm.list_files(s, b.did("raw"))
        assert [f.name for f in files] == [*FILES, *later]
        for f in files:
            data = {**FILES, **later}[f.name]
            assert (f.scope, f.size, f.adler32) == (b.scope, len(data), adler(data))
            assert f.guid
        assert [f.id for f in b.ddm.list_files(s, b.did("raw"))] == [f.id for f in files]


def test_an_unknown_dataset_is_refused_and_nothing_is_created(ddm_backend: Backend) -> None:
    b = ddm_backend
    before = catalog_counts(b)
    with b.db.session() as s:
        with pytest.raises(UnknownDataset, match=b.did("nope")):
            b.ddm.list_files(s, b.did("nope"))
        with pytest.raises(ValueError, match="scope:name"):
            b.ddm.list_files(s, "no-scope")
    assert catalog_counts(b) == before


# ------------------------------------------------------------------ upload
def test_upload_registers_size_and_adler32_and_puts_the_bytes_at_the_pfn(
        ddm_backend: Backend, tmp_path: Path) -> None:
    b = ddm_backend
    files = upload(b, b.did("raw"), "SITE_A_DISK", FILES, tmp_path)
    assert [(f.name, f.size, f.adler32) for f in files] == \
        [(n, len(d), adler(d)) for n, d in FILES.items()]
    with b.db.session() as s:
        ep = b.endpoint(s, "SITE_A_DISK")
        for name, data in FILES.items():
            assert b.world.read(ep, b.scope, name) == data
    # what the broker and the dispatcher read: an available replica on the endpoint
    assert set(replicas(b, [f.id for f in files]).items()) == \
        {((f.id, "SITE_A_DISK"), "available") for f in files}


def test_the_same_bytes_uploaded_again_change_nothing(ddm_backend: Backend,
                                                      tmp_path: Path) -> None:
    b = ddm_backend
    first = upload(b, b.did("raw"), "SITE_A_DISK", FILES, tmp_path)
    before = catalog_counts(b)
    again = upload(b, b.did("raw"), "SITE_A_DISK", dict(reversed(FILES.items())), tmp_path)
    assert sorted(f.id for f in again) == sorted(f.id for f in first)
    assert catalog_counts(b) == before
    with b.db.session() as s:
        assert [f.name for f in b.ddm.list_files(s, b.did("raw"))] == list(FILES)


def test_other_bytes_under_a_registered_name_are_refused_and_nothing_is_written(
        ddm_backend: Backend, tmp_path: Path) -> None:
    b = ddm_backend
    (known,) = upload(b, b.did("raw"), "SITE_A_DISK", {"raw._000001": b"A" * 500}, tmp_path)
    before = catalog_counts(b)
    for other in (b"B" * 500, b"A" * 501):  # same size other bytes; other size
        with pytest.raises(RegistrationError, match="already registered"):
            upload(b, b.did("other"), "SITE_B_DISK",
                   {"raw._000002": b"fine", "raw._000001": other}, tmp_path / str(len(other)))
    assert catalog_counts(b) == before
    with b.db.session() as s:
        assert s.scalar(select(Dataset).where(Dataset.name == "other")) is None
        a, ep_b = b.endpoint(s, "SITE_A_DISK"), b.endpoint(s, "SITE_B_DISK")
        assert b.world.read(a, b.scope, "raw._000001") == b"A" * 500
        assert b.world.read(ep_b, b.scope, "raw._000001") is None
        assert b.world.read(ep_b, b.scope, "raw._000002") is None  # all or nothing
    assert replicas(b, [known.id]) == {(known.id, "SITE_A_DISK"): "available"}


# ------------------------------------------------------------------ requests
def test_a_replication_request_is_a_row_in_the_catalog(ddm_backend: Backend,
                                                       tmp_path: Path) -> None:
    b = ddm_backend
    files = upload(b, b.did("raw"), "SITE_A_DISK", FILES, tmp_path)
    with b.db.session() as s:
        req = b.ddm.request_replication(s, b.ddm.list_files(s, b.did("raw")),
                                        b.endpoint(s, "SITE_B_DISK"), name="t_dis7",
                                        activity="Analysis Input")
        rid = req.id
    with b.db.session() as s:
        req = s.get(DataRequest, rid)
        assert (req.state, req.name, req.activity, req.ddm, req.files_total) == \
            ("requested", "t_dis7", "Analysis Input", b.ddm.name, 3)
        assert req.external_id  # how the DDM names it (a Rucio rule id)
        assert s.get(StorageEndpoint, req.endpoint_id).name == "SITE_B_DISK"
        assert set(s.scalars(select(DataRequestFile.file_id)
                             .where(DataRequestFile.request_id == rid))) == {f.id for f in files}
    assert request_ends(b, rid) == [("", "requested")]
    assert reports_for(b, poll(b), rid) == []  # nothing has happened yet


def test_a_completed_replication_is_reported_done_and_applied_once(
        ddm_backend: Backend, tmp_path: Path) -> None:
    b = ddm_backend
    files = upload(b, b.did("raw"), "SITE_A_DISK", FILES, tmp_path)
    rid = request(b, b.did("raw"), "SITE_B_DISK")
    b.world.complete(b.db)
    (report,) = reports_for(b, poll(b), rid)
    assert (report.outcome, report.error) == (Outcome.DONE, "")
    assert apply(b, [report]) == {"applied": 1}
    assert apply(b, [report]) == {"duplicate": 1}
    assert request_ends(b, rid) == [("", "requested"), ("requested", "done")]
    assert reports_for(b, poll(b), rid) == []  # ended: not reported again
    with b.db.session() as s:
        ep = b.endpoint(s, "SITE_B_DISK")
        assert all(b.world.read(ep, b.scope, n) == d for n, d in FILES.items())
    assert {k: v for k, v in replicas(b, [f.id for f in files]).items()
            if k[1] == "SITE_B_DISK"} == {(f.id, "SITE_B_DISK"): "available" for f in files}


def test_a_failed_replication_is_reported_failed_with_an_error(
        ddm_backend: Backend, tmp_path: Path) -> None:
    b = ddm_backend
    upload(b, b.did("raw"), "SITE_A_DISK", FILES, tmp_path)
    upload(b, b.did("ok"), "SITE_A_DISK", {"ok._000001": b"fine bytes"}, tmp_path)
    bad = request(b, b.did("raw"), "SITE_B_DISK")
    good = request(b, b.did("ok"), "SITE_B_DISK", "t_dis2")
    b.world.complete(b.db, fail=[bad])
    reports = poll(b)
    (failed,) = reports_for(b, reports, bad)
    assert failed.outcome == Outcome.FAILED and failed.error
    assert [r.outcome for r in reports_for(b, reports, good)] == [Outcome.DONE]
    assert apply(b, reports) == {"applied": 2}
    with b.db.session() as s:
        req = s.get(DataRequest, bad)
        assert (req.state, req.error) == ("failed", failed.error[:2000])
    assert request_ends(b, bad) == [("", "requested"), ("requested", "failed")]
    assert reports_for(b, poll(b), bad) == []


def test_a_report_about_an_unknown_request_is_counted_and_writes_nothing(
        ddm_backend: Backend, tmp_path: Path) -> None:
    b = ddm_backend
    upload(b, b.did("raw"), "SITE_A_DISK", FILES, tmp_path)
    rid = request(b, b.did("raw"), "SITE_B_DISK")
    before = catalog_counts(b)
    assert apply(b, [RequestReport(Outcome.DONE, dedup_key="x1", request_id=rid + 1000),
                     RequestReport(Outcome.FAILED, dedup_key="x2", external_id="nope",
                                   error="?")]) == {"unknown": 2}
    assert catalog_counts(b) == before
    with b.db.session() as s:
        assert s.get(DataRequest, rid).state == "requested"


def test_requests_whose_files_are_there_are_reported_by_poll_after_commit_only(
        ddm_backend: Backend, tmp_path: Path) -> None:
    """The poller is the safety net: a request whose files are all on its endpoint is
    reported done by poll() alone. Each ending is an event that reaches subscribers
    only once the applying transaction commits."""
    b = ddm_backend
    upload(b, b.did("raw"), "SITE_A_DISK", FILES, tmp_path)
    r1 = request(b, b.did("raw"), "SITE_A_DISK", "t_dis1")  # already there
    r2 = request(b, b.did("raw"), "SITE_A_DISK", "t_dis2")
    r3 = request(b, b.did("raw"), "SITE_B_DISK", "t_dis3")  # not there: stays open
    got: list[events.StateChanged] = []
    unsubscribe = events.subscribe(got.append)
    try:
        with b.db.session() as s:
            reports = b.ddm.poll(s, NOW)
            assert len(reports) == 2 and {r.outcome for r in reports} == {Outcome.DONE}
            assert apply_reports(s, reports, source="poll", now=NOW) == {"applied": 2}
            assert [e for e in got if e.entity == "data_request"] == [], \
                "published before the poller committed"
    finally:
        unsubscribe()
    assert [len(reports_for(b, reports, r)) for r in (r1, r2, r3)] == [1, 1, 0]
    assert sorted(e.ids for e in got if e.to_state == "done") == [(r1,), (r2,)]
    with b.db.session() as s:
        assert [s.get(DataRequest, r).state for r in (r1, r2, r3)] == \
            ["done", "done", "requested"]
    assert apply(b, reports) == {"duplicate": 2}


def test_duplicated_and_reordered_request_events_change_nothing(ddm_backend: Backend,
                                                                tmp_path: Path) -> None:
    b = ddm_backend
    upload(b, b.did("raw"), "SITE_A_DISK", FILES, tmp_path)
    r1 = request(b, b.did("raw"), "SITE_B_DISK", "t_dis1")
    r2 = request(b, b.did("raw"), "SITE_C_DISK", "t_dis2")
    with b.db.session() as s:
        x2 = s.get(DataRequest, r2).external_id

    def event(key: str, outcome: str, **kw: object) -> str:
        with b.db.session() as s:
            return apply_request_outcome(s, source="cb", dedup_key=key, outcome=outcome,
                                         now=NOW, **kw)

    assert event("k1", "done", request_id=r1) == "applied"
    assert event("k1", "done", request_id=r1) == "duplicate"
    assert event("k1", "failed", request_id=r1, error="late") == "duplicate"
    assert event("k2", "failed", request_id=r1, error="late") == "stale"
    assert event("k3", "failed", external_id=x2, error="boom") == "applied"
    assert event("k4", "done", external_id=x2) == "stale"
    for key, kw in (("k5", {"request_id": 987654}), ("k6", {"external_id": "nope"})):
        with pytest.raises(LookupError):
            event(key, "done", **kw)
    with pytest.raises(ValueError):
        event("k7", "maybe", request_id=r1)
    with b.db.session() as s:
        assert (s.get(DataRequest, r1).state, s.get(DataRequest, r1).error) == ("done", "")
        assert (s.get(DataRequest, r2).state, s.get(DataRequest, r2).error) == \
            ("failed", "boom")
        assert sorted(s.scalars(select(DDMEvent.dedup_key))) == ["k1", "k2", "k3", "k4"]
    assert request_ends(b, r1)[1:] == [("requested", "done")]
    assert request_ends(b, r2)[1:] == [("requested", "failed")]


# ------------------------------------------------------------------ outputs
def test_register_outputs_creates_the_dataset_when_the_bytes_are_there(
        ddm_backend: Backend) -> None:
    b = ddm_backend
    data = b"x" * 1234
    with b.db.session() as s:
        ep = b.endpoint(s, "SITE_B_DISK")
        b.world.place(ep, b.scope, "out._000001.1", data)
        (f,) = b.ddm.register_outputs(s, b.did("out"), [FileInfo(b.scope, "out._000001.1", 1234,
                                                            adler(data))], ep)
        assert (f.size, f.adler32) == (1234, adler(data))
    with b.db.session() as s:
        assert [(x.name, x.size, x.adler32) for x in b.ddm.list_files(s, b.did("out"))] == \
            [("out._000001.1", 1234, adler(data))]
    assert replicas(b, [f.id]) == {(f.id, "SITE_B_DISK"): "available"}


def test_register_outputs_refuses_missing_or_wrong_size_files_all_or_nothing(
        ddm_backend: Backend) -> None:
    b = ddm_backend
    data = b"y" * 1234
    with b.db.session() as s:
        ep = b.endpoint(s, "SITE_B_DISK")
        b.world.place(ep, b.scope, "out._000001.1", data)
    good = FileInfo(b.scope, "out._000001.1", 1234, adler(data))
    before = catalog_counts(b)
    for files, why in (([good, FileInfo(b.scope, "gone", 10, adler(b"0" * 10))], "gone"),
                       ([FileInfo(b.scope, "out._000001.1", 1000, adler(data))], "1000"),
                       ([good, FileInfo(b.scope, "out._000001.1", 99, adler(data))], "99")):
        with pytest.raises(RegistrationError, match=why), b.db.session() as s:
            b.ddm.register_outputs(s, b.did("out"), files, b.endpoint(s, "SITE_B_DISK"))
    assert catalog_counts(b) == before
    with b.db.session() as s:
        assert s.scalar(select(Dataset).where(Dataset.name == "out")) is None
        with pytest.raises(UnknownDataset):
            b.ddm.list_files(s, b.did("out"))


# ------------------------------------------------------------------ pfn, daemons
def test_pfn_is_deterministic_and_under_the_endpoint_prefix(ddm_backend: Backend) -> None:
    b = ddm_backend
    with b.db.session() as s:
        eps = [b.endpoint(s, n) for n in ("SITE_A_DISK", "SITE_B_DISK")]
        names = ["raw._000001", "raw._000002", "out._000001.1"]
        urls = {(e.name, n): b.ddm.pfn(e, b.scope, n) for e in eps for n in names}
        for (ep_name, name), url in urls.items():
            ep = next(e for e in eps if e.name == ep_name)
            assert url == b.ddm.pfn(ep, b.scope, name)
            assert url.startswith(ep.url_prefix.rstrip("/") + "/") and url.endswith(f"/{name}")
        assert len(set(urls.values())) == len(urls)
        assert b.ddm.pfn(eps[0], "t", "a") != b.ddm.pfn(eps[0], "u", "a")  # scope counts


def test_the_backend_declares_its_daemons_and_the_runner_starts_exactly_those(
        ddm_backend: Backend) -> None:
    b = ddm_backend
    specs = b.ddm.daemons()
    assert all(isinstance(d, DaemonSpec) for d in specs)
    assert {d.name for d in specs} == b.daemons and len(specs) == len(b.daemons)
    for d in specs:
        assert d.interval_s > 0
        result = d.run_once(b.db)  # nothing to do yet: an idle run, not full
        assert isinstance(result, Ran) and not result.full
    sched = Scheduler(b.db, b.ddm)
    core = {"refiner", "broker", "activator", "watcher", "stuck", "rebroker", "finisher",
            "ddm_poller", "carousel"}
    assert set(sched.daemons) == core | b.daemons and not core & b.daemons
