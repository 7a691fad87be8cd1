"""Retry by error category: elsewhere, more walltime, more memory, as it was, or never.

Four jobs run at SITE_A_PROD and fail as a pilot reports them; what each next
attempt gets is read back from the catalog.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import Job
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler import broker, refiner
from dawms.scheduler.config import SchedulerConfig
from dawms.scheduler.task import submit
from factories import claim, make_dataset, report

pytestmark = pytest.mark.broker
FAILURES = [  # (category, exit code) -> (hint, memory_mb, walltime_s) of the next attempt
    (("stagein", None), ({"exclude": ["SITE_A_PROD"]}, 2000, 3600)),
    (("timeout", None), (None, 2000, 5400)),
    (("payload", 137), (None, 3000, 3600)),
    (("payload", 1), (None, 2000, 3600)),
    (("killed", None), None),
]


def test_each_category_gets_its_own_next_attempt(db: Database, ddm: LocalDDM,
                                                 sites: list[str], tmp_path: Path) -> None:
    make_dataset(db, ddm, "rp:raw", "SITE_A_DISK", len(FAILURES), tmp_path)
    with db.session() as s:
        submit(s, {"name": "rp", "transformation": "true {inputs}",
                   "input_datasets": ["rp:raw"], "output_dataset": "rp:out",
                   "split": {"files_per_job": 1}, "retry": {"max_attempts": 3}}, ddm)
    refiner.run_once(db, ddm)
    broker.run_once(db, ddm, SchedulerConfig())
    now = datetime.now(UTC)
    claimed = sorted(claim(db, now).items())
    assert len(claimed) == len(FAILURES)
    for (_, (fence, _)), ((category, code), _) in zip(claimed, FAILURES, strict=True):
        report(db, ddm, fence, "running", now)
        report(db, ddm, fence, "failed", now, error_category=category, exit_code=code,
               error_diag=f"test {category}")
    with db.session() as s:
        nxt = {j.retry_of: (j.broker_hint, j.memory_mb, j.walltime_s, j.attempt)
               for j in s.scalars(select(Job).where(Job.retry_of.is_not(None)))}
    for (job_id, _), (_, want) in zip(claimed, FAILURES, strict=True):
        if want is None:
            assert job_id not in nxt
        else:
            assert nxt[job_id] == (*want, 2), (job_id, nxt[job_id])
