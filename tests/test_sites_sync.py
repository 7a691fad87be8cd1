"""``dawms sites sync``: the site file is validated, diffed and applied in one transaction.

Checks the diff (add / change / remove), that an invalid file names every problem
and applies nothing, that a removed queue goes offline instead of disappearing,
that an endpoint still holding replicas cannot be removed (and the rest of that
sync is rolled back), that every applied sync is recorded with actor and diff,
and that syncing the same file twice changes nothing.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import ConfigChange, Queue, Site, StorageEndpoint
from dawms.catalog.site_config import Change, ConfigError, load, sync, validate
from dawms.ddm_bridge.local import LocalDDM
from factories import make_dataset, site_config


def apply(db: Database, cfg: dict, actor: str = "alice", source: str = "sites.toml") \
        -> list[Change]:
    with db.session() as s:
        return sync(s, validate(copy.deepcopy(cfg)), actor=actor, source=source)


def snapshot(db: Database) -> dict:
    with db.session() as s:
        return {
            "sites": sorted((x.name, x.description) for x in s.scalars(select(Site))),
            "endpoints": sorted((x.name, x.url_prefix, x.kind) for x in
                                s.scalars(select(StorageEndpoint))),
            "queues": sorted((x.name, x.status, x.cores, x.memory_mb) for x in
                             s.scalars(select(Queue))),
            "changes": s.scalar(select(func.count()).select_from(ConfigChange)),
        }


def ops(changes: list[Change]) -> set[tuple[str, str, str]]:
    return {(c.op, c.kind, c.name) for c in changes}


def test_first_sync_adds_everything(db: Database, tmp_path: Path) -> None:
    changes = apply(db, site_config(tmp_path, ["A", "B"]))
    assert ops(changes) == {("add", "site", "A"), ("add", "site", "B"),
                            ("add", "endpoint", "A_DISK"), ("add", "endpoint", "B_DISK"),
                            ("add", "queue", "A_PROD"), ("add", "queue", "B_PROD")}
    with db.session() as s:
        q = s.scalar(select(Queue).where(Queue.name == "A_PROD"))
        assert (q.status, q.read_endpoints, q.write_endpoint) == ("online", ["A_DISK"], "A_DISK")
        assert q.site.name == "A"
        ep = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "B_DISK"))
        assert ep.url_prefix == f"file://{tmp_path}/B/disk" and ep.kind == "disk"


def test_change_and_remove_are_diffed_and_applied(db: Database, tmp_path: Path) -> None:
    apply(db, site_config(tmp_path, ["A", "B"]))
    cfg = site_config(tmp_path, ["A"], cores=8)
    cfg["site"][0]["description"] = "the A site"
    cfg["endpoint"].append({"name": "A_TAPE", "site": "A", "kind": "tape",
                            "url": "file:///tape/a/"})
    # B keeps its site and endpoint but loses its queue
    cfg["site"].append({"name": "B"})
    cfg["endpoint"].append({"name": "B_DISK", "site": "B", "url": "file:///elsewhere/b"})
    changes = apply(db, cfg)
    by_key = {(c.op, c.kind, c.name): c for c in changes}
    assert set(by_key) == {("change", "site", "A"), ("change", "queue", "A_PROD"),
                           ("add", "endpoint", "A_TAPE"), ("change", "endpoint", "B_DISK"),
                           ("remove", "queue", "B_PROD")}
    assert by_key[("change", "queue", "A_PROD")].fields == {"cores": "1 -> 8"}
    assert by_key[("change", "site", "A")].fields == {"description": "'' -> 'the A site'"}
    assert "file:///elsewhere/b" in by_key[("change", "endpoint", "B_DISK")].fields["url_prefix"]
    assert str(by_key[("remove", "queue", "B_PROD")]).startswith("- queue B_PROD")
    with db.session() as s:
        queues = {q.name: q for q in s.scalars(select(Queue))}
        assert queues["A_PROD"].cores == 8 and queues["B_PROD"].status == "offline"
        tape = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "A_TAPE"))
        assert (tape.kind, tape.url_prefix) == ("tape", "file:///tape/a")
    # now drop the tape endpoint (it holds nothing): it is removed, not kept
    cfg["endpoint"] = [e for e in cfg["endpoint"] if e["name"] != "A_TAPE"]
    assert ops(apply(db, cfg)) == {("remove", "endpoint", "A_TAPE")}
    with db.session() as s:
        assert s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == "A_TAPE")) is None


def test_a_removed_queue_goes_offline_and_stays_listed(db: Database, tmp_path: Path) -> None:
    apply(db, site_config(tmp_path, ["A", "B"]))
    cfg = site_config(tmp_path, ["A", "B"])
    cfg["queue"] = [q for q in cfg["queue"] if q["name"] != "B_PROD"]
    assert ops(apply(db, cfg)) == {("remove", "queue", "B_PROD")}
    assert apply(db, cfg) == []  # already offline: nothing more to do
    assert ("B_PROD", "offline", 1, 2000) in snapshot(db)["queues"]
    # back in the file: online again
    assert ops(apply(db, site_config(tmp_path, ["A", "B"]))) == {("change", "queue", "B_PROD")}
    assert ("B_PROD", "online", 1, 2000) in snapshot(db)["queues"]


def test_an_invalid_file_lists_every_problem_and_applies_nothing(
        db: Database, tmp_path: Path) -> None:
    apply(db, site_config(tmp_path, ["A"]))
    before = snapshot(db)
    bad = site_config(tmp_path, ["A", "B"], cores=64)
    bad["site"].append({"name": "A"})  # defined twice
    bad["endpoint"][1]["url"] = "ftp://nope"
    bad["endpoint"].append({"name": "X_DISK", "site": "NOWHERE", "url": "file:///x"})
    bad["queue"][0]["status"] = "sleeping"
    bad["queue"][1]["read_endpoints"] = ["MISSING_DISK"]
    bad["queue"][1]["colour"] = "blue"
    bad["queue"][0]["memory_mb"] = "lots"
    bad["pools"] = []
    with pytest.raises(ConfigError) as err:
        validate(bad, "sites.toml")
    msg = str(err.value)
    for problem in ("unknown sections ['pools']", "site[2] A: defined twice",
                    "endpoint B_DISK: url must start with", "endpoint X_DISK: unknown site",
                    "queue A_PROD: status must be one of",
                    "queue B_PROD: unknown endpoint 'MISSING_DISK'",
                    "queue[1] B_PROD: unknown key 'colour'",
                    "queue[0] A_PROD: memory_mb must be int"):
        assert problem in msg, problem
    assert msg.startswith("sites.toml: ")
    assert snapshot(db) == before


def test_load_reads_toml_and_reports_syntax_errors(tmp_path: Path) -> None:
    good = tmp_path / "sites.toml"
    good.write_text('[[site]]\nname = "A"\n[[endpoint]]\nname = "A_DISK"\nsite = "A"\n'
                    'url = "file:///data/a"\n[[queue]]\nname = "A_PROD"\nsite = "A"\n'
                    'read_endpoints = ["A_DISK"]\nwrite_endpoint = "A_DISK"\ncores = 4\n')
    cfg = load(good)
    assert [q["cores"] for q in cfg["queue"]] == [4]
    broken = tmp_path / "broken.toml"
    broken.write_text("[[site]\nname = ")
    with pytest.raises(ConfigError, match="broken.toml"):
        load(broken)
    with pytest.raises(ConfigError, match="missing.toml"):
        load(tmp_path / "missing.toml")


def test_removing_an_endpoint_with_replicas_is_refused_and_rolls_back_the_sync(
        db: Database, ddm: LocalDDM, tmp_path: Path) -> None:
    apply(db, site_config(tmp_path / "storage", ["A", "B"]))
    make_dataset(db, ddm, "t:raw", "B_DISK", 2, tmp_path)
    before = snapshot(db)
    cfg = site_config(tmp_path / "storage", ["A", "B"], cores=8)  # a change that must not land
    cfg["endpoint"] = [e for e in cfg["endpoint"] if e["name"] != "B_DISK"]
    cfg["queue"] = [q for q in cfg["queue"] if q["name"] != "B_PROD"]
    with pytest.raises(ConfigError, match="endpoint B_DISK still holds replicas"):
        apply(db, cfg)
    assert snapshot(db) == before


def test_each_applied_sync_is_recorded_with_actor_and_diff(db: Database, tmp_path: Path) -> None:
    first = apply(db, site_config(tmp_path, ["A"]), actor="alice", source="v1/sites.toml")
    second = apply(db, site_config(tmp_path, ["A"], memory_mb=4000), actor="bob",
                   source="v2/sites.toml")
    with db.session() as s:
        rows = list(s.scalars(select(ConfigChange).order_by(ConfigChange.id)))
    assert [(r.actor, r.source) for r in rows] == [("alice", "v1/sites.toml"),
                                                  ("bob", "v2/sites.toml")]
    assert rows[0].diff == [str(c) for c in first] and len(rows[0].diff) == 3
    assert rows[1].diff == [str(c) for c in second] == ["~ queue A_PROD (memory_mb: 2000 -> 4000)"]
    assert rows[0].at <= rows[1].at and rows[1].at.tzinfo is not None


def test_syncing_the_same_file_again_changes_nothing(db: Database, tmp_path: Path) -> None:
    cfg = site_config(tmp_path, ["A", "B"], cores=8, memory_mb=16000, direct_access=True,
                      backend_settings={"partition": "prod", "nodes": [1, 2]},
                      movers={"read": ["root", "file"], "write": ["file"]}, max_running=50)
    cfg["endpoint"].append({"name": "A_TAPE", "site": "A", "kind": "tape",
                            "url": "file:///tape/a/", "quota_bytes": 10**12})
    cfg["queue"][0]["read_endpoints"] = ["A_DISK", "A_TAPE"]
    assert len(apply(db, cfg)) == 7
    before = snapshot(db)
    assert apply(db, cfg) == []
    assert snapshot(db) == before  # and no ConfigChange row for an empty diff


def test_a_table_where_an_array_of_tables_belongs_is_a_config_error(tmp_path: Path) -> None:
    """``[site]`` instead of ``[[site]]`` is an easy slip; it must be reported, not crash."""
    path = tmp_path / "slip.toml"
    path.write_text('[site]\nname = "A"\n')
    with pytest.raises(ConfigError, match="site"):
        load(path)
    with pytest.raises(ConfigError, match="site"):
        validate({"site": "A"})


@pytest.mark.parametrize(("key", "value"), [
    ("cores", True), ("cores", 0), ("memory_mb", -1), ("max_walltime_s", 0),
    ("max_disk_mb", -5), ("max_queued", -1),
])
def test_queue_numbers_must_be_positive_integers(tmp_path: Path, key: str,
                                                 value: object) -> None:
    cfg = site_config(tmp_path, ["A"], **{key: value})
    with pytest.raises(ConfigError, match=f"A_PROD.*{key}"):
        validate(cfg)
