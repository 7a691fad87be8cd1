"""What Rucio should forget or freeze once dawms is done with it.

Two chores in one daemon the backend declares: output and log datasets of
tasks that ended are closed in Rucio (and in the cache), so their content is
final; and the rule of each ended request that no unfinished job reads from
any more is deleted (its dispatch block's replicas then fall to Rucio's reaper,
the way PanDA drops ``_dis`` rules); staging rules are the carousel's pins and
are released by it (``carousel.pins``), never here. Each deletion is recorded once as a data
event (``rucio:rule:<id>:deleted``), so a rule is never deleted twice and the
record says when. Rucio being unreachable stops the chore until the next run.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import DataRequest, Dataset, DDMEvent, Job, JobFile, Task
from dawms.catalog.names import split_did
from dawms.catalog.states import JOB_FINAL, TASK_FINAL, RequestState
from dawms.ddm_bridge.abc import Ran
from dawms.ddm_bridge.events import record

from .gate import RucioUnavailable

if TYPE_CHECKING:
    from .ddm import RucioDDM

log = logging.getLogger(__name__)
BUNCH = 100  # datasets closed / rules deleted a run
ENDED = (RequestState.DONE, RequestState.FAILED, RequestState.CANCELLED)


def deleted_key(rule_id: str) -> str:
    return f"rucio:rule:{rule_id}:deleted"


def close_datasets(db: Database, ddm: RucioDDM, limit: int = BUNCH) -> int:
    """Close the open output/log datasets of ended tasks; returns how many."""
    with db.session() as s:
        dids = {d for out, log_ds in s.execute(select(Task.output_dataset, Task.log_dataset)
                                               .where(Task.state.in_(list(TASK_FINAL))))
                for d in (out, log_ds) if d}
        open_ds = []
        for did in sorted(dids):
            scope, name = split_did(did)
            ds = s.scalar(select(Dataset).where(Dataset.scope == scope, Dataset.name == name,
                                                Dataset.is_open == 1))
            if ds is not None:
                open_ds.append((ds.id, did))
    closed = 0
    for ds_id, did in open_ds[:limit]:
        ddm.close_dataset(did)
        with db.session() as s:
            s.get(Dataset, ds_id).is_open = 0
        log.info("closed %s in Rucio: its task ended", did)
        closed += 1
    return closed


def delete_rules(db: Database, ddm: RucioDDM, limit: int = BUNCH) -> int:
    """Delete the rules of ended requests no unfinished job reads from; returns how many."""
    with db.session() as s:
        rows = list(s.execute(select(DataRequest.id, DataRequest.external_id)
                              .where(DataRequest.ddm == "rucio",
                                     DataRequest.kind != "stage",  # the carousel's pins
                                     DataRequest.state.in_(list(ENDED)),
                                     DataRequest.external_id.is_not(None))
                              .order_by(DataRequest.id)))
        gone = set(s.scalars(select(DDMEvent.dedup_key).where(
            DDMEvent.dedup_key.in_([deleted_key(r) for _, r in rows]))))
        rows = [(i, r) for i, r in rows if deleted_key(r) not in gone]
        needed = set(s.scalars(select(JobFile.request_id)
                               .join(Job, Job.id == JobFile.job_id)
                               .where(JobFile.request_id.in_([i for i, _ in rows]),
                                      Job.state.not_in(list(JOB_FINAL)))))
        todo = [(i, r) for i, r in rows if i not in needed][:limit]
    for req_id, rule_id in todo:
        ddm.delete_rule(rule_id)
        with db.session() as s:
            record(s, source="housekeeping", dedup_key=deleted_key(rule_id),
                   kind="rule_deleted", payload={"request_id": req_id, "rule_id": rule_id},
                   now=datetime.now(UTC))
        log.info("deleted rule %s (request %s): no job needs it", rule_id, req_id)
    return len(todo)


def run_once(db: Database, ddm: RucioDDM, limit: int = BUNCH) -> Ran:
    """Both chores once; ``full`` when either took a whole bunch (more may wait)."""
    try:
        closed = close_datasets(db, ddm, limit)
        deleted = delete_rules(db, ddm, limit)
    except RucioUnavailable:
        return Ran(0, full=False)  # the gate logged what waits
    return Ran(closed + deleted, full=closed >= limit or deleted >= limit)
