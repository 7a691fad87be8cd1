"""``dawms replica declare-bad`` against a real server process, as an operator would."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from ops_helpers import replica_state

from dawms.catalog.db import Database
from dawms.cli import main
from dawms.ddm_bridge.local import LocalDDM
from factories import make_dataset

pytestmark = pytest.mark.ops


def test_an_operator_declares_a_replica_bad(db: Database, ddm: LocalDDM, server: str,
                                            tmp_path: Path, make_token: Callable[..., str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    paths = make_dataset(db, ddm, "ops:raw.E", "SITE_A_DISK", 2, tmp_path, seed=7)
    name = paths[0].name
    argv = ["--server", server, "replica", "declare-bad", f"ops:{name}", "ops:raw.E._999999",
            "--endpoint", "SITE_A_DISK", "--reason", "disk 7 died", "--json"]
    # an analyst may not: refused, nothing changed
    code = main(["--token", make_token("analyst", "ann"), *argv])
    _, err = capsys.readouterr()
    assert code == 1 and "may not" in err
    assert replica_state(db, name, "SITE_A_DISK") == "available"
    # an operator: one replica marked bad (no other copy: it stays bad), one unknown
    code = main(["--token", make_token("production", "op"), *argv])
    out, _ = capsys.readouterr()
    result = json.loads(out)
    assert code == 1  # not every replica could be declared
    assert result["replicas"] == {f"ops:{name}@SITE_A_DISK": "bad",
                                  "ops:raw.E._999999@SITE_A_DISK": "unknown: no such replica"}
    assert replica_state(db, name, "SITE_A_DISK") == "bad"
    assert replica_state(db, paths[1].name, "SITE_A_DISK") == "available"
    code = main(["--token", make_token("production", "op"), *argv[:5], "--endpoint",
                 "SITE_A_DISK", "--reason", "again"])
    out, _ = capsys.readouterr()
    assert code == 0 and f"ops:{name}@SITE_A_DISK: already bad" in out
    # a name off the grammar is refused whole
    code = main(["--token", make_token("production", "op"), "--server", server, "replica",
                 "declare-bad", "ops:../etc", "--endpoint", "SITE_A_DISK", "--reason", "x"])
    _, err = capsys.readouterr()
    assert code == 1 and "error" in err
