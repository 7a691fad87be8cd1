"""Payload control: the process tree's memory and CPU, the limits that kill it, the
command poll, SIGTERM from the batch system and the pilot's temporary work dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pilot_helpers import StubServer, wait_for

from dawms import wire
from dawms.pilot import job as job_module
from dawms.pilot.client import PilotClient
from dawms.pilot.job import JobRunner, Outcome, run_job
from dawms.pilot.main import main
from dawms.pilot.monitor import TreeMonitor
from dawms.pilot.payload import STDOUT_NAME, Payload, run_payload

pytestmark = pytest.mark.pilot
PY = sys.executable
Spec = dict[str, Any]

# a parent that forks a child holding 120 MB and burning CPU; the parent itself stays small
TREE = """\
import os, time
pid = os.fork()
if pid == 0:
    blob = bytearray(120 * 1024 * 1024)
    for i in range(0, len(blob), 4096):
        blob[i] = 1
    t = time.process_time()
    while time.process_time() - t < 0.8:
        pass
    time.sleep(0.6)
    os._exit(0)
os.waitpid(pid, 0)
"""
# grows by 20 MB every 50 ms, touching every page, until killed
GROW = """\
import time
blobs = []
while True:
    b = bytearray(20 * 1024 * 1024)
    for i in range(0, len(b), 4096):
        b[i] = 1
    blobs.append(b)
    time.sleep(0.05)
"""


@pytest.fixture
def client(stub_server: StubServer) -> Iterator[PilotClient]:
    with PilotClient(stub_server.url, give_up_after_s=5, backoff_initial_s=0.05) as c:
        yield c


def local(url: str) -> Path:
    return Path(urlsplit(url).path)


# --- the process tree ----------------------------------------------------------------------

def test_the_whole_tree_is_measured_not_only_the_payload_process(tmp_path: Path) -> None:
    result = run_payload([PY, "-c", TREE], tmp_path, sample_every_s=0.1)
    assert result.exit_code == 0
    assert result.max_rss_kb > 120 * 1024  # the child's memory, seen while it lived
    assert result.max_pss_kb > 100 * 1024  # PSS from smaps_rollup
    assert result.max_procs == 2
    assert result.cpu_s >= 0.7  # the child's CPU, though the parent used almost none
    assert result.samples >= 5


def test_tree_monitor_of_a_gone_process_reads_nothing() -> None:
    proc = subprocess.Popen([PY, "-c", "pass"])
    proc.wait()
    monitor = TreeMonitor(proc.pid)
    assert monitor.sample() is None
    assert (monitor.max_rss_kb, monitor.cpu_s) == (0, 0.0)


def test_over_the_memory_limit_the_payload_is_killed_as_memory(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_payload([PY, "-c", GROW], tmp_path, memory_limit_mb=150, sample_every_s=0.1,
                         kill_grace_s=1, walltime_s=60)
    assert time.monotonic() - started < 20
    assert result.kill_category == "memory"
    assert "memory limit of 150 MB exceeded: PSS" in (result.kill_reason or "")
    assert result.max_pss_kb > 150 * 1024
    assert result.exit_code < 0


def test_under_the_memory_limit_nothing_is_killed(tmp_path: Path) -> None:
    result = run_payload([PY, "-c", TREE], tmp_path, memory_limit_mb=400, sample_every_s=0.1)
    assert (result.exit_code, result.kill_category) == (0, None)


def test_a_runaway_stdout_is_bounded(tmp_path: Path) -> None:
    code = "import sys\nwhile True: sys.stdout.write('x' * 65536)\n"
    result = run_payload([PY, "-c", code], tmp_path, output_limit_bytes=2_000_000,
                         sample_every_s=0.05, kill_grace_s=1, walltime_s=60)
    assert result.kill_category == "payload"
    assert "payload.stdout grew past 2000000 bytes" in (result.kill_reason or "")
    # killed within a few samples of the limit, not after filling the disk
    assert (tmp_path / STDOUT_NAME).stat().st_size < 200_000_000


def test_walltime_kill_has_its_category(tmp_path: Path) -> None:
    result = run_payload([PY, "-c", "import time; time.sleep(60)"], tmp_path, walltime_s=0.3,
                         kill_grace_s=1)
    assert (result.timed_out, result.kill_category) == (True, "walltime")


def test_live_metrics_come_from_the_tree(tmp_path: Path) -> None:
    payload = Payload([PY, "-c", TREE], tmp_path, sample_every_s=0.05)
    payload.start()
    result = payload.wait()
    assert payload.metrics()["max_rss_kb"] == result.max_rss_kb or result.max_rss_kb > 0
    assert payload.metrics()["max_pss_kb"] > 100 * 1024


# --- the job: memory kill reported, metrics reported ---------------------------------------

def test_a_job_over_its_memory_is_reported_failed_as_memory_with_its_metrics(
    client: PilotClient, stub_server: StubServer, make_spec: Callable[..., Spec],
    tmp_path: Path,
) -> None:
    script = tmp_path / "grow.py"
    script.write_text(GROW)
    spec = make_spec(memory_mb=150, transformation=f"{PY} {script}")
    result = JobRunner(client, spec, tmp_path / "work", kill_grace_s=1,
                       sample_every_s=0.1).run()
    assert (result.outcome, result.error_category) == (Outcome.FAILED, "memory")
    final = stub_server.updates()[-1]
    assert (final["state"], final["error_category"]) == ("failed", "memory")
    assert final["metrics"]["max_pss_kb"] > 150 * 1024
    assert final["metrics"]["max_rss_kb"] > 150 * 1024
    assert [o["type"] for o in final["outputs"]] == ["log"]  # the log still ships
    assert local(spec["log"]["url"]).is_file()


def test_a_finished_job_reports_tree_metrics(
    client: PilotClient, stub_server: StubServer, make_spec: Callable[..., Spec],
    tmp_path: Path,
) -> None:
    script = tmp_path / "tree.py"
    script.write_text(TREE + "import sys\nopen(sys.argv[1], 'wb').write(b'x')\n")
    spec = make_spec(transformation=f"{PY} {script} {{output}}")
    result = JobRunner(client, spec, tmp_path / "work", sample_every_s=0.1).run()
    assert result.outcome is Outcome.FINISHED
    metrics = stub_server.updates()[-1]["metrics"]
    assert metrics["max_rss_kb"] > 120 * 1024 and metrics["cpu_s"] >= 0.7
    assert metrics["max_procs"] == 2 and metrics["monitor_samples"] >= 5


# --- the command poll ----------------------------------------------------------------------

def test_a_kill_arrives_through_the_command_poll_long_before_any_heartbeat(
    client: PilotClient, stub_server: StubServer, make_spec: Callable[..., Spec],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_SLEEP", "120")
    spec = make_spec(heartbeat_s=3600)
    killed_at: list[float] = []

    def command(body: dict[str, Any]) -> str | None:
        if (Path(tmp_path / "work" / "payload.pid")).exists():
            killed_at.append(time.monotonic())
            return wire.Command.KILL
        return None

    stub_server.poll_command = command
    started = time.monotonic()
    result = run_job(client, spec, tmp_path / "work", kill_grace_s=1, command_poll_s=0.2)
    assert time.monotonic() - started < 30
    assert (result.outcome, result.error_category) == (Outcome.FAILED, "killed")
    final = stub_server.updates()[-1]
    assert [o["type"] for o in final["outputs"]] == ["log"]  # no output reported
    assert not local(spec["outputs"][0]["url"]).exists()
    assert [u["state"] for u in stub_server.updates()] == ["starting", "running", "failed"]
    polls = stub_server.polls()
    assert polls and all(set(p) == {"job_id", "attempt", "lease_token"} for p in polls)


def test_a_stale_command_poll_abandons_the_job_without_a_final_report(
    client: PilotClient, stub_server: StubServer, make_spec: Callable[..., Spec],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_SLEEP", "120")
    stub_server.stale_when = lambda body: "state" not in body  # only get_command is stale
    result = run_job(client, make_spec(heartbeat_s=3600), tmp_path / "work", kill_grace_s=1,
                     command_poll_s=0.2)
    assert result.outcome is Outcome.ABANDONED
    assert "failed" not in stub_server.states() and "finished" not in stub_server.states()


def test_the_pilot_polls_at_the_interval_the_server_sets(
    stub_server: StubServer, make_spec: Callable[..., Spec], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_SLEEP", "1.5")
    stub_server.command_poll_s = 0.1
    stub_server.jobs = [make_spec(heartbeat_s=3600)]
    code = main(["--server", stub_server.url, "--queue", "Q", "--workdir", str(tmp_path / "w"),
                 "--max-jobs", "1", "--idle-timeout", "1"])
    assert code == 0
    assert stub_server.states()[-1] == "finished"
    assert len(stub_server.polls()) >= 5  # ~15 in 1.5 s; none without the server's interval


# --- SIGTERM from the batch system ----------------------------------------------------------

def test_sigterm_after_the_payload_ended_still_stages_out_and_reports_finished(
    client: PilotClient, stub_server: StubServer, make_spec: Callable[..., Spec],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = make_spec()
    runner = JobRunner(client, spec, tmp_path / "work")
    real = job_module.stage_out_outputs

    def stage_out_after_a_sigterm(*args: Any, **kwargs: Any) -> Any:
        runner.terminate("pilot received SIGTERM")  # arrives as stage-out begins
        return real(*args, **kwargs)

    monkeypatch.setattr(job_module, "stage_out_outputs", stage_out_after_a_sigterm)
    result = runner.run()
    assert result.outcome is Outcome.FINISHED
    assert local(spec["outputs"][0]["url"]).is_file()
    assert stub_server.updates()[-1]["state"] == "finished"


def test_sigterm_to_a_pilot_process_kills_the_payload_and_reports_killed(
    stub_server: StubServer, make_spec: Callable[..., Spec], tmp_path: Path,
) -> None:
    spec = make_spec(heartbeat_s=3600)
    stub_server.jobs = [spec]
    work = tmp_path / "w"
    env = {**os.environ, "TEST_SLEEP": "120"}
    pilot = subprocess.Popen([PY, "-m", "dawms.pilot", "--server", stub_server.url, "--queue",
                              "Q", "--workdir", str(work), "--kill-grace", "2"], env=env)
    try:
        pid_file = work / f"{spec['job_id']}.1" / "payload.pid"
        assert wait_for(pid_file.exists, timeout=30)
        payload_pid = int(pid_file.read_text())
        pilot.send_signal(signal.SIGTERM)
        assert pilot.wait(30) == 1
    finally:
        if pilot.poll() is None:
            pilot.kill()
    final = stub_server.updates()[-1]
    assert (final["state"], final["error_category"]) == ("failed", "killed")
    assert "SIGTERM" in final["error_diag"]
    with pytest.raises(ProcessLookupError):
        os.kill(payload_pid, 0)


# --- the pilot's work dir -------------------------------------------------------------------

def test_the_default_work_dir_is_fresh_under_tmpdir_and_removed(
    stub_server: StubServer, make_spec: Callable[..., Spec], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.chdir(tmp_path)
    seen: list[str] = []
    good, bad = make_spec(), make_spec()
    bad["transformation"] = bad["transformation"].replace("{output}", "elsewhere")
    stub_server.jobs = [good, bad]
    stub_server.pending = lambda: (seen.extend(os.listdir(tmp)), 0)[1]
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read $TMPDIR
    assert main(["--server", stub_server.url, "--queue", "Q", "--idle-timeout", "0.2",
                 "--poll-interval", "0.05"]) == 0
    assert [u["state"] for u in stub_server.updates() if u["state"] in
            wire.FINAL_REPORT_STATES] == ["finished", "failed"]
    assert seen and all(name.startswith("dawms-pilot-") for name in seen)
    assert os.listdir(tmp) == []  # the failed job's dir went with it
    assert not any(p.name.endswith(".1") for p in tmp_path.iterdir())  # nothing in the cwd


def test_keep_workdir_keeps_the_default_dir_and_failed_job_dirs(
    stub_server: StubServer, make_spec: Callable[..., Spec], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)
    bad = make_spec()
    bad["transformation"] = bad["transformation"].replace("{output}", "elsewhere")
    stub_server.jobs = [bad]
    assert main(["--server", stub_server.url, "--queue", "Q", "--idle-timeout", "0.2",
                 "--poll-interval", "0.05", "--keep-workdir"]) == 0
    (kept,) = tmp.iterdir()
    assert (kept / f"{bad['job_id']}.1" / "pilot.log").is_file()


# --- multi-job pilots and their lifetime ----------------------------------------------------

def test_a_pilot_with_a_lifetime_asks_only_for_jobs_that_fit_in_what_is_left(
    stub_server: StubServer, make_spec: Callable[..., Spec], tmp_path: Path,
) -> None:
    stub_server.jobs = [make_spec(), make_spec(), make_spec()]
    started = time.monotonic()
    code = main(["--server", stub_server.url, "--queue", "Q", "--workdir", str(tmp_path / "w"),
                 "--lifetime", "300", "--idle-timeout", "0.3", "--poll-interval", "0.05"])
    assert code == 0
    took = time.monotonic() - started
    finals = [u for u in stub_server.updates() if u["state"] in wire.FINAL_REPORT_STATES]
    assert [u["state"] for u in finals] == ["finished"] * 3  # several jobs in one pilot
    with stub_server.lock:
        asked = [b["max_walltime_s"] for _, p, b, _ in stub_server.calls
                 if p == wire.ACQUIRE_JOBS]
    assert len(asked) >= 4
    assert all(300 - took - 1 <= a <= 300 for a in asked)
    assert asked == sorted(asked, reverse=True)  # what is left only shrinks


def test_a_pilot_whose_lifetime_is_over_takes_no_job(
    stub_server: StubServer, make_spec: Callable[..., Spec], tmp_path: Path,
) -> None:
    stub_server.jobs = [make_spec()]
    assert main(["--server", stub_server.url, "--queue", "Q", "--workdir", str(tmp_path / "w"),
                 "--lifetime", "0.5", "--idle-timeout", "30", "--poll-interval", "0.05"]) == 0
    assert stub_server.acquire_count() == 0


# --- direct access ---------------------------------------------------------------------------

READ_IN_PLACE = """\
import sys
from urllib.parse import urlsplit
*inputs, output = sys.argv[1:]
open("argv.txt", "w").write("\\n".join(inputs))
with open(output, "wb") as out:
    for url in inputs:
        out.write(open(urlsplit(url).path, "rb").read())
"""


def test_direct_access_gives_the_payload_urls_and_copies_nothing(
    client: PilotClient, stub_server: StubServer, make_spec: Callable[..., Spec],
    tmp_path: Path,
) -> None:
    script = tmp_path / "in_place.py"
    script.write_text(READ_IN_PLACE)
    spec = make_spec(direct_access=True, transformation=f"{PY} {script} {{inputs}} {{output}}")
    result = JobRunner(client, spec, tmp_path / "work", sample_every_s=0.1).run()
    assert result.outcome is Outcome.FINISHED, result
    # the payload got the replicas' URLs; no input was copied into the work dir (kept
    # by the runner: only the pilot's loop removes job dirs)
    assert (tmp_path / "work" / "argv.txt").read_text().split("\n") == [
        f["urls"][0] for f in spec["inputs"]]
    assert not any((tmp_path / "work" / f["lfn"]).exists() for f in spec["inputs"])
    final = stub_server.updates()[-1]
    assert final["metrics"]["direct_access_files"] == 2
    assert final["metrics"]["bytes_in"] == 0
    expected = b"".join(local(f["urls"][0]).read_bytes() for f in spec["inputs"])
    assert local(spec["outputs"][0]["url"]).read_bytes() == expected


def test_direct_access_skips_a_replica_of_the_wrong_size_and_fails_as_stagein(
    client: PilotClient, stub_server: StubServer, make_spec: Callable[..., Spec],
    tmp_path: Path,
) -> None:
    spec = make_spec(direct_access=True, n_inputs=1)
    item = spec["inputs"][0]
    good = local(item["urls"][0])
    short = good.with_name(good.name + ".short")
    short.write_bytes(good.read_bytes()[:10])
    outside = tmp_path / "elsewhere" / good.name
    outside.parent.mkdir()
    outside.write_bytes(good.read_bytes())
    item["urls"] = [outside.as_uri(), short.as_uri(), good.as_uri()]
    from dawms.pilot.stagein import direct_inputs
    (chosen,) = direct_inputs(wire.JobSpec.from_dict(spec))
    assert chosen.url == good.as_uri()  # not outside the endpoints, not the short one
    item["urls"] = [short.as_uri()]
    result = JobRunner(client, spec, tmp_path / "work").run()
    assert (result.outcome, result.error_category) == (Outcome.FAILED, "stagein")
    assert "10 bytes, the catalog says" in result.error_diag
