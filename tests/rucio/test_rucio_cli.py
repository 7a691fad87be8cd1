"""`dawms sites sync` with RSE names and `dawms data upload` in Rucio mode, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from rucio_helpers import World, unique

from dawms.catalog.db import Database

pytestmark = pytest.mark.rucio


def _toml(world: World) -> str:
    out = []
    for site in ("SITE_A", "SITE_B"):
        rse = world.rse(site)
        out.append(f'[[site]]\nname = "{site}"\n')
        out.append(f'[[endpoint]]\nname = "{site}_DISK"\nsite = "{site}"\nkind = "disk"\n'
                   f'url = "file://{world.dirs[rse]}"\nrse = "{rse}"\n')
        out.append(f'[[queue]]\nname = "{site}_PROD"\nsite = "{site}"\n'
                   f'read_endpoints = ["{site}_DISK"]\nwrite_endpoint = "{site}_DISK"\n')
    return "\n".join(out)


def _dawms(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dawms", *argv], env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_sync_and_upload_in_rucio_mode(db: Database, world: World, rucio_server: str,
                                           rucio_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "DAWMS_DB_URL": db.url, "DAWMS_DDM": "rucio",
           "DAWMS_RUCIO_HOST": rucio_server, "DAWMS_RUCIO_ACCOUNT": "root",
           "DAWMS_RUCIO_AUTH_TYPE": "userpass", "DAWMS_RUCIO_USERNAME": "ddmlab",
           "DAWMS_RUCIO_PASSWORD": "secret"}
    sites = tmp_path / "sites.toml"
    sites.write_text(_toml(world))
    res = _dawms(env, "sites", "sync", str(sites))
    assert res.returncode == 0, res.stderr
    assert world.rse("SITE_A") in res.stdout
    did = unique(world, "cli")
    scope, name = did.split(":")
    files = []
    for i in range(2):
        p = tmp_path / f"{name}.{i}"
        p.write_bytes(os.urandom(500 + i))
        files.append(p)
    res = _dawms(env, "data", "upload", did, *map(str, files), "--endpoint", "SITE_A_DISK")
    assert res.returncode == 0, res.stderr
    assert f"2 files in {did} at SITE_A_DISK" in res.stdout
    listed = {r["name"]: r for r in rucio_client.list_replicas([{"scope": scope,
                                                                 "name": name}])}
    for p in files:
        assert listed[p.name]["adler32"] == f"{zlib.adler32(p.read_bytes()):08x}"
        assert list(listed[p.name]["rses"]) == [world.rse("SITE_A")]
        url = listed[p.name]["rses"][world.rse("SITE_A")][0]
        assert Path(url.removeprefix("file://localhost")).read_bytes() == p.read_bytes()
    files[0].write_bytes(b"changed")
    res = _dawms(env, "data", "upload", did, str(files[0]), "--endpoint", "SITE_A_DISK")
    assert res.returncode == 2 and "already registered" in res.stderr
    bad = {**env, "DAWMS_RUCIO_HOST": "http://127.0.0.1:9"}
    res = _dawms(bad, "data", "upload", did, str(files[1]), "--endpoint", "SITE_A_DISK")
    assert res.returncode == 2 and "unreachable" in res.stderr
