"""A whole job, and the pilot's main loop, against a real (stub) HTTP server."""

from __future__ import annotations

import json
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from pilot_helpers import UPDATE_FIELDS, StubServer, adler32_hex, pid_alive, wait_for

from dawms import wire
from dawms.pilot.client import JobRef, PilotClient, ServerUnavailable, StaleJob, update_body
from dawms.pilot.job import JobRunner, Outcome, run_job
from dawms.pilot.main import main

Spec = dict[str, Any]


def local(url: str) -> Path:
    return Path(urlsplit(url).path)


@pytest.fixture
def client(stub_server: StubServer) -> Iterator[PilotClient]:
    with PilotClient(stub_server.url, give_up_after_s=5, backoff_initial_s=0.05) as c:
        yield c


def test_finished_job_reports_outputs_with_size_and_adler32(
    client: PilotClient, stub_server: StubServer, make_spec: Callable[..., Spec], tmp_path: Path
) -> None:
    spec = make_spec(n_inputs=3)
    result = run_job(client, spec, tmp_path / "work")

    assert result.outcome is Outcome.FINISHED, result
    assert stub_server.states() == ["starting", "running", "finished"]
    final = stub_server.updates()[-1]
    assert (final["job_id"], final["attempt"], final["lease_token"]) == (
        spec["job_id"], 1, spec["lease_token"])
    assert final["exit_code"] == 0 and final["error_category"] == ""

    expected = b"".join(local(i["urls"][0]).read_bytes() for i in spec["inputs"])
    out_path = local(spec["outputs"][0]["url"])
    assert out_path.read_bytes() == expected
    log_path = local(spec["log"]["url"])
    log_bytes = log_path.read_bytes()
    assert final["outputs"] == [
        {"lfn": spec["outputs"][0]["lfn"], "type": "out", "size": len(expected),
         "adler32": adler32_hex(expected)},
        {"lfn": spec["log"]["lfn"], "type": "log", "size": len(log_bytes),
         "adler32": adler32_hex(log_bytes)},
    ]
    metrics = final["metrics"]
    assert metrics["bytes_in"] == sum(i["size"] for i in spec["inputs"])
    assert metrics["bytes_out"] == len(expected) + len(log_bytes)
    assert metrics["wall_s"] > 0

    with tarfile.open(log_path) as tar:
        names = tar.getnames()
        folder = spec["log"]["lfn"].removesuffix(".tgz")
        assert {f"{folder}/payload.stdout", f"{folder}/payload.stderr",
                f"{folder}/pilot.log", f"{folder}/job.json"} <= set(names)
        job_json = tar.extractfile(f"{folder}/job.json").read().decode()
        assert spec["lease_token"] not in job_json
        pilot_log = tar.extractfile(f"{folder}/pilot.log").read().decode()
        assert "staged in" in pilot_log


def test_failed_payload_reports_payload_error_and_still_ships_the_log(
    client: PilotClient, stub_server: StubServer, make_spec: Callable[..., Spec],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_EXIT", "2")
    spec = make_spec()
    result = run_job(client, spec, tmp_path / "work")

    assert result.outcome is Outcome.FAILED
    assert stub_server.states() == ["starting", "running", "failed"]
    final = stub_server.updates()[-1]
    assert final["error_category"] == "payload"
    assert final["exit_code"] == 2
    assert "exit code 2" in final["error_diag"]
    assert "something went wrong in the payload" in final["error_diag"]
    assert [o["type"] for o in final["outputs"]] == ["log"]
    assert local(spec["log"]["url"]).is_file()
    assert not local(spec["outputs"][0]["url"]).exists()


def test_stale_heartbeat_aborts_the_job_without_further_reports(
    client: PilotClient, stub_server: StubServer, make_spec: Callable[..., Spec],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_SLEEP", "60")
    spec = make_spec(heartbeat_s=0.2)
    running = []

    def stale(body: dict[str, Any]) -> bool:  # the 'running' report passes, heartbeats not
        if body["state"] == "running":
            running.append(body)  # stale once the payload runs (it writes its pid first)
        return len(running) >= 2 and (tmp_path / "work" / "payload.pid").exists()

    stub_server.stale_when = stale
    start = time.monotonic()
    result = run_job(client, spec, tmp_path / "work", kill_grace_s=1)

    assert result.outcome is Outcome.ABANDONED
    assert time.monotonic() - start < 20
    pid = int((tmp_path / "work" / "payload.pid").read_text())
    assert wait_for(lambda: not pid_alive(pid)), "the payload still runs"
    time.sleep(0.5)  # nothing may come later either
    states = stub_server.states()
    assert states[:2] == ["starting", "running"] and set(states) == {"starting", "running"}
    assert stub_server.calls[-1][3] == wire.HTTP_STALE
    assert not local(spec["log"]["url"]).exists()


def test_kill_command_in_heartbeat_reply_fails_the_job_as_killed(
    client: PilotClient, stub_server: StubServer, make_spec: Callable[..., Spec],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_SLEEP", "60")
    spec = make_spec(heartbeat_s=0.2)
    stub_server.command_when = lambda body: (
        wire.Command.KILL if body["state"] == "running" and body["metrics"].get("wall_s", 0) > 0
        else None)
    result = run_job(client, spec, tmp_path / "work", kill_grace_s=1)

    assert result.outcome is Outcome.FAILED
    final = stub_server.updates()[-1]
    assert final["state"] == "failed"
    assert final["error_category"] == "killed"
    assert [o["type"] for o in final["outputs"]] == ["log"]
    assert local(spec["log"]["url"]).is_file()


def test_walltime_exceeded_is_a_walltime_failure(
    client: PilotClient, stub_server: StubServer, make_spec: Callable[..., Spec],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_SLEEP", "60")
    result = run_job(client, make_spec(walltime_s=0.5), tmp_path / "work", kill_grace_s=1)
    assert result.outcome is Outcome.FAILED
    assert result.error_category == "walltime"
    assert stub_server.updates()[-1]["error_category"] == "walltime"


@pytest.mark.parametrize(("change", "field"), [
    ({"inputs": [{"lfn": "x"}]}, "job spec.inputs[0].scope: missing"),
    ({"cores": "1"}, "job spec.cores: must be an integer"),
    ({"movers": {"read": ["file"], "sideways": []}}, "job spec.movers: unknown field"),
    ({"transformation": ""}, "job spec.transformation: 0 characters"),
])
def test_a_malformed_spec_is_reported_failed_and_nothing_runs(
    stub_server: StubServer, client: PilotClient, make_spec: Callable[..., dict[str, Any]],
    tmp_path: Path, change: dict[str, Any], field: str,
) -> None:
    spec = {**make_spec(), **change}
    result = run_job(client, spec, tmp_path / "work")
    assert (result.outcome, result.error_category) == (Outcome.FAILED, "pilot")
    [final] = stub_server.updates()  # no starting, no running: straight to the verdict
    assert (final["state"], final["error_category"]) == ("failed", "pilot")
    assert final["error_diag"].startswith(f"malformed job description: {field}")
    assert not (tmp_path / "work" / "payload.stdout").exists()


@pytest.mark.parametrize("fence", [{"job_id": "7"}, {"attempt": 0}, {"lease_token": ""},
                                   {"job_id": None}])
def test_a_spec_without_a_valid_fence_is_refused_without_a_report(
    stub_server: StubServer, client: PilotClient, make_spec: Callable[..., dict[str, Any]],
    tmp_path: Path, fence: dict[str, Any],
) -> None:
    result = run_job(client, {**make_spec(), **fence}, tmp_path / "work")
    assert result.outcome is Outcome.REFUSED
    assert result.error_diag.startswith(("job spec.", "job report.")), result.error_diag
    assert stub_server.updates() == []
    assert not (tmp_path / "work").exists()


def test_stagein_failure_is_reported_before_running(
    client: PilotClient, stub_server: StubServer, make_spec: Callable[..., Spec], tmp_path: Path
) -> None:
    spec = make_spec()
    local(spec["inputs"][1]["urls"][0]).write_bytes(b"corrupted")
    result = run_job(client, spec, tmp_path / "work")
    assert result.outcome is Outcome.FAILED
    assert stub_server.states() == ["starting", "failed"]
    final = stub_server.updates()[-1]
    assert final["error_category"] == "stagein"
    assert spec["inputs"][1]["lfn"] in final["error_diag"]
    assert [o["type"] for o in final["outputs"]] == ["log"]


def test_missing_output_fails_the_job(
    client: PilotClient, stub_server: StubServer, make_spec: Callable[..., Spec], tmp_path: Path
) -> None:
    spec = make_spec()
    spec["transformation"] = spec["transformation"].replace("{output}", "elsewhere")
    result = run_job(client, spec, tmp_path / "work")
    assert result.outcome is Outcome.FAILED
    assert result.error_category == "payload"
    assert "outputs missing" in result.error_diag


def test_stageout_failure_is_a_stageout_error(
    client: PilotClient, stub_server: StubServer, make_spec: Callable[..., Spec], tmp_path: Path
) -> None:
    spec = make_spec()
    spec["outputs"][0]["url"] = "gopher://nowhere/out"
    result = run_job(client, spec, tmp_path / "work")
    assert result.outcome is Outcome.FAILED
    final = stub_server.updates()[-1]
    assert final["error_category"] == "stageout"
    assert [o["type"] for o in final["outputs"]] == ["log"]


def test_stale_at_starting_abandons_at_once(
    client: PilotClient, stub_server: StubServer, make_spec: Callable[..., Spec], tmp_path: Path
) -> None:
    stub_server.stale_when = lambda body: True
    result = run_job(client, make_spec(), tmp_path / "work")
    assert result.outcome is Outcome.ABANDONED
    assert stub_server.states() == ["starting"]


# --- client --------------------------------------------------------------------------------

def test_client_retries_5xx_then_succeeds() -> None:
    answers = [500, 503, 200]
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        status = answers.pop(0)
        return httpx.Response(status, json={"success": status == 200, "message": "",
                                             "data": {"jobs": [], "pending": 4}})

    with PilotClient("http://server", transport=httpx.MockTransport(handler),
                     backoff_initial_s=0.01) as c:
        assert c.acquire_jobs("Q", "p1").pending == 4
    assert seen == [wire.ACQUIRE_JOBS] * 3


def test_client_gives_up_after_the_configured_time() -> None:
    with PilotClient("http://127.0.0.1:9", give_up_after_s=0.5, backoff_initial_s=0.05) as c:
        start = time.monotonic()
        with pytest.raises(ServerUnavailable, match="gave up"):
            c.acquire_jobs("Q", "p1")
        assert 0.4 < time.monotonic() - start < 5


def test_client_retries_stop_when_cancelled() -> None:
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    with PilotClient("http://127.0.0.1:9", give_up_after_s=60, backoff_initial_s=0.05) as c:
        start = time.monotonic()
        with pytest.raises(ServerUnavailable, match="cancelled"):
            c.update_job(JobRef(1, 1, "t"), "running", cancel=cancel)
        assert time.monotonic() - start < 5


def test_client_bulk_update_sends_wire_bodies() -> None:
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append((request.url.path, body))
        results = [{"job_id": u["job_id"], "success": True, "command": None}
                   for u in body["updates"]]
        return httpx.Response(200, json={"success": True, "message": "", "data": results})

    updates = [update_body(JobRef(i, 1, f"t{i}"), "running", metrics={"wall_s": i})
               for i in (1, 2)]
    with PilotClient("http://server", transport=httpx.MockTransport(handler)) as c:
        results = c.update_jobs_bulk(updates)
    assert [(r.job_id, r.success) for r in results] == [(1, True), (2, True)]
    [(path, body)] = sent
    assert path == wire.UPDATE_JOBS_BULK
    assert body == {"updates": [u.to_dict() for u in updates]}
    assert all(set(u) == UPDATE_FIELDS for u in body["updates"])


def test_client_raises_stale_on_409(stub_server: StubServer, client: PilotClient) -> None:
    stub_server.stale_when = lambda body: True
    with pytest.raises(StaleJob):
        client.update_job(JobRef(1, 1, "t"), "running")
    assert len(stub_server.updates()) == 1  # a 409 is not retried


def test_client_refuses_unreportable_states(client: PilotClient) -> None:
    with pytest.raises(ValueError, match="state: 'activated' is not one of"):
        client.update_job(JobRef(1, 1, "t"), "activated")


# --- main loop -----------------------------------------------------------------------------

def test_main_exits_after_idle_timeout_when_there_is_no_work(
    stub_server: StubServer, tmp_path: Path
) -> None:
    start = time.monotonic()
    code = main(["--server", stub_server.url, "--queue", "Q", "--workdir", str(tmp_path),
                 "--idle-timeout", "0.6", "--poll-interval", "0.1"])
    elapsed = time.monotonic() - start
    assert code == 0
    assert 0.6 <= elapsed < 5
    assert stub_server.acquire_count() >= 3
    assert stub_server.updates() == []


def test_main_keeps_polling_while_jobs_are_pending(
    stub_server: StubServer, tmp_path: Path
) -> None:
    until = time.monotonic() + 1.5
    stub_server.pending = lambda: 3 if time.monotonic() < until else 0
    code = main(["--server", stub_server.url, "--queue", "Q", "--workdir", str(tmp_path),
                 "--idle-timeout", "0.3", "--poll-interval", "0.1"])
    assert code == 0
    assert time.monotonic() >= until  # it did not leave while jobs were pending


def test_main_runs_jobs_then_exits_keeping_failed_job_dirs_when_asked(
    stub_server: StubServer, make_spec: Callable[..., Spec], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good, bad = make_spec(), make_spec()
    bad["transformation"] = bad["transformation"].replace("{output}", "elsewhere")
    stub_server.jobs = [good, bad]
    workdir = tmp_path / "pilot"
    code = main(["--server", stub_server.url, "--queue", "Q", "--workdir", str(workdir),
                 "--idle-timeout", "0.3", "--poll-interval", "0.1", "--pilot-id", "test-pilot",
                 "--keep-workdir"])
    assert code == 0
    finals = [u for u in stub_server.updates() if u["state"] in wire.FINAL_REPORT_STATES]
    assert [(u["job_id"], u["state"]) for u in finals] == [
        (good["job_id"], "finished"), (bad["job_id"], "failed")]
    assert not (workdir / f"{good['job_id']}.1").exists()
    assert (workdir / f"{bad['job_id']}.1" / "pilot.log").is_file()
    with stub_server.lock:
        acquires = [b for _, p, b, _ in stub_server.calls if p == wire.ACQUIRE_JOBS]
    assert acquires[0] == {"queue": "Q", "pilot_id": "test-pilot", "n_jobs": 1,
                           "max_walltime_s": 0.0}


def test_main_stops_after_max_jobs(
    stub_server: StubServer, make_spec: Callable[..., Spec], tmp_path: Path
) -> None:
    stub_server.jobs = [make_spec(), make_spec()]
    code = main(["--server", stub_server.url, "--queue", "Q", "--workdir", str(tmp_path),
                 "--max-jobs", "1", "--idle-timeout", "30"])
    assert code == 0
    assert len(stub_server.jobs) == 1
    assert stub_server.states() == ["starting", "running", "finished"]


def test_main_fails_when_the_server_is_gone(tmp_path: Path) -> None:
    code = main(["--server", "http://127.0.0.1:9", "--queue", "Q", "--workdir", str(tmp_path),
                 "--give-up-after", "0.3"])
    assert code == 2


def test_heartbeats_flow_while_the_payload_runs(
    client: PilotClient, stub_server: StubServer, make_spec: Callable[..., Spec],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_SLEEP", "1.2")
    result = run_job(client, make_spec(heartbeat_s=0.2), tmp_path / "work")
    assert result.outcome is Outcome.FINISHED
    states = stub_server.states()
    assert states[0] == "starting" and states[-1] == "finished"
    beats = [u for u in stub_server.updates()[2:-1] if u["state"] == "running"]
    assert len(beats) >= 3
    assert all(b["metrics"]["bytes_in"] > 0 for b in beats)
    assert max(b["metrics"]["wall_s"] for b in beats) > 0.5


def test_runner_abort_from_another_thread_reports_killed(
    client: PilotClient, stub_server: StubServer, make_spec: Callable[..., Spec],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_SLEEP", "60")
    runner = JobRunner(client, make_spec(), tmp_path / "work", kill_grace_s=1)
    threading.Timer(1.0, runner.abort, ["killed", "pilot received SIGTERM"]).start()
    result = runner.run()
    assert result.outcome is Outcome.FAILED
    final = stub_server.updates()[-1]
    assert (final["state"], final["error_category"]) == ("failed", "killed")
    assert "SIGTERM" in final["error_diag"]
