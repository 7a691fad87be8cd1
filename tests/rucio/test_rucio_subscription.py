"""A task's ``[subscription]`` on the real Rucio: created at submit, acted on by Rucio.

The task asks that new datasets of its scope matching a pattern flow to SITE_B.
After submit the subscription is in Rucio as asked; a new matching dataset then
gets its rule at SITE_B's RSE from Rucio's own transmogrifier (run once in the
server's venv), with the task's activity and lifetime; a dataset that does not
match gets none. dawms is told nothing in between: the flow is Rucio's.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rucio_helpers import RUCIO_DIR, World, make_rucio_dataset, unique
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import DDMEvent, Task
from dawms.ddm_bridge.rucio.ddm import RucioDDM
from dawms.scheduler.task import TaskSpecError, submit

pytestmark = pytest.mark.rucio


def transmogrifier() -> float:
    t0 = time.monotonic()
    res = subprocess.run([str(RUCIO_DIR / "venv" / "bin" / "rucio-transmogrifier"),
                          "--run-once"],
                         env={**os.environ, "RUCIO_CONFIG": str(RUCIO_DIR / "rucio.cfg")},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return time.monotonic() - t0


def spec(did: str, **sub: object) -> dict:
    return {"name": "sub.test", "transformation": "cat {inputs} > {output}",
            "input_datasets": [did], "output_dataset": did.split(":")[0] + ":out.{task_id}",
            "subscription": sub}


def test_a_task_subscription_makes_rucio_replicate_new_matching_datasets(
        db: Database, rucio_ddm: RucioDDM, rucio_sites: World, rucio_client,  # type: ignore[no-untyped-def]
        tmp_path: Path) -> None:
    raw = unique(rucio_sites, "raw")
    make_rucio_dataset(rucio_client, rucio_sites, raw, "SITE_A", 1, tmp_path)
    scope, stem = rucio_sites.scope, raw.split(":")[1].replace("raw.", "run")
    with db.session() as s:
        task = submit(s, spec(raw, datasets=f"{scope}:{stem}.*", rses=["SITE_B_DISK"],
                              lifetime_s=7200, activity="Analysis Input"), rucio_ddm)
        task_id = task.id
    with db.session() as s:
        (event,) = s.scalars(select(DDMEvent).where(DDMEvent.kind == "subscription"))
    name = event.payload["name"]
    assert name.startswith(f"dawms.task{task_id}.")
    (sub,) = [x for x in rucio_client.list_subscriptions(name=name, account="root")]
    assert json.loads(sub["filter"]) == {"scope": [scope], "pattern": f"{stem}.*",
                                         "did_type": ["DATASET"]}
    assert json.loads(sub["replication_rules"]) == [
        {"copies": 1, "rse_expression": rucio_sites.rse("SITE_B"), "grouping": "DATASET",
         "activity": "Analysis Input", "lifetime": 7200}]
    assert event.dedup_key == f"rucio:subscription:{sub['id']}"

    new, other = f"{scope}:{stem}.0001", f"{scope}:x{stem}.0001"
    for did in (new, other):
        make_rucio_dataset(rucio_client, rucio_sites, did, "SITE_A", 2, tmp_path)
    before = datetime.now(UTC)
    # a run takes the new DIDs of its share of the live transmogrifiers (heartbeats of
    # other runs against this server split the work): run it, as its daemon would, until
    # it has looked at ours (bounded)
    for run in range(1, 6):
        took = transmogrifier()
        print(f"rucio-transmogrifier --run-once #{run}: {took:.1f} s")
        if rules := list(rucio_client.list_did_rules(*new.split(":"))):
            break
    (rule,) = rules
    assert (rule["rse_expression"], rule["activity"], rule["subscription_id"]) == \
        (rucio_sites.rse("SITE_B"), "Analysis Input", sub["id"])
    expires = rule["expires_at"].replace(tzinfo=UTC)
    assert before + timedelta(seconds=7000) < expires < datetime.now(UTC) + \
        timedelta(seconds=7300)
    assert list(rucio_client.list_did_rules(*other.split(":"))) == []


def test_rucio_refusing_the_subscription_refuses_the_task(
        db: Database, rucio_ddm: RucioDDM, rucio_sites: World, rucio_client,  # type: ignore[no-untyped-def]
        tmp_path: Path) -> None:
    raw = unique(rucio_sites, "raw")
    make_rucio_dataset(rucio_client, rucio_sites, raw, "SITE_A", 1, tmp_path)
    before = counts(db)
    # our grammar allows the activity; Rucio knows none of that name
    with pytest.raises(TaskSpecError, match="subscription: Rucio refused"), \
            db.session() as s:
        submit(s, spec(raw, datasets=f"{rucio_sites.scope}:never*", rses=["SITE_B_DISK"],
                       activity="No Such Activity"), rucio_ddm)
    assert counts(db) == before
    assert [x for x in rucio_client.list_subscriptions(account="root")
            if f"{rucio_sites.scope}" in x["filter"] and "never" in x["filter"]] == []


def counts(db: Database) -> tuple[int, ...]:
    with db.session() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (Task, DDMEvent))
