"""The Rucio backend against the real Rucio server: contents, replicas, PFNs, rules, outputs.

Every test talks to the Rucio 41 server `make services` runs (PostgreSQL behind
it); transfers are finished with ``update_replicas_states``, the way Rucio's
own finisher marks a replica, so a test needs no daemon unless it says so.
"""

from __future__ import annotations

import logging
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rucio_helpers import World, make_rucio_dataset, unique
from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import (
    DataRequest,
    DataRequestFile,
    Dataset,
    File,
    Replica,
    StorageEndpoint,
)
from dawms.ddm_bridge import get_ddm
from dawms.ddm_bridge.abc import FileInfo, Outcome, RegistrationError, UnknownDataset
from dawms.ddm_bridge.events import apply_reports
from dawms.ddm_bridge.rucio.ddm import RucioDDM
from dawms.ddm_bridge.rucio.settings import RucioSettings

pytestmark = pytest.mark.rucio


def ep(s, name: str) -> StorageEndpoint:  # type: ignore[no-untyped-def]
    return s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == name))


def replica_states(s, endpoint: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    rows = s.execute(select(File.name, Replica.state)
                     .join(Replica, Replica.file_id == File.id)
                     .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
                     .where(StorageEndpoint.name == endpoint))
    return dict(rows.all())


def adler(path: Path) -> str:
    return f"{zlib.adler32(path.read_bytes()):08x}"


def test_get_ddm_selects_rucio_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                    rucio_server: str) -> None:
    monkeypatch.setenv("DAWMS_RUCIO_HOST", rucio_server)
    monkeypatch.setenv("DAWMS_RUCIO_ACCOUNT", "root")
    monkeypatch.setenv("DAWMS_RUCIO_AUTH_TYPE", "userpass")
    monkeypatch.setenv("DAWMS_RUCIO_USERNAME", "ddmlab")
    monkeypatch.setenv("DAWMS_RUCIO_PASSWORD", "secret")
    monkeypatch.setenv("DAWMS_RUCIO_MAX_TRIES", "5")
    ddm = get_ddm("rucio")
    assert isinstance(ddm, RucioDDM) and ddm.name == "rucio"
    assert ddm.settings.max_tries == 5
    assert ddm.gate.call("whoami", lambda c: c.whoami())["account"] == "root"
    monkeypatch.setenv("DAWMS_RUCIO_AUTH_TYPE", "password")
    with pytest.raises(ValueError, match="auth_type"):
        get_ddm("rucio")


def test_list_files_reads_contents_and_replicas(db: Database, rucio_ddm: RucioDDM,
                                                rucio_sites: World, rucio_client,  # type: ignore[no-untyped-def]
                                                tmp_path: Path) -> None:
    did = unique(rucio_sites, "raw")
    paths = make_rucio_dataset(rucio_client, rucio_sites, did, "SITE_A", 3, tmp_path)
    with db.session() as s:
        files = rucio_ddm.list_files(s, did)
        assert [f.name for f in files] == sorted(p.name for p in paths)
        by_name = {p.name: p for p in paths}
        meta = {m["name"]: m for m in rucio_client.list_files(*did.split(":"))}
        for f in files:
            assert (f.size, f.adler32) == (3000, adler(by_name[f.name]))
            assert f.guid.replace("-", "").lower() == meta[f.name]["guid"].replace("-", "").lower()
        # the replicas are cached: available at SITE_A's RSE, nothing at SITE_B's
        assert replica_states(s, "SITE_A_DISK") == {f.name: "available" for f in files}
        assert replica_states(s, "SITE_B_DISK") == {}
        ds = s.scalar(select(Dataset).where(Dataset.name == did.split(":")[1]))
        assert ds.is_open == 1


def test_unknown_dataset_and_unknown_scope(db: Database, rucio_ddm: RucioDDM,
                                           rucio_sites: World) -> None:
    with db.session() as s:
        with pytest.raises(UnknownDataset):
            rucio_ddm.list_files(s, unique(rucio_sites, "nothing"))
        with pytest.raises(UnknownDataset):
            rucio_ddm.list_files(s, "noscope12345:nothing")
        assert s.scalar(select(Dataset.id)) is None


def test_cache_is_refreshed_when_stale(db: Database, rucio_settings: RucioSettings,
                                       rucio_sites: World, rucio_client,  # type: ignore[no-untyped-def]
                                       tmp_path: Path) -> None:
    did = unique(rucio_sites, "grow")
    make_rucio_dataset(rucio_client, rucio_sites, did, "SITE_A", 2, tmp_path)
    cached = RucioDDM(rucio_settings.model_copy(update={"cache_ttl_s": 3600}))
    fresh = RucioDDM(rucio_settings.model_copy(update={"cache_ttl_s": 0}))
    with db.session() as s:
        assert len(cached.list_files(s, did)) == 2
    scope, name = did.split(":")
    extra = tmp_path / "extra"
    extra.write_bytes(b"x" * 77)
    from rucio.client.uploadclient import UploadClient

    UploadClient(_client=rucio_client).upload([{
        "path": str(extra), "rse": rucio_sites.rse("SITE_A"), "did_scope": scope,
        "did_name": f"{name}.extra", "dataset_scope": scope, "dataset_name": name}])
    with db.session() as s:
        assert len(cached.list_files(s, did)) == 2  # within its TTL: the cache answers
        assert len(fresh.list_files(s, did)) == 3  # stale: read again from Rucio
        assert replica_states(s, "SITE_A_DISK")[f"{name}.extra"] == "available"


def test_pfn_is_the_one_rucio_lists_and_the_bytes_are_there(
        db: Database, rucio_ddm: RucioDDM, rucio_sites: World, rucio_client,  # type: ignore[no-untyped-def]
        tmp_path: Path) -> None:
    did = unique(rucio_sites, "pfn")
    paths = make_rucio_dataset(rucio_client, rucio_sites, did, "SITE_A", 2, tmp_path)
    scope, _ = did.split(":")
    listed = {r["name"]: r["rses"][rucio_sites.rse("SITE_A")][0] for r in
              rucio_client.list_replicas([{"scope": scope, "name": did.split(":")[1]}])}
    with db.session() as s:
        a = ep(s, "SITE_A_DISK")
        for p in paths:
            url = rucio_ddm.pfn(a, scope, p.name)
            assert listed[p.name] == url.replace("file:///", "file://localhost/", 1)
            assert Path(url.removeprefix("file://")).read_bytes() == p.read_bytes()


def _replicate(db: Database, ddm: RucioDDM, did: str, to: str,
               activity: str = "Production Input") -> tuple[int, str, list[str]]:
    with db.session() as s:
        files = ddm.list_files(s, did)
        name = f"{did.split(':')[1]}_dis{len(files)}"
        req = ddm.request_replication(s, files, ep(s, to), name=name, activity=activity)
        return req.id, req.external_id, [f.name for f in files]


def test_request_replication_is_one_rule_on_a_closed_dispatch_block(
        db: Database, rucio_ddm: RucioDDM, rucio_sites: World, rucio_client,  # type: ignore[no-untyped-def]
        tmp_path: Path) -> None:
    did = unique(rucio_sites, "dis")
    make_rucio_dataset(rucio_client, rucio_sites, did, "SITE_A", 4, tmp_path)
    req_id, rule_id, names = _replicate(db, rucio_ddm, did, "SITE_B_DISK",
                                        activity="Analysis Input")
    rule = rucio_client.get_replication_rule(rule_id)
    scope, name = did.split(":")
    assert rule["rse_expression"] == rucio_sites.rse("SITE_B")
    assert (rule["scope"], rule["name"]) == (scope, f"{name}_dis4")
    assert rule["activity"] == "Analysis Input"
    assert str(rule["notification"]).rsplit(".", 1)[-1] in ("CLOSE", "C")
    assert rule["expires_at"] is not None  # the lifetime
    assert str(rule["grouping"]).rsplit(".", 1)[-1] in ("DATASET", "D")
    dis = rucio_client.get_did(scope, f"{name}_dis4")
    assert dis["open"] is False
    assert sorted(f["name"] for f in rucio_client.list_files(scope, f"{name}_dis4")) == names
    with db.session() as s:
        req = s.get(DataRequest, req_id)
        assert (req.ddm, req.state, req.files_total) == ("rucio", "requested", 4)
        assert replica_states(s, "SITE_B_DISK") == {n: "copying" for n in names}


def test_poll_reports_a_rule_ok_and_marks_the_replicas(
        db: Database, rucio_ddm: RucioDDM, rucio_sites: World, rucio_client,  # type: ignore[no-untyped-def]
        tmp_path: Path) -> None:
    did = unique(rucio_sites, "ok")
    make_rucio_dataset(rucio_client, rucio_sites, did, "SITE_A", 3, tmp_path)
    req_id, rule_id, names = _replicate(db, rucio_ddm, did, "SITE_B_DISK")
    now = datetime.now(UTC)
    with db.session() as s:  # still replicating: nothing to report
        assert rucio_ddm.poll(s, now) == []
    scope = did.split(":")[0]
    rucio_client.update_replicas_states(rucio_sites.rse("SITE_B"), [
        {"scope": scope, "name": n, "state": "A"} for n in names])
    with db.session() as s:
        reports = rucio_ddm.poll(s, now)
        assert [(r.outcome, r.external_id) for r in reports] == [(Outcome.DONE, rule_id)]
        assert apply_reports(s, reports, source="poll", now=now) == {"applied": 1}
    with db.session() as s:
        req = s.get(DataRequest, req_id)
        assert (req.state, req.files_done) == ("done", 3)
        assert replica_states(s, "SITE_B_DISK") == {n: "available" for n in names}
        assert rucio_ddm.poll(s, now) == []  # a done request is not asked again


def test_stuck_rule_fails_the_request_after_bounded_tries(
        db: Database, rucio_settings: RucioSettings, rucio_sites: World, rucio_client,  # type: ignore[no-untyped-def]
        tmp_path: Path) -> None:
    ddm = RucioDDM(rucio_settings.model_copy(update={"max_tries": 3}))
    did = unique(rucio_sites, "stuck")
    make_rucio_dataset(rucio_client, rucio_sites, did, "SITE_A", 2, tmp_path)
    req_id, rule_id, names = _replicate(db, ddm, did, "SITE_B_DISK")
    rucio_client.update_replicas_states(rucio_sites.rse("SITE_B"), [
        {"scope": did.split(":")[0], "name": names[0], "state": "U"}])
    assert rucio_client.get_replication_rule(rule_id)["state"] == "STUCK"
    now = datetime.now(UTC)
    for attempt in (1, 2):
        with db.session() as s:
            assert ddm.poll(s, now) == []
            assert s.get(DataRequest, req_id).attempts == attempt
    with db.session() as s:
        reports = ddm.poll(s, now)
        assert [r.outcome for r in reports] == [Outcome.FAILED]
        assert reports[0].error.startswith(f"ddm.stuck: rule {rule_id} is STUCK")
        assert "after 3 tries" in reports[0].error
        apply_reports(s, reports, source="poll", now=now)
    with db.session() as s:
        req = s.get(DataRequest, req_id)
        assert req.state == "failed" and req.error.startswith("ddm.stuck")


def test_expired_rule_cancels_the_request(db: Database, rucio_ddm: RucioDDM,
                                          rucio_sites: World, rucio_client,  # type: ignore[no-untyped-def]
                                          tmp_path: Path) -> None:
    did = unique(rucio_sites, "gone")
    make_rucio_dataset(rucio_client, rucio_sites, did, "SITE_A", 1, tmp_path)
    req_id, rule_id, _ = _replicate(db, rucio_ddm, did, "SITE_B_DISK")
    with db.session() as s:
        assert rucio_ddm.poll(s, datetime.now(UTC)) == []  # replicating, not expired
    rucio_client.update_replication_rule(rule_id, {"lifetime": 1})
    expires = rucio_client.get_replication_rule(rule_id)["expires_at"].replace(tzinfo=UTC)
    from rucio_helpers import wait_for

    wait_for(lambda: datetime.now(UTC) > expires, 5, "the rule to expire")
    now = datetime.now(UTC)
    with db.session() as s:
        reports = rucio_ddm.poll(s, now)
        assert [r.outcome for r in reports] == [Outcome.CANCELLED]
        assert reports[0].error.startswith("ddm.rule_deleted")
        apply_reports(s, reports, source="poll", now=now)
        assert s.get(DataRequest, req_id).state == "cancelled"


def _outputs(world: World, ddm: RucioDDM, db: Database, names: list[str],
             scope: str) -> list[FileInfo]:
    infos = []
    with db.session() as s:
        b = ep(s, "SITE_B_DISK")
        for n in names:
            path = Path(ddm.pfn(b, scope, n).removeprefix("file://"))
            path.parent.mkdir(parents=True, exist_ok=True)
            data = n.encode() * 11
            path.write_bytes(data)
            infos.append(FileInfo(scope, n, len(data), f"{zlib.adler32(data):08x}"))
    return infos


def test_register_outputs_lists_every_output_with_its_adler32(
        db: Database, rucio_ddm: RucioDDM, rucio_sites: World, rucio_client) -> None:  # type: ignore[no-untyped-def]
    did = unique(rucio_sites, "out")
    scope, name = did.split(":")
    infos = _outputs(rucio_sites, rucio_ddm, db, [f"{name}.o{i}" for i in range(3)], scope)
    with db.session() as s:
        rows = rucio_ddm.register_outputs(s, did, infos, ep(s, "SITE_B_DISK"))
        assert [r.name for r in rows] == [i.name for i in infos]
    listed = {r["name"]: r for r in rucio_client.list_replicas([{"scope": scope, "name": name}])}
    for info in infos:
        rep = listed[info.name]
        assert (rep["bytes"], rep["adler32"]) == (info.size, info.adler32)
        assert list(rep["rses"]) == [rucio_sites.rse("SITE_B")]
    with db.session() as s:  # the same again changes nothing
        rucio_ddm.register_outputs(s, did, infos, ep(s, "SITE_B_DISK"))
        assert replica_states(s, "SITE_B_DISK") == {i.name: "available" for i in infos}
    assert len(list(rucio_client.list_files(scope, name))) == 3


def test_register_outputs_refuses_other_bytes_and_missing_files(
        db: Database, rucio_ddm: RucioDDM, rucio_sites: World, rucio_client) -> None:  # type: ignore[no-untyped-def]
    did = unique(rucio_sites, "clash")
    scope, name = did.split(":")
    infos = _outputs(rucio_sites, rucio_ddm, db, [f"{name}.o0"], scope)
    with db.session() as s:
        rucio_ddm.register_outputs(s, did, infos, ep(s, "SITE_B_DISK"))
    other = FileInfo(scope, infos[0].name, infos[0].size, "00000001")
    with db.session() as s, pytest.raises(RegistrationError, match="already registered"):
        rucio_ddm.register_outputs(s, did, [other], ep(s, "SITE_B_DISK"))
    ghost = FileInfo(scope, f"{name}.never-written", 5, "00000001")
    with db.session() as s, pytest.raises(RegistrationError, match="is not at"):
        rucio_ddm.register_outputs(s, did, [ghost], ep(s, "SITE_B_DISK"))
    assert [r["adler32"] for r in rucio_client.list_replicas([{"scope": scope, "name": name}])] \
        == [infos[0].adler32]
    assert not list(rucio_client.list_replicas([{"scope": scope, "name": ghost.name}]))


def test_upload_with_rucio_and_refuse_other_bytes(db: Database, rucio_ddm: RucioDDM,
                                                  rucio_sites: World, rucio_client,  # type: ignore[no-untyped-def]
                                                  tmp_path: Path) -> None:
    did = unique(rucio_sites, "up")
    scope, name = did.split(":")
    paths = []
    for i in range(2):
        p = tmp_path / f"{name}.u{i}"
        p.write_bytes(bytes([i]) * 1000)
        paths.append(p)
    with db.session() as s:
        rows = rucio_ddm.upload(s, did, paths, ep(s, "SITE_A_DISK"))
        assert [(r.name, r.adler32) for r in rows] == [(p.name, adler(p)) for p in paths]
    listed = {r["name"]: r for r in rucio_client.list_replicas([{"scope": scope, "name": name}])}
    assert {n: r["adler32"] for n, r in listed.items()} == {p.name: adler(p) for p in paths}
    with db.session() as s:  # the same bytes again: nothing changes
        rucio_ddm.upload(s, did, paths, ep(s, "SITE_A_DISK"))
    paths[0].write_bytes(b"other bytes")
    with db.session() as s, pytest.raises(RegistrationError, match="already registered"):
        rucio_ddm.upload(s, did, paths, ep(s, "SITE_A_DISK"))
    assert len(list(rucio_client.list_files(scope, name))) == 2


def test_rucio_unreachable_backs_off_and_loses_nothing(
        db: Database, rucio_settings: RucioSettings, rucio_sites: World, rucio_client,  # type: ignore[no-untyped-def]
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from rucio_helpers import Forwarder

    did = unique(rucio_sites, "down")
    make_rucio_dataset(rucio_client, rucio_sites, did, "SITE_A", 2, tmp_path)
    with Forwarder(rucio_settings.host) as fwd:
        ddm = RucioDDM(rucio_settings.model_copy(update={"host": fwd.url}))
        req_id, rule_id, names = _replicate(db, ddm, did, "SITE_B_DISK")
        rucio_client.update_replicas_states(rucio_sites.rse("SITE_B"), [
            {"scope": did.split(":")[0], "name": n, "state": "A"} for n in names])
        fwd.down()  # Rucio goes away: connections are refused
        caplog.set_level(logging.WARNING, logger="dawms.ddm_bridge.rucio.gate")
        now = datetime.now(UTC)
        with db.session() as s:
            assert ddm.poll(s, now) == []
        assert any("is unreachable" in r.message and f"checking rule {rule_id}" in r.message
                   and "next try in" in r.message for r in caplog.records), caplog.text
        assert ddm.gate.failures == 1
        with db.session() as s:  # backing off: no call is even tried
            assert ddm.poll(s, now) == []
            assert ddm.gate.failures == 1
            assert s.get(DataRequest, req_id).state == "requested"
        fwd.up()
        from rucio_helpers import wait_for

        def done() -> bool:
            with db.session() as s:
                reps = ddm.poll(s, datetime.now(UTC))
                apply_reports(s, reps, source="poll", now=datetime.now(UTC))
                return s.get(DataRequest, req_id).state == "done"

        wait_for(done, 10, "the request once Rucio is back")
    with db.session() as s:
        assert replica_states(s, "SITE_B_DISK") == {n: "available" for n in names}
        assert s.scalar(select(DataRequestFile.done).where(
            DataRequestFile.request_id == req_id).limit(1)) == 1


def test_endpoint_rse_mapping_in_the_site_file(db: Database, rucio_sites: World) -> None:
    from rucio_helpers import site_file

    from dawms.catalog.site_config import ConfigError, validate

    with db.session() as s:
        assert ep(s, "SITE_A_DISK").rse_name == rucio_sites.rse("SITE_A")
        assert replica_states(s, "SITE_A_DISK") == {}
    cfg = site_file(rucio_sites)
    cfg["endpoint"][0]["rse"] = "bad/../rse"
    with pytest.raises(ConfigError, match="rse must be an RSE name"):
        validate(cfg)
    del cfg["endpoint"][0]["rse"]
    with db.session() as s:
        from dawms.catalog.site_config import sync

        sync(s, validate(cfg), actor="test", source="no rse")
        assert ep(s, "SITE_A_DISK").rse_name == "SITE_A_DISK"  # default: its own name
