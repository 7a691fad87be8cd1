"""Output registration checks the pilot's adler32 against the stored bytes, off the DB lock.

A pilot that lies about an output's checksum (or size) gets its job failed as a
stage-out failure and nothing is registered; an honest one finishes. The stored
file is read BEFORE the report's transaction opens: while the bytes are read,
another connection can still lock the job's row (PostgreSQL) or open a write
transaction (SQLite).
"""

from __future__ import annotations

import sqlite3

import pytest
from fastapi.testclient import TestClient
from security_helpers import sent_job
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import OperationalError

from dawms.catalog.db import Database
from dawms.catalog.models import File, Job, JobFile
from dawms.ddm_bridge.local import LocalDDM
from factories import write_outputs

pytestmark = pytest.mark.security


def _report(api: TestClient, job: dict, outputs: list[dict]) -> None:
    body = {"job_id": job["job_id"], "attempt": job["attempt"], "lease_token": job["lease_token"],
            "state": "finished", "exit_code": 0, "outputs": outputs}
    reply = api.post("/api/v1/pilot/update_job", json=body)
    assert reply.status_code == 200, reply.text


def _outcome(db: Database, job_id: int) -> tuple[str, str, str, int, int]:
    with db.session() as s:
        job = s.get(Job, job_id)
        registered = s.scalar(select(text("count(*)")).select_from(JobFile).where(
            JobFile.job_id == job_id, JobFile.type != "in", JobFile.file_id.is_not(None)))
        files = s.scalar(select(text("count(*)")).select_from(File).where(
            File.name.like("out.%")))
        return job.state, job.error_category, job.error_diag, registered, files


def _flip(adler: str) -> str:
    return f"{int(adler, 16) ^ 1:08x}"


@pytest.mark.parametrize("which", [0, 1], ids=["output", "log"])
def test_a_pilot_lying_about_adler32_gets_its_job_failed(db: Database, ddm: LocalDDM,
                                                         api: TestClient, which: int) -> None:
    job = sent_job(db, ddm, api)
    outputs = write_outputs(job)  # real bytes on the endpoint, honest checksums...
    outputs[which]["adler32"] = _flip(outputs[which]["adler32"])  # ...but one lie
    _report(api, job, outputs)
    state, category, diag, registered, files = _outcome(db, job["job_id"])
    assert (state, category) == ("failed", "stageout"), diag
    assert f"the pilot reported {outputs[which]['size']} {outputs[which]['adler32']}" in diag
    assert "nothing was registered" in diag
    assert (registered, files) == (0, 0)


def test_a_pilot_lying_about_the_size_gets_its_job_failed(db: Database, ddm: LocalDDM,
                                                          api: TestClient) -> None:
    job = sent_job(db, ddm, api)
    outputs = write_outputs(job)
    outputs[0]["size"] += 1
    _report(api, job, outputs)
    state, category, _, registered, files = _outcome(db, job["job_id"])
    assert (state, category, registered, files) == ("failed", "stageout", 0, 0)


def test_an_honest_pilot_finishes(db: Database, ddm: LocalDDM, api: TestClient) -> None:
    job = sent_job(db, ddm, api)
    _report(api, job, write_outputs(job))
    state, _, diag, registered, files = _outcome(db, job["job_id"])
    assert (state, registered, files) == ("finished", 2, 2), diag


def _row_is_free(db: Database, job_id: int) -> bool:
    """Whether another connection could take the job's row (or the SQLite write lock) now."""
    if db.url.startswith("sqlite"):
        conn = sqlite3.connect(db.url.removeprefix("sqlite:///"), timeout=0)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.rollback()
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()
    engine = create_engine(db.url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT id FROM job WHERE id = :id FOR UPDATE NOWAIT"),
                         {"id": job_id})
            conn.rollback()
        return True
    except OperationalError:
        return False
    finally:
        engine.dispose()


def test_the_stored_bytes_are_read_with_no_lock_held(db: Database, ddm: LocalDDM,
                                                     api: TestClient,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    job = sent_job(db, ddm, api)
    outputs = write_outputs(job)
    seen: list[bool] = []
    original = LocalDDM.stored_checksums

    def probe(self, endpoint, files):  # type: ignore[no-untyped-def]
        seen.append(_row_is_free(db, job["job_id"]))
        return original(self, endpoint, files)

    monkeypatch.setattr(LocalDDM, "stored_checksums", probe)
    _report(api, job, outputs)
    assert seen == [True], "the outputs were read while the report's transaction held a lock"
    assert _outcome(db, job["job_id"])[0] == "finished"
