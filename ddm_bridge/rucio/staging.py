"""The Rucio DDM's side of the carousel: recalls from a TAPE RSE through rules.

``RucioStaging`` (mixed into ``RucioDDM``) implements the tape part of the DDM
interface as PanDA's data carousel does on Rucio: one bunch of the carousel is a
new closed dataset and one rule of it to the disk buffer's RSE with the tape's
RSE as ``source_replica_expression`` and activity ``Staging`` (a ``stage`` data
request); Rucio's conveyor recalls the files (bring-online from a TAPE RSE)
and the rule ends like any other (hermes' messages or ``poll()``). While a
stage rule is open ``poll()`` reads its replica locks, so every file that is on
the buffer is available in the catalog at once (the carousel lets the jobs of
those files go on) and the rest wait. The rule's lifetime is the pin
(``extend_staging`` renews it); expiring the rule is the release, done only
when none of its files is still needed (a rule holds all its files or none).
Rucio does not say where a file sits on tape: ``tape_locality`` knows nothing
and the carousel releases in dataset order.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from dawms.catalog.models import DataRequest, DataRequestFile, File, StorageEndpoint
from dawms.catalog.states import ReplicaState
from dawms.ddm_bridge.abc import DDMError

from . import cache

if TYPE_CHECKING:
    from .gate import RucioGate

log = logging.getLogger(__name__)
STAGING_ACTIVITY = "Staging"


class RucioStaging:
    """Tape recalls for the Rucio DDM (a mixin: ``RucioDDM(RucioStaging, DDM)``)."""

    name: str
    gate: RucioGate
    if TYPE_CHECKING:  # RucioDDM's
        def rule_request(self, session: Session, files: list[File],
                         endpoint: StorageEndpoint, *, name: str, activity: str,
                         lifetime_s: int | None, kind: str = "replicate",
                         source_rse: str | None = None) -> DataRequest: ...

    # ------------------------------------------------------------- interface
    def request_staging(self, session: Session, files: list[File], source: StorageEndpoint,
                        destination: StorageEndpoint, *, name: str,
                        lifetime_s: int) -> DataRequest:
        if source.kind != "tape" or destination.kind != "disk":
            raise DDMError(f"staging goes from tape to disk, not {source.name} "
                           f"({source.kind}) -> {destination.name} ({destination.kind})")
        if not 0 < lifetime_s <= 10 * 365 * 86400:
            raise DDMError(f"a staging pin of {lifetime_s} s is out of range")
        return self.rule_request(session, files, destination, name=name,
                                 activity=STAGING_ACTIVITY, lifetime_s=int(lifetime_s),
                                 kind="stage", source_rse=source.rse_name)

    def extend_staging(self, session: Session, requests: list[DataRequest],
                       lifetime_s: int) -> None:
        """The pin is the rule's lifetime: set it to ``lifetime_s`` from now."""
        from rucio.common.exception import RuleNotFound

        for req in requests:
            if not req.external_id:
                continue
            rule_id = str(req.external_id)

            def extend(c: Any, r: str = rule_id) -> None:
                with contextlib.suppress(RuleNotFound):  # gone: poll reports it cancelled
                    c.update_replication_rule(r, {"lifetime": int(lifetime_s)})

            self.gate.call(f"extending staging rule {rule_id} by {lifetime_s} s", extend)

    def release_staging(self, session: Session, requests: list[DataRequest],
                        keep: set[int]) -> int:
        """Let the rules none of whose files is in ``keep`` expire now; returns their
        file count.

        A rule's lifetime set to 0 expires it at once (a plain deletion would give it
        an hour's grace); Rucio's judge-cleaner then removes it with its locks and the
        reaper the buffer copies no other rule locks. The cache forgets them at the
        next refresh of their dataset."""
        from rucio.common.exception import RuleNotFound

        released = 0
        for req in requests:
            if not req.external_id:
                continue
            files = set(session.scalars(select(DataRequestFile.file_id)
                                        .where(DataRequestFile.request_id == req.id)))
            if files & keep:
                continue  # a rule holds all its files or none: kept while one is needed
            rule_id = str(req.external_id)

            def expire(c: Any, r: str = rule_id) -> None:
                with contextlib.suppress(RuleNotFound):  # gone already: released
                    c.update_replication_rule(r, {"lifetime": 0})

            self.gate.call(f"releasing staging rule {rule_id}", expire)
            log.info("released staging rule %s (request %s, %d files)", rule_id, req.id,
                     len(files))
            released += len(files)
        return released

    # ------------------------------------------------------------- progress
    def staged_files(self, session: Session, req: DataRequest, now: datetime) -> int:
        """Mark the files of open stage rule ``req`` whose locks are OK as available on
        the buffer (and done in the request); returns how many are on the buffer."""
        rule_id = str(req.external_id)
        locks = self.gate.call(f"reading the locks of staging rule {rule_id}",
                               lambda c: list(c.list_replica_locks(rule_id)))
        ok = {(lk["scope"], lk["name"]) for lk in locks
              if str(lk.get("state", "")).upper().rsplit(".", 1)[-1] == "OK"}
        rows = session.execute(
            select(File.id, File.scope, File.name, File.size, DataRequestFile.done)
            .join(DataRequestFile, DataRequestFile.file_id == File.id)
            .where(DataRequestFile.request_id == req.id)).all()
        arrived = [(fid, size) for fid, scope, name, size, done in rows
                   if (scope, name) in ok]
        new = [fid for fid, _ in arrived if fid not in
               {r[0] for r in rows if r[4] == 1}]
        if new:
            cache.set_replicas(session, {(f, req.endpoint_id): ReplicaState.AVAILABLE
                                         for f in new},
                               reason=f"staged by rule {rule_id}", now=now)
            session.execute(update(DataRequestFile).where(
                DataRequestFile.request_id == req.id, DataRequestFile.file_id.in_(new))
                .values(done=1))
        session.execute(update(DataRequest).where(DataRequest.id == req.id).values(
            files_done=len(arrived), bytes_done=sum(s for _, s in arrived), updated_at=now))
        return len(arrived)
