"""The `dawms` command as a user runs it: site sync, data upload, task and job views,
and tokens: issued, used against a real server, revoked, keys rotated."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import ConfigChange, Queue
from dawms.cli import main

SITES = """
[[site]]
name = "X"

[[endpoint]]
name = "X_DISK"
site = "X"
url = "file://{root}/x"

[[queue]]
name = "X_PROD"
site = "X"
cores = {cores}
read_endpoints = ["X_DISK"]
write_endpoint = "X_DISK"
"""


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sites_sync_shows_the_diff_and_dry_run_changes_nothing(
        db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DAWMS_DB_URL", db.url)
    f = tmp_path / "sites.toml"
    f.write_text(SITES.format(root=tmp_path, cores=4))
    code, out, _ = _run(capsys, "sites", "sync", str(f), "--dry-run")
    assert code == 0 and "+ queue X_PROD" in out and "would apply 3 change(s)" in out
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Queue)) == 0
    code, out, _ = _run(capsys, "sites", "sync", str(f))
    assert code == 0 and "applied 3 change(s)" in out
    f.write_text(SITES.format(root=tmp_path, cores=8))
    code, out, _ = _run(capsys, "sites", "sync", str(f), "--json")
    assert json.loads(out) == {"applied": True,
                               "changes": ["~ queue X_PROD (cores: 4 -> 8)"]}
    with db.session() as s:
        assert s.scalar(select(Queue.cores)) == 8
        assert s.scalar(select(func.count()).select_from(ConfigChange)) == 2
    f.write_text(SITES.format(root=tmp_path, cores=0).replace('"X_DISK"]', '"NOPE"]'))
    code, _, err = _run(capsys, "sites", "sync", str(f))
    assert code == 2 and "cores must be positive" in err and "unknown endpoint 'NOPE'" in err
    with db.session() as s:
        assert s.scalar(select(Queue.cores)) == 8


def test_task_and_job_commands_against_a_real_server(
        db: Database, server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], make_token: Callable[..., str]) -> None:
    monkeypatch.setenv("DAWMS_DB_URL", db.url)
    monkeypatch.setenv("DAWMS_TOKEN", make_token("production", "cli"))
    files = []
    for i in range(4):
        p = tmp_path / f"raw._{i:06d}"
        p.write_bytes(bytes([i]) * 1000)
        files.append(str(p))
    code, out, _ = _run(capsys, "data", "upload", "cli:raw", *files, "--endpoint", "SITE_A_DISK")
    assert code == 0 and "4 files in cli:raw at SITE_A_DISK" in out
    task = tmp_path / "task.toml"
    task.write_text(f'''name = "cli"
transformation = "{sys.executable} -c pass {{inputs}}"
input_datasets = ["cli:raw"]
output_dataset = "cli:out.{{task_id}}"
[split]
files_per_job = 2
''')
    code, out, _ = _run(capsys, "--server", server, "task", "submit", str(task), "--json")
    assert code == 0
    task_id = json.loads(out)["task_id"]
    deadline = time.monotonic() + 30
    while True:
        code, out, _ = _run(capsys, "--server", server, "job", "list", "--task", str(task_id),
                            "--json")
        jobs = json.loads(out)
        if jobs and all(j["state"] == "activated" for j in jobs):
            break
        assert time.monotonic() < deadline, jobs
        time.sleep(0.2)
    assert len(jobs) == 2 and {j["queue"] for j in jobs} == {"SITE_A_PROD"}
    code, out, _ = _run(capsys, "--server", server, "job", "show", str(jobs[0]["id"]), "--json")
    shown = json.loads(out)
    assert [h["to"] for h in shown["history"]] == ["defined", "activated"]
    assert [f["type"] for f in shown["files"]] == ["in", "in", "out", "log"]
    code, out, _ = _run(capsys, "--server", server, "task", "list")
    assert code == 0 and "cli" in out and "activated:2" in out
    code, out, _ = _run(capsys, "--server", server, "task", "show", str(task_id), "--json")
    assert json.loads(out)["state"] == "ready"
    bad = tmp_path / "bad.toml"
    bad.write_text(task.read_text().replace("cli:raw", "cli:nothing"))
    code, _, err = _run(capsys, "--server", server, "task", "submit", str(bad))
    assert code == 1 and "cli:nothing is not known" in err
    code, _, err = _run(capsys, "--server", "http://127.0.0.1:9", "task", "list")
    assert code == 1 and "cannot reach the dawms server" in err


def _ping(server: str, token: str) -> int:
    return httpx.get(f"{server}/api/v1/ping", headers={"Authorization": f"Bearer {token}"},
                     timeout=10).status_code


@pytest.mark.auth
def test_token_commands_issue_revoke_and_rotate_against_a_real_server(
        db: Database, server: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DAWMS_DB_URL", db.url)
    monkeypatch.delenv("DAWMS_TOKEN", raising=False)
    code, out, err = _run(capsys, "token", "issue", "--role", "reader", "--subject", "prom",
                          "--expires", "30m")
    assert code == 0 and out.count("\n") == 1 and "jti " in err
    token = out.strip()
    code, out, err = _run(capsys, "--server", server, "--token", token, "task", "list",
                          "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = _run(capsys, "--server", server, "task", "list")
    assert code == 1  # no token at all
    code, out, _ = _run(capsys, "token", "issue", "--role", "pilot", "--subject", "p",
                        "--json")
    assert code == 2  # a pilot token must name its queues
    code, out, _ = _run(capsys, "token", "issue", "--role", "pilot", "--subject", "p",
                        "--queue", "SITE_A_PROD", "--expires", "2h", "--json")
    claims = json.loads(out)
    assert claims["queues"] == ["SITE_A_PROD"] and claims["exp"] - claims["iat"] == 7200
    # revoke a reader token: refused from then on, by the running server
    leaked = json.loads(_issue_json(capsys, "reader", "prom2"))
    assert _ping(server, leaked["token"]) == 200
    code, out, _ = _run(capsys, "token", "revoke", leaked["jti"], "--reason", "leaked")
    assert code == 0 and "revoked" in out
    reader_jti = leaked["jti"]
    assert _ping(server, leaked["token"]) == 401
    code, out, _ = _run(capsys, "token", "revoke", reader_jti)
    assert code == 0 and "already" in out
    # rotation: the new key signs, the old one still verifies until retired
    old_kid = json.loads(_run(capsys, "token", "keys", "--json")[1])[0]["kid"]
    code, out, _ = _run(capsys, "token", "rotate-key")
    assert code == 0 and "new signing key" in out
    new_token = _issue_json(capsys, "reader", "after-rotation")
    deadline = time.monotonic() + 30  # the server looks up an unknown kid at most once a second
    while _ping(server, json.loads(new_token)["token"]) != 200:  # signed by the new key
        assert time.monotonic() < deadline, "a token of the new key is refused"
        time.sleep(0.2)
    assert _ping(server, token) == 200  # signed by the old key
    code, out, _ = _run(capsys, "token", "retire-key", old_kid)
    assert code == 0
    deadline = time.monotonic() + 30  # the server caches verifying keys for a while
    while _ping(server, token) != 401:
        assert time.monotonic() < deadline, "a retired key still verifies"
        time.sleep(0.5)
    assert _ping(server, json.loads(new_token)["token"]) == 200


def _issue_json(capsys: pytest.CaptureFixture[str], role: str, subject: str) -> str:
    code, out, _ = _run(capsys, "token", "issue", "--role", role, "--subject", subject,
                        "--json")
    assert code == 0
    return out
