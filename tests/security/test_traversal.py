"""Names cannot escape storage: a task, a DDM event, a pilot report, an upload and forged
catalog rows each try ``..``, absolute paths, ``/`` and overlong names.

Through the real app (in-process, over SQLite and PostgreSQL): every attempt is a
clear 4xx in the ``{success, message, data}`` envelope, nothing is stored (rows and
history counted), and nothing on disk changes (the whole test tree is compared,
byte for byte, before and after).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from security_helpers import SPEC, sent_job, tree
from sqlalchemy import func, insert, select

from dawms.catalog.db import Database
from dawms.catalog.models import (
    DataRequest,
    Dataset,
    DDMEvent,
    File,
    Job,
    Replica,
    StateHistory,
    StorageEndpoint,
    Task,
)
from dawms.catalog.names import InvalidName
from dawms.cli import main
from dawms.ddm_bridge.abc import FileInfo, RegistrationError
from dawms.ddm_bridge.local import LocalDDM, transfer
from dawms.scheduler.runner import Scheduler
from factories import make_dataset, write_outputs

pytestmark = pytest.mark.security

BAD_SCOPES = ["..", "../../escape", "/abs", "/", "a/b", "s" * 26, ".hidden", "-rf", "a b"]
BAD_NAMES = ["..", "../../escape", "/etc/passwd", "/abs", "a/b", "x/../../y", "n" * 251,
             ".hidden", "-rf", "a..b", "a b", "a\\b", "é"]


def _disk(tmp_path: Path) -> dict[str, bytes]:
    """Everything on disk under the test's tree but the catalog's own SQLite files."""
    return {p: b for p, b in tree(tmp_path).items() if not Path(p).name.startswith("catalog.db")}


def _counts(db: Database) -> tuple[int, ...]:
    with db.session() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) or 0
                     for t in (Task, Job, Dataset, File, Replica, StateHistory, DDMEvent))


def _refused(reply, status: int, *fragments: str) -> str:  # type: ignore[no-untyped-def]
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"success", "code", "message", "data"}, body
    assert isinstance(body["code"], str) and body["code"], body
    assert body["success"] is False and body["data"] is None, body
    for fragment in fragments:
        assert fragment in body["message"], body["message"]
    return body["message"]


def _task_attempts() -> list[tuple[dict, str]]:
    out = []
    for scope in BAD_SCOPES:
        out.append(({"output_dataset": f"{scope}:esc.{{task_id}}"}, "output_dataset: scope"))
        out.append(({"input_datasets": [f"{scope}:raw"]}, "input_datasets: scope"))
    for name in BAD_NAMES:
        out.append(({"output_dataset": f"sec:{name}"}, "output_dataset"))
        out.append(({"log_dataset": f"sec:{name}.{{task_id}}"}, "log_dataset"))
        out.append(({"input_datasets": ["sec:raw", f"sec:{name}"]}, "input dataset"))
    return out


@pytest.mark.parametrize("change, fragment", _task_attempts(),
                         ids=lambda v: repr(v)[:40] if isinstance(v, dict) else None)
def test_a_task_with_escaping_names_is_refused(db: Database, api: TestClient, tmp_path: Path,
                                               change: dict, fragment: str) -> None:
    before, disk = _counts(db), _disk(tmp_path)
    message = _refused(api.post("/api/v1/task/submit", json={**SPEC, **change}), 400,
                       "invalid task spec: ")
    assert fragment in message or "input_datasets" in message, message
    Scheduler(db, LocalDDM()).run_all_once()
    assert _counts(db) == before
    assert _disk(tmp_path) == disk


def test_the_issue_s_escape_is_refused_and_a_good_task_still_runs(
        db: Database, ddm: LocalDDM, api: TestClient, tmp_path: Path) -> None:
    _refused(api.post("/api/v1/task/submit",
                      json={**SPEC, "output_dataset": "../../escape:esc.{task_id}"}),
             400, "scope '../../escape' contains a path separator")
    reply = api.post("/api/v1/task/submit", json=SPEC)
    assert reply.status_code == 200, reply.text
    Scheduler(db, ddm).run_all_once()
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 2


# --- a DDM event -------------------------------------------------------------------------------

def _request(db: Database, ddm: LocalDDM) -> str:
    with db.session() as s:
        f = s.scalar(select(File).where(File.scope == "sec").limit(1))
        ep = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "SITE_C_DISK"))
        return ddm.request_replication(s, [f], ep, name="sec_dis1").external_id


@pytest.mark.parametrize("field", ["source", "external_id"])
@pytest.mark.parametrize("bad", [*BAD_NAMES[:-1], "s" * 65])
def test_a_ddm_event_with_escaping_names_is_refused(db: Database, ddm: LocalDDM,
                                                    api: TestClient, tmp_path: Path,
                                                    field: str, bad: str) -> None:
    ext = _request(db, ddm)
    before, disk = _counts(db), _disk(tmp_path)
    event = {"source": "http", "dedup_key": "k1", "outcome": "done", "external_id": ext,
             field: bad}
    _refused(api.post("/api/v1/ddm/event", json=event), 422, "invalid request: ", field)
    assert _counts(db) == before
    assert _disk(tmp_path) == disk
    with db.session() as s:
        assert s.scalar(select(DataRequest.state).where(DataRequest.external_id == ext)) \
            == "requested"


# --- a pilot report ------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", BAD_NAMES)
def test_a_pilot_report_with_escaping_names_is_refused(db: Database, ddm: LocalDDM,
                                                       api: TestClient, tmp_path: Path,
                                                       bad: str) -> None:
    job = sent_job(db, ddm, api)
    outputs = write_outputs(job)  # the real outputs are on disk...
    before, disk = _counts(db), _disk(tmp_path)
    body = {"job_id": job["job_id"], "attempt": job["attempt"], "lease_token": job["lease_token"],
            "state": "finished", "exit_code": 0,
            "outputs": [*outputs, {"lfn": bad, "type": "out", "size": 1, "adler32": "00000001"}]}
    _refused(api.post("/api/v1/pilot/update_job", json=body), 422, "invalid request: ",
             "outputs.2.lfn")
    bulk = api.post("/api/v1/pilot/update_jobs_bulk", json={"updates": [body]})
    _refused(bulk, 422, "updates.0.outputs.2.lfn")
    assert _counts(db) == before  # ...but nothing was registered, no state moved
    assert _disk(tmp_path) == disk
    with db.session() as s:
        assert s.get(Job, job["job_id"]).state == "sent"


def test_the_job_spec_names_only_endpoints_its_urls_lie_under(db: Database, ddm: LocalDDM,
                                                              api: TestClient) -> None:
    job = sent_job(db, ddm, api)
    prefixes = job["endpoints"]
    assert job["endpoint_out"] in prefixes
    for url in [u for i in job["inputs"] for u in i["urls"]] + \
            [o["url"] for o in job["outputs"]] + [job["log"]["url"]]:
        assert any(url.startswith(p.rstrip("/") + "/") for p in prefixes.values()), url


# --- the local DDM: uploads and forged rows ------------------------------------------------------

@pytest.mark.parametrize("bad", [".hidden", "-rf", "a b", "x;y", "$(id)", "a..b", "n" * 251])
def test_upload_refuses_file_names_outside_the_grammar(db: Database, ddm: LocalDDM,
                                                       sites: list[str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str],
                                                       bad: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    good, evil = src / "good.1", src / bad
    good.write_bytes(b"good")
    evil.write_bytes(b"evil")
    before, disk = _counts(db), _disk(tmp_path)
    with db.session() as s:
        ep = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "SITE_A_DISK"))
        with pytest.raises(RegistrationError, match="nothing was uploaded"):
            ddm.upload(s, "up:ds", [good, evil], ep)
    monkeypatch.setenv("DAWMS_DB_URL", db.url)
    assert main(["data", "upload", "up:ds", str(good), str(evil), "--endpoint",
                 "SITE_A_DISK"]) == 2
    assert "nothing was uploaded" in capsys.readouterr().err
    assert _counts(db) == before
    assert _disk(tmp_path) == disk


@pytest.mark.parametrize("did", ["../../up:ds", "up:../ds", "/abs:ds", "up:/ds", "up:a/b"])
def test_upload_refuses_dataset_names_outside_the_grammar(db: Database, sites: list[str],
                                                          tmp_path: Path, did: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "f.1"
    f.write_bytes(b"x")
    monkeypatch.setenv("DAWMS_DB_URL", db.url)
    disk = _disk(tmp_path)
    assert main(["data", "upload", did, str(f), "--endpoint", "SITE_A_DISK"]) == 2
    assert _disk(tmp_path) == disk


def test_catalog_rows_refuse_names_outside_the_grammar(db: Database) -> None:
    with db.session() as s:
        for bad in ("../x", "/abs", "a/b", ".h"):
            with pytest.raises(InvalidName):
                s.add(File(scope="ok", name=bad, size=1, adler32="00000001", guid="g"))
            with pytest.raises(InvalidName):
                s.add(Dataset(scope=bad, name="ds"))


def test_register_outputs_refuses_escaping_names_without_saying_what_is_outside(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    secret = tmp_path / "storage" / "SITE_A" / "secret.bin"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(b"s" * 12345)
    with db.session() as s:
        ep = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "SITE_A_DISK"))
        for name in ("../../../secret.bin", "../../../../SITE_A/secret.bin"):
            info = FileInfo(scope="sec", name=name, size=12345, adler32="00000001")
            with pytest.raises(RegistrationError) as err:
                ddm.register_outputs(s, "sec:out", [info], ep)
            assert "12345" not in str(err.value)
            assert ddm.stored_checksums(ep, [info]) == {}
    assert _counts(db)[2:4] == (0, 0)


def test_the_transfer_worker_refuses_forged_names(db: Database, ddm: LocalDDM,
                                                  sites: list[str], tmp_path: Path) -> None:
    """Rows written behind the catalog's back (raw SQL) with escaping names: the worker
    reads and writes nothing outside the endpoint roots, and fails only those files."""
    make_dataset(db, ddm, "sec:raw", "SITE_A_DISK", 1, tmp_path)
    outside = tmp_path / "storage" / "outside.bin"
    outside.write_bytes(b"o" * 777)
    with db.session() as s:
        src = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "SITE_A_DISK"))
        dst = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "SITE_B_DISK"))
        ids = []
        for name in ("../../../../outside.bin", "../../../../../SITE_B/pwned.bin"):
            ids.append(s.execute(insert(File).values(
                scope="sec", name=name, size=777, adler32="00000001", guid=name[-10:])
                .returning(File.id)).scalar_one())
        s.execute(insert(Replica), [{"file_id": i, "endpoint_id": src.id, "state": "available"}
                                    for i in ids])
        good = s.scalar(select(File).where(File.scope == "sec", File.name.like("raw%")))
        files = [*s.scalars(select(File).where(File.id.in_(ids))), good]
        rid = ddm.request_replication(s, files, dst, name="sec_dis2").id
    disk = _disk(tmp_path)
    transfer.run_once(db)
    with db.session() as s:
        req = s.get(DataRequest, rid)
        assert req.state == "failed" and "not a plain file name" in req.error, req.error
        assert "777" not in req.error
        assert req.files_done == 1  # the good file was copied
    after = _disk(tmp_path)
    new = set(after) - set(disk)
    dst_root = str(tmp_path / "storage" / "SITE_B" / "disk") + "/"
    assert new and all(p.startswith(dst_root) for p in new), new  # only the good copy
    assert {p: after[p] for p in disk} == disk  # nothing else changed
