"""The local DDM's tape recalls end the way every request ends: the tape worker
records what each recall did, ``LocalDDM.poll`` reports the request (done when every
file is on the buffer, failed only once every recall ended) and the report is
applied through ``events.apply_reports``, once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import DataRequest, File, Replica, StorageEndpoint
from dawms.ddm_bridge.abc import Ran
from dawms.ddm_bridge.local import LocalDDM
from dawms.ddm_bridge.local.staging import run_tape
from dawms.ddm_bridge.local.tape import SimClock
from factories import make_dataset

pytestmark = pytest.mark.carousel
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _stage(db: Database, ddm: LocalDDM, n: int, tmp_path: Path) -> tuple[int, list[int]]:
    make_dataset(db, ddm, "t:raw.R", "T1_TAPE", n, tmp_path)
    with db.session() as s:
        files = list(s.scalars(select(File).order_by(File.name)))
        tape, disk = (s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == n))
                      for n in ("T1_TAPE", "T1_DISK"))
        req = ddm.request_staging(s, files, tape, disk, name="recall", lifetime_s=3600)
        return req.id, [f.id for f in files]


def _step(db: Database, ddm: LocalDDM, clock: SimClock) -> Ran:
    """Move the clock to the library's next event and run the tape worker there."""
    t = ddm.library.next_event()
    if t is not None:
        clock.set(max(t, clock.now()) + 1e-6)
    return run_tape(db, ddm, T0 + timedelta(seconds=clock.now()))


def _request(db: Database, rid: int) -> DataRequest:
    with db.session() as s:
        req = s.get(DataRequest, rid)
        s.expunge(req)
        return req


def test_a_recall_failing_early_fails_its_request_only_when_every_recall_ended(
        db: Database, tape_ddm: LocalDDM, tape_sites: dict, clock: SimClock,
        tmp_path: Path) -> None:
    rid, file_ids = _stage(db, tape_ddm, 3, tmp_path)
    first = file_ids[0]
    tape_ddm.library.fail = lambda key: "medium error" if key[1] == first else None
    ran = run_tape(db, tape_ddm, T0)  # submitted; the drive starts mounting
    assert isinstance(ran, Ran) and not ran.full and ran == 0
    seen_failed_while_open = False
    for _ in range(20):
        ran = _step(db, tape_ddm, clock)
        assert not ran.full
        req = _request(db, rid)
        if req.state != "requested":
            break
        if "medium error" in req.error:
            seen_failed_while_open = True  # the failure is known, the others still run
            with db.session() as s:
                assert tape_ddm.poll(s, T0, request_ids=[rid]) == []
    assert seen_failed_while_open
    req = _request(db, rid)
    assert req.state == "failed" and "medium error" in req.error and req.files_done == 2
    with db.session() as s:
        states = dict(s.execute(select(Replica.file_id, Replica.state).where(
            Replica.endpoint_id == req.endpoint_id)).all())
    assert states == {first: "unavailable", file_ids[1]: "available",
                      file_ids[2]: "available"}


def test_a_recall_whose_files_all_arrived_is_reported_done_once(
        db: Database, tape_ddm: LocalDDM, tape_sites: dict, clock: SimClock,
        tmp_path: Path) -> None:
    rid, _ = _stage(db, tape_ddm, 3, tmp_path)
    run_tape(db, tape_ddm, T0)
    ended = 0
    for _ in range(20):
        ended += _step(db, tape_ddm, clock)
        if _request(db, rid).state != "requested":
            break
    assert ended == 3 and _request(db, rid).state == "done"
    with db.session() as s:  # ended: poll reports it no more
        assert tape_ddm.poll(s, T0, request_ids=[rid]) == []

