"""Every browsing command through a real server and a real pilot, at 80 and 200
columns: the config file carries the server and token, a task runs (one job
finishes, one fails), ``task watch --json`` follows it to the end, ``task show``
has progress, ``job log`` reads the failed job's stdout and stderr from its log
tarball (which the server fetches through the storage package), datasets, sites,
queues and requests are listed. Tables are checked for cut ids, states and times."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import ConfigChange
from dawms.cli import main
from dawms.pilot.factory.local import LocalFactory

pytestmark = pytest.mark.cli

PAYLOAD = """\
import sys
out, inputs = sys.argv[1], sys.argv[2:]
for i in range(30):
    print(f"payload line {i} of {inputs[0].rsplit('/', 1)[-1]}")
if any(p.endswith("_000002") for p in inputs):
    print("cannot reconstruct event 7", file=sys.stderr)
    sys.exit(3)
open(out, "w").write("ok")
"""
TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _fits(out: str, width: int, *whole: str) -> None:
    """Nothing cut: no ellipsis, no line wider than the terminal, every ``whole``
    token (an id, a state, a time) on one line as it is."""
    assert "…" not in out, out  # rich cuts with an ellipsis; ours never do
    assert max(len(line.rstrip()) for line in out.splitlines()) <= width, out
    for token in whole:
        assert re.search(rf"(?<![\w-]){re.escape(token)}(?![\w-])", out), (token, out)


@pytest.mark.parametrize("width", [80, 200])
def test_every_browsing_command_through_a_real_server(
        db: Database, server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], make_token: Callable[..., str], width: int) -> None:
    monkeypatch.setenv("COLUMNS", str(width))
    monkeypatch.setenv("DAWMS_DB_URL", db.url)
    for var in ("DAWMS_SERVER", "DAWMS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    # the config file carries the server and the token (no flags, no environment)
    assert _run(capsys, "config", "set", "server", server)[0] == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO(make_token("production", "cli") + "\n"))
    assert _run(capsys, "config", "set", "token", "-")[0] == 0
    files = []
    for i in range(4):
        p = tmp_path / f"raw._{i + 1:06d}"
        p.write_bytes(bytes([i]) * 1000)
        files.append(str(p))
    assert _run(capsys, "data", "upload", "cli:raw", *files, "--endpoint", "SITE_A_DISK")[0] == 0
    script = tmp_path / "payload.py"
    script.write_text(PAYLOAD)
    task = tmp_path / "task.toml"
    task.write_text(f'''name = "cli"
transformation = "{sys.executable} {script} {{output}} {{inputs}}"
input_datasets = ["cli:raw"]
output_dataset = "cli:out.{{task_id}}"
[split]
files_per_job = 2
[retry]
max_attempts = 1
''')
    code, out, _ = _run(capsys, "task", "submit", str(task), "--json")
    assert code == 0, out
    task_id = json.loads(out)["task_id"]
    factory = LocalFactory()
    pilot = factory.submit(server, "SITE_A_PROD", 1, tmp_path / "pilot", idle_timeout=4,
                           poll_interval=0.3, token=make_token("pilot", "p", ["SITE_A_PROD"]))[0]
    code, out, err = _run(capsys, "task", "watch", str(task_id), "--json", "--interval", "0.3",
                          "--timeout", "180")
    factory.wait(pilot, 30)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 1, (out, err)  # ended, not done: one job failed
    assert lines[-1]["final"] and lines[-1]["state"] == "finished"
    assert all(a != b for a, b in zip(lines, lines[1:], strict=False))  # one line per change
    assert lines[-1]["jobs"] == {"failed": 1, "finished": 1}
    assert (lines[-1]["jobs_done"], lines[-1]["files_done"], lines[-1]["files_total"]) == (1, 2, 4)

    code, out, _ = _run(capsys, "task", "show", str(task_id))
    assert code == 0 and "50.0%" in out and "1/2 done" in out and "2/4 input files" in out
    _fits(out, width, "finished", "ETA: ended")
    assert TIME.search(out)
    code, out, _ = _run(capsys, "job", "list", "--task", str(task_id), "--json")
    jobs = json.loads(out)
    failed = next(j for j in jobs if j["state"] == "failed")
    code, out, _ = _run(capsys, "job", "list", "--task", str(task_id))
    assert code == 0
    _fits(out, width, *(str(j["id"]) for j in jobs), "failed", "finished", "SITE_A_PROD")
    code, out, _ = _run(capsys, "job", "show", str(failed["id"]))
    assert code == 0
    _fits(out, width, "failed", "activated", "running")
    assert len(TIME.findall(out)) >= 3  # history times, never cut

    # the failed job's log: stdout and stderr tails, from the tarball on SITE_A_DISK
    code, out, err = _run(capsys, "job", "log", str(failed["id"]), "-n", "5")
    assert code == 0, err
    assert "cannot reconstruct event 7" in out and "payload line 29 of raw._000001" in out
    assert "payload line 24 " not in out  # only the last 5 lines
    code, out, _ = _run(capsys, "job", "log", str(failed["id"]), "--json", "--stream", "stderr")
    assert json.loads(out)["stderr"] == ["cannot reconstruct event 7"]
    code, out, _ = _run(capsys, "job", "log", str(failed["id"]), "--full", str(tmp_path))
    saved = Path(out.strip())
    assert code == 0 and saved.parent == tmp_path
    with tarfile.open(saved) as tar:
        names = {m.name.rsplit("/", 1)[-1] for m in tar.getmembers()}
    assert {"payload.stdout", "payload.stderr", "pilot.log", "job.json"} <= names
    code, _, err = _run(capsys, "job", "log", "999999")
    assert code == 1 and "no job 999999" in err

    # datasets
    code, out, _ = _run(capsys, "dataset", "list", "--json")
    by_did = {d["did"]: d for d in json.loads(out)}
    assert by_did["cli:raw"]["files"] == 4 and by_did["cli:raw"]["bytes"] == 4000
    assert by_did["cli:raw"]["replicas"] == {"SITE_A_DISK": {"available": 4}}
    assert f"cli:out.{task_id}" in by_did
    code, out, _ = _run(capsys, "dataset", "list")
    _fits(out, width, "cli:raw", "4000")
    code, out, _ = _run(capsys, "dataset", "show", "cli:raw")
    assert code == 0
    _fits(out, width, "raw._000001", "raw._000004", "SITE_A_DISK:available")
    code, _, err = _run(capsys, "dataset", "show", "cli:nothing")
    assert code == 1 and "no dataset cli:nothing" in err
    code, _, err = _run(capsys, "dataset", "show", "no-colon")
    assert code == 1 and "must be scope:name" in err

    # sites and queues: status, config version, load, last pilot seen
    with db.session() as s:
        version = s.scalar(select(func.max(ConfigChange.id)))
    code, out, _ = _run(capsys, "queue", "list", "--json")
    queues = {q["name"]: q for q in json.loads(out)}
    assert queues["SITE_B_PROD"]["status"] == "brokeroff"
    assert queues["SITE_A_PROD"]["config_version"] == version
    assert queues["SITE_A_PROD"]["last_pilot_at"] is not None
    assert queues["SITE_C_PROD"]["last_pilot_at"] is None
    code, out, _ = _run(capsys, "queue", "list", "--status", "brokeroff", "--json")
    assert [q["name"] for q in json.loads(out)] == ["SITE_B_PROD"]
    code, out, _ = _run(capsys, "queue", "list")
    _fits(out, width, "SITE_A_PROD", "SITE_B_PROD", "brokeroff", "online", str(version))
    assert "ago" in out
    code, out, _ = _run(capsys, "queue", "show", "SITE_B_PROD")
    _fits(out, width, "brokeroff", str(version))
    code, _, err = _run(capsys, "queue", "show", "NOPE")
    assert code == 1 and "no queue 'NOPE'" in err
    code, out, _ = _run(capsys, "site", "list")
    _fits(out, width, "SITE_A", "SITE_B", "SITE_C")
    code, out, _ = _run(capsys, "site", "show", "SITE_A", "--json")
    site = json.loads(out)
    disk = next(e for e in site["endpoints"] if e["name"] == "SITE_A_DISK")
    assert disk["files"] >= 4 and site["queues"][0]["name"] == "SITE_A_PROD"
    code, out, _ = _run(capsys, "site", "show", "SITE_A")
    _fits(out, width, "SITE_A_PROD", "SITE_A_DISK")

    # a second task whose input is only at brokeroff SITE_B: its data must move
    files_b = []
    for i in range(2):
        p = tmp_path / f"b._{i + 1:06d}"
        p.write_bytes(b"b" * (100 + i))
        files_b.append(str(p))
    assert _run(capsys, "data", "upload", "cli:rawb", *files_b, "--endpoint", "SITE_B_DISK")[0] == 0
    task.write_text(task.read_text().replace('"cli:raw"', '"cli:rawb"'))
    assert _run(capsys, "task", "submit", str(task))[0] == 0
    deadline = time.monotonic() + 60
    while True:
        code, out, _ = _run(capsys, "request", "list", "--json")
        data = json.loads(out)["data"]
        if data:
            break
        assert time.monotonic() < deadline, "no data request was made"
        time.sleep(0.3)
    assert data[0]["kind"] == "replicate" and data[0]["files_total"] == 2
    assert 0.0 <= data[0]["progress"] <= 1.0
    code, out, _ = _run(capsys, "request", "list")
    _fits(out, width, str(data[0]["id"]), "replicate")
    assert "staging requests: none" in out
    code, out, _ = _run(capsys, "request", "list", "--state", "requested", "--json")
    assert all(r["state"] == "requested" for r in json.loads(out)["data"])


def test_wrong_types_and_auth_errors_exit_1_with_the_servers_message(
        db: Database, server: str, tmp_path: Path, make_token: Callable[..., str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "t"\ntransformation = "x"\ninput_datasets = "not-a-list"\n'
                   'output_dataset = "a:b"\n[split]\nfiles_per_job = "two"\n')
    env = {"DAWMS_SERVER": server, "DAWMS_TOKEN": make_token("production", "cli")}
    base = [sys.executable, "-m", "dawms"]
    r = subprocess.run([*base, "task", "submit", str(bad)], capture_output=True, text=True,
                       timeout=60, env={**_env(), **env})
    assert r.returncode == 1 and "error:" in r.stderr and "Traceback" not in r.stderr, r
    r = subprocess.run([*base, "task", "list"], capture_output=True, text=True, timeout=60,
                       env={**_env(), "DAWMS_SERVER": server})
    assert r.returncode == 1 and "authentication required" in r.stderr
    assert "dawms config set token" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([*base, "task", "show", "424242"], capture_output=True, text=True,
                       timeout=60, env={**_env(), **env})
    assert r.returncode == 1 and "no task 424242" in r.stderr


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("DAWMS_TOKEN", "DAWMS_SERVER")}
