"""A task's ``[subscription]`` where the DDM has none, and the table's grammar.

The local DDM keeps the interface's default: it refuses the option with a clear
error and the refused submit stores nothing. Every problem of the table is
reported at once, before any DDM is asked. (On Rucio: tests/rucio/test_rucio_subscription.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import DDMEvent, StateHistory, Task
from dawms.ddm_bridge.abc import DDMError, Subscription
from dawms.ddm_bridge.local import LocalDDM
from dawms.scheduler.task import TaskSpecError, submit, validate
from factories import make_dataset

pytestmark = pytest.mark.ddm


def spec(sub: object) -> dict:
    return {"name": "sub", "transformation": "cat {inputs} > {output}",
            "input_datasets": ["t:raw"], "output_dataset": "t:out.{task_id}",
            "subscription": sub}


def counts(db: Database) -> tuple[int, ...]:
    with db.session() as s:
        return tuple(s.scalar(select(func.count()).select_from(t))
                     for t in (Task, StateHistory, DDMEvent))


def test_the_local_ddm_refuses_a_subscription_and_nothing_is_stored(
        db: Database, sites: list[str], tmp_path: Path) -> None:
    ddm = LocalDDM()
    make_dataset(db, ddm, "t:raw", "SITE_A_DISK", 1, tmp_path)
    before = counts(db)
    with pytest.raises(TaskSpecError, match=r"subscription: the local DDM has no "
                       r"subscriptions: .*DAWMS_DDM=rucio"), db.session() as s:
        submit(s, spec({"datasets": "t:raw.run*", "rses": ["SITE_B_DISK"]}), ddm)
    assert counts(db) == before
    with db.session() as s, pytest.raises(DDMError, match="no subscriptions"):
        ddm.subscribe(s, Subscription("x", "t", "raw*", ()))
    with db.session() as s:  # without the option the same task is fine
        submit(s, {**spec(None), "subscription": None}, ddm)
    assert counts(db)[0] == before[0] + 1


@pytest.mark.parametrize(("sub", "why"), [
    ("t:raw*", "subscription must be a table"),
    ({"datasets": "t:raw*"}, "subscription.rses must be a list"),
    ({"datasets": "t:raw*", "rses": []}, "subscription.rses must be a list"),
    ({"datasets": "t:raw*", "rses": ["A"] * 2}, "distinct"),
    ({"datasets": "t:raw*", "rses": ["A"] * 11}, "1 to 10"),
    ({"datasets": "t:raw*", "rses": ["SITE_B_DISK"], "x": 1}, "unknown keys \\['x'\\]"),
    ({"datasets": "raw*", "rses": ["SITE_B_DISK"]}, "scope:pattern"),
    ({"datasets": "t:../raw", "rses": ["SITE_B_DISK"]}, "scope:pattern"),
    ({"datasets": "t:raw;rm -rf", "rses": ["SITE_B_DISK"]}, "scope:pattern"),
    ({"datasets": "t" * 26 + ":raw", "rses": ["SITE_B_DISK"]}, "scope:pattern"),
    ({"datasets": "t:" + "r" * 251, "rses": ["SITE_B_DISK"]}, "scope:pattern"),
    ({"datasets": "t:raw*", "rses": ["SITE_B_DISK"], "lifetime_s": 0}, "lifetime_s"),
    ({"datasets": "t:raw*", "rses": ["SITE_B_DISK"], "lifetime_s": True}, "lifetime_s"),
    ({"datasets": "t:raw*", "rses": ["SITE_B_DISK"], "lifetime_s": 10**10}, "lifetime_s"),
    ({"datasets": "t:raw*", "rses": ["SITE_B_DISK"], "activity": "x" * 51}, "activity"),
    ({"datasets": "t:raw*", "rses": ["SITE_B_DISK"], "activity": "a\nb"}, "activity"),
    ({"datasets": "t:raw*", "rses": ["NOPE_DISK"]}, "unknown endpoints \\['NOPE_DISK'\\]"),
])
def test_a_bad_subscription_table_is_refused_with_the_reason(
        db: Database, sites: list[str], sub: object, why: str) -> None:
    with db.session() as s, pytest.raises(TaskSpecError, match=why):
        validate(spec(sub), None, s)


def test_a_good_subscription_table_is_normalized(db: Database, sites: list[str]) -> None:
    with db.session() as s:
        clean = validate(spec({"datasets": "t:raw.run*", "rses": ["SITE_B_DISK",
                                                                  "SITE_C_DISK"]}), None, s)
    assert clean["subscription"] == {"scope": "t", "pattern": "raw.run*",
                                     "rses": ["SITE_B_DISK", "SITE_C_DISK"],
                                     "lifetime_s": None, "activity": "Production Input"}
