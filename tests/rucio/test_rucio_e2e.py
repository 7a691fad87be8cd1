"""End to end on a real Rucio: the issue's flow, three ways the news of arrival can come.

Input dataset uploaded to Rucio at SITE_A's RSE; SITE_A's queue takes no new
work, so the job is brokered to SITE_B and the bridge creates one rule (a
``_dis`` dataset) to SITE_B's RSE. Rucio's own daemons complete the transfer
(judge, conveyor submitter/poller/finisher with the mock transfertool). The
mock copies no bytes, so the test places them at the destination PFNs itself
(copying SITE_A's replicas) before the pump runs; Rucio then marks the replicas
AVAILABLE and queues RULE_OK/DATASETLOCK_OK. The news reaches dawms by:

- hermes -> our HTTP endpoint (hermes' elastic bulk NDJSON), rule polling off;
- hermes -> RabbitMQ's STOMP plugin -> our consumer, rule polling off;
- the rule poller alone (hermes never runs).

With polling off, the job must be activated within 2 s of the message being
stored. A real pilot then reads its inputs from the PFNs Rucio gives, and
``list_replicas`` afterwards shows every output with its adler32.
"""

from __future__ import annotations

import shutil
import sys
import time
import zlib
from pathlib import Path

import pytest
from rucio_helpers import HERMES_SECRET, HERMES_USER, World, make_rucio_dataset, unique, wait_for
from sqlalchemy import select

from dawms.catalog.db import Database
from dawms.catalog.models import DataRequest, DDMEvent, Job, JobFile, StateHistory
from dawms.client import Client
from dawms.ddm_bridge.rucio.messages import done_key
from dawms.pilot.factory.local import LocalFactory
from dawms.server.tokens import issue

pytestmark = [pytest.mark.rucio, pytest.mark.e2e]

PAYLOAD = (f"{sys.executable} -c \"import sys,zlib; "
           "d=b''.join(open(p,'rb').read() for p in sys.argv[2:]); "
           "open(sys.argv[1],'w').write(str(zlib.adler32(d)))\" {outputs} {inputs}")


def _plain(pfn: str) -> str:
    return pfn.replace("file://localhost/", "file:///", 1)


def _flow(db: Database, world: World, rucio_client, pump, start_server, tmp_path: Path,  # type: ignore[no-untyped-def]
          mode: str, **env: str) -> None:
    did = unique(world, "raw")
    scope, name = did.split(":")
    paths = make_rucio_dataset(rucio_client, world, did, "SITE_A", 2, tmp_path, seed=7)
    server = start_server(**env)
    user = issue(db, role="production", subject="prodmgr")[0]
    pilot = issue(db, role="pilot", subject="pilot", queues=["SITE_B_PROD"])[0]
    with Client(server, token=user) as client:
        task_id = client.submit_task({
            "name": f"rucio-{mode}", "transformation": PAYLOAD, "input_datasets": [did],
            "output_dataset": f"{scope}:out.{name}.{{task_id}}",
            "split": {"files_per_job": 2}, "retry": {"max_attempts": 1}})["task_id"]

        def assigned() -> DataRequest | None:
            with db.session() as s:
                job = s.scalar(select(Job).where(Job.task_id == task_id))
                req = s.scalar(select(DataRequest))
                if job is not None and job.state == "assigned" and req is not None:
                    s.expunge(req)
                    return req
            return None

        req = wait_for(assigned, 60, "the job assigned to SITE_B with a rule")
        rule = rucio_client.get_replication_rule(req.external_id)
        assert rule["rse_expression"] == world.rse("SITE_B")
        assert rule["name"] == req.name and "_dis" in req.name
        # the mock transfertool moves no bytes: put them where Rucio says they will be
        b_rse = world.rse("SITE_B")
        from rucio.rse import rsemanager

        info = rucio_client.get_rse(b_rse)
        pfns = rsemanager.lfns2pfns(info, [{"scope": scope, "name": p.name} for p in paths],
                                    operation="read", scheme="file")
        for p in paths:
            dst = Path(_plain(pfns[f"{scope}:{p.name}"]).removeprefix("file://"))
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dst)
        took = pump(transfers=True)  # judge + conveyor (mock): the rule is OK in Rucio
        print(f"\n[{mode}] Rucio's judge+conveyor (mock) once: {took:.1f} s")
        assert rucio_client.get_replication_rule(req.external_id)["state"] == "OK"
        if mode == "http":
            took = pump(transfers=False, hermes="elastic",
                        elastic=f"{server}/api/v1/ddm/rucio/_bulk",
                        elastic_auth=(HERMES_USER, HERMES_SECRET))
        elif mode == "stomp":
            took = pump(transfers=False, hermes="activemq")
        if mode != "poll":
            print(f"[{mode}] hermes once: {took:.1f} s")

        def activated() -> tuple | None:
            with db.session() as s:
                at = s.scalar(select(StateHistory.at).where(
                    StateHistory.entity == "job", StateHistory.to_state == "activated"))
                ev = s.scalar(select(DDMEvent).where(DDMEvent.dedup_key ==
                                                     done_key(req.external_id)))
                return (at, ev.received_at, ev.source) if at and ev else None

        activated_at, received_at, source = wait_for(activated, 30, "the job activated")
        assert source == {"http": "http", "stomp": "stomp", "poll": "poll"}[mode]
        latency = (activated_at - received_at).total_seconds()
        print(f"[{mode}] job activated {latency:.3f} s after the event was stored")
        if mode != "poll":
            assert latency < 2.0, (activated_at, received_at)
        factory = LocalFactory()
        handle = factory.submit(server, "SITE_B_PROD", 1, tmp_path / "pilot", token=pilot,
                                idle_timeout=5, poll_interval=0.3)[0]
        deadline = time.monotonic() + 120
        while (task := client.task(task_id))["state"] not in ("done", "finished", "failed"):
            assert time.monotonic() < deadline, client.summary(task_id)
            time.sleep(0.3)
        factory.wait(handle, 30)
        assert task["state"] == "done", client.summary(task_id)
    with db.session() as s:
        job = s.scalar(select(Job).where(Job.task_id == task_id))
        # the pilot was handed Rucio's PFNs at SITE_B, and read them
        listed = {r["name"]: r["rses"][b_rse][0] for r in rucio_client.list_replicas(
            [{"scope": scope, "name": n.name} for n in paths], rse_expression=b_rse)}
        assert {i["lfn"]: i["urls"][0] for i in job.spec["inputs"]} == \
            {n: _plain(u) for n, u in listed.items()}
        outputs = list(s.scalars(select(JobFile).where(JobFile.job_id == job.id,
                                                       JobFile.type.in_(["out", "log"]))))
        out_ds = s.scalar(select(JobFile.dataset).where(JobFile.job_id == job.id,
                                                        JobFile.type == "out"))
    expected = zlib.adler32(b"".join(p.read_bytes() for p in paths))
    out_scope, out_name = out_ds.split(":")
    replicas = {r["name"]: r for r in rucio_client.list_replicas(
        [{"scope": o.scope, "name": o.lfn} for o in outputs])}
    assert set(replicas) == {o.lfn for o in outputs}
    for o in outputs:
        rep = replicas[o.lfn]
        assert rep["adler32"] == o.adler32 and rep["bytes"] == o.size
        assert list(rep["rses"]) == [b_rse]
        data = Path(_plain(rep["rses"][b_rse][0]).removeprefix("file://")).read_bytes()
        assert f"{zlib.adler32(data):08x}" == o.adler32
        if o.type == "out":
            assert data.decode() == str(expected)  # computed from the inputs it read
    assert {f["name"] for f in rucio_client.list_files(out_scope, out_name)} == \
        {o.lfn for o in outputs if o.type == "out"}


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_e2e_hermes_over_http(db: Database, world: World, rucio_client, pump,  # type: ignore[no-untyped-def]
                              dawms_server, tmp_path: Path) -> None:
    _flow(db, world, rucio_client, pump, dawms_server, tmp_path, "http",
          DAWMS_RUCIO_POLL_INTERVAL_S="0")


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_e2e_hermes_over_stomp(db: Database, world: World, rucio_client, pump,  # type: ignore[no-untyped-def]
                               dawms_server, tmp_path: Path) -> None:
    from stomp_helpers import ensure_durable_queue

    ensure_durable_queue("dawms-tests")  # so hermes' messages wait for our consumer
    _flow(db, world, rucio_client, pump, dawms_server, tmp_path, "stomp",
          DAWMS_RUCIO_POLL_INTERVAL_S="0", DAWMS_RUCIO_STOMP_BROKERS="127.0.0.1:61613",
          DAWMS_RUCIO_STOMP_SUBSCRIPTION="dawms-tests")


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_e2e_rule_poller_alone(db: Database, world: World, rucio_client, pump,  # type: ignore[no-untyped-def]
                               dawms_server, tmp_path: Path) -> None:
    _flow(db, world, rucio_client, pump, dawms_server, tmp_path, "poll",
          DAWMS_RUCIO_POLL_INTERVAL_S="0.5")
