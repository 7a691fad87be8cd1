"""The tape part of the DDM interface (the carousel's), proved against every backend.

What the carousel relies on, whatever the DDM: ``request_staging`` makes one
``stage`` request (activity ``Staging``) from the tape to its disk buffer and
refuses anything else; the recall is carried out by the DDM (local: its tape
worker on an emulated library; Rucio: a rule to the buffer with the tape as
source, completed by Rucio's conveyor), files arrive one by one and each is
available in the catalog as soon as it is on the buffer while the rest wait; the
request then ends done, once; ``release_staging`` never lets go of a file still
needed and lets go of everything else. Real bytes, real servers.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from ddm_world import BUFFER, TAPE, Backend
from sqlalchemy import func, select

from dawms.catalog.models import DataRequest, DataRequestFile, File, Replica, StorageEndpoint
from dawms.catalog.states import ReplicaState
from dawms.ddm_bridge.abc import DDMError
from dawms.ddm_bridge.events import apply_reports

pytestmark = [pytest.mark.ddm, pytest.mark.carousel]
N = 4


def on_tape(b: Backend, name: str, tmp: Path) -> list[File]:
    src = tmp / "src" / name
    src.mkdir(parents=True)
    paths = []
    for i in range(N):
        p = src / f"{name}._{i:04d}"
        p.write_bytes(f"{name} {i} ".encode() * (50 + i))
        paths.append(p)
    with b.db.session() as s:
        files = b.ddm.upload(s, b.did(name), paths, b.endpoint(s, TAPE))
        s.expunge_all()
    return files


def stage(b: Backend, files: list[File], name: str = "t_stg1") -> int:
    with b.db.session() as s:
        req = b.ddm.request_staging(s, list(s.scalars(select(File).where(
            File.id.in_([f.id for f in files])))), b.endpoint(s, TAPE), b.endpoint(s, BUFFER),
            name=name, lifetime_s=3600)
        return req.id


def poll(b: Backend) -> None:
    now = datetime.now(UTC)
    with b.db.session() as s:
        apply_reports(s, b.ddm.poll(s, now), source="poll", now=now)


def on_buffer(b: Backend, files: list[File]) -> set[int]:
    """Files the catalog says are available on the buffer."""
    with b.db.session() as s:
        return set(s.scalars(select(Replica.file_id)
                             .join(StorageEndpoint, StorageEndpoint.id == Replica.endpoint_id)
                             .where(StorageEndpoint.name == BUFFER,
                                    Replica.state == ReplicaState.AVAILABLE,
                                    Replica.file_id.in_([f.id for f in files]))))


def test_a_recall_is_one_stage_request_from_the_tape_to_its_buffer(
        ddm_backend: Backend, tmp_path: Path) -> None:
    b = ddm_backend
    files = on_tape(b, "raw", tmp_path)
    rid = stage(b, files)
    with b.db.session() as s:
        req = s.get(DataRequest, rid)
        assert (req.kind, req.activity, req.state, req.files_total, req.ddm) == \
            ("stage", "Staging", "requested", N, b.ddm.name)
        assert s.get(StorageEndpoint, req.endpoint_id).name == BUFFER
        assert set(s.scalars(select(DataRequestFile.file_id).where(
            DataRequestFile.request_id == rid))) == {f.id for f in files}
    assert on_buffer(b, files) == set()


@pytest.mark.parametrize("source,dest", [(BUFFER, "SITE_A_DISK"), (TAPE, TAPE),
                                         ("SITE_A_DISK", TAPE)])
def test_staging_other_than_tape_to_disk_is_refused_and_nothing_is_made(
        ddm_backend: Backend, tmp_path: Path, source: str, dest: str) -> None:
    b = ddm_backend
    files = on_tape(b, "raw", tmp_path)
    with b.db.session() as s:
        before = s.scalar(select(func.count()).select_from(DataRequest))
        with pytest.raises(DDMError, match="from tape to disk"):
            b.ddm.request_staging(s, list(s.scalars(select(File).where(
                File.id.in_([f.id for f in files])))), b.endpoint(s, source),
                                  b.endpoint(s, dest), name="t_stg_bad", lifetime_s=3600)
    with b.db.session() as s:
        assert s.scalar(select(func.count()).select_from(DataRequest)) == before


def test_files_are_available_one_by_one_as_they_reach_the_buffer_then_done_once(
        ddm_backend: Backend, tmp_path: Path) -> None:
    b = ddm_backend
    files = on_tape(b, "raw", tmp_path)
    rid = stage(b, files)
    b.world.recall(b.db, at_least=2)
    poll(b)
    arrived = on_buffer(b, files)
    with b.db.session() as s:
        req = s.get(DataRequest, rid)
        assert req.state == "requested", "a recall with files still on tape is open"
        assert 2 <= len(arrived) < N and req.files_done == len(arrived)
        # what the catalog calls available is on the buffer, byte for byte
        buf = b.endpoint(s, BUFFER)
        tape = b.endpoint(s, TAPE)
        for f in files:
            data = b.world.read(buf, f.scope, f.name)
            if f.id in arrived:
                assert data == b.world.read(tape, f.scope, f.name)
                assert f"{zlib.adler32(data):08x}" == f.adler32
    b.world.recall(b.db)
    poll(b)
    poll(b)  # again: nothing more happens
    with b.db.session() as s:
        req = s.get(DataRequest, rid)
        assert (req.state, req.files_done) == ("done", N)
    assert on_buffer(b, files) == {f.id for f in files}


def test_release_keeps_what_is_still_needed_and_lets_go_of_the_rest(
        ddm_backend: Backend, tmp_path: Path) -> None:
    b = ddm_backend
    files = on_tape(b, "raw", tmp_path)
    rid = stage(b, files)
    b.world.recall(b.db)
    poll(b)
    with b.db.session() as s:
        req = s.get(DataRequest, rid)
        assert req.state == "done"
        # every file still needed: nothing is let go
        assert b.ddm.release_staging(s, [req], {f.id for f in files}) == 0
    assert b.world.staged_copy_held(b.db, rid)
    assert on_buffer(b, files) == {f.id for f in files}
    with b.db.session() as s:
        assert b.ddm.release_staging(s, [s.get(DataRequest, rid)], set()) == N
    assert not b.world.staged_copy_held(b.db, rid)
