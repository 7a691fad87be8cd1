"""The payload runner (template, exit codes, limits, kills, metrics) and stage-in."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest
from pilot_helpers import adler32_hex, pid_alive, wait_for

from dawms.pilot.payload import (
    STDERR_NAME,
    STDOUT_NAME,
    Payload,
    PayloadError,
    build_command,
    run_payload,
)
from dawms.pilot.stagein import StageInError, order_urls, stage_in, stage_in_file
from dawms.wire import InputFile, JobSpec, Movers

PY = sys.executable


def py(code: str) -> list[str]:
    return [PY, "-c", code]


# --- template ------------------------------------------------------------------------------

def test_build_command_substitutes_every_placeholder() -> None:
    argv = build_command(
        "run.sh --in {inputs} --out {output} --all {outputs} --job {job_id}.{attempt}",
        inputs=["a.1", "with space"], outputs=["o.1", "o.2"], job_id=12, attempt=3)
    assert argv == ["run.sh", "--in", "a.1", "with space", "--out", "o.1",
                    "--all", "o.1", "o.2", "--job", "12.3"]


def test_build_command_keeps_other_braces_and_quotes() -> None:
    argv = build_command("python -c 'print({})' {output}", inputs=[], outputs=["x"],
                         job_id=1, attempt=1)
    assert argv == ["python", "-c", "print({})", "x"]


def test_build_command_cannot_be_tricked_into_a_shell() -> None:
    argv = build_command("cat {inputs}", inputs=["x; rm -rf /", "$(id)"], outputs=[],
                         job_id=1, attempt=1)
    assert argv == ["cat", "x; rm -rf /", "$(id)"]


@pytest.mark.parametrize("template", ["", "   ", "echo 'unbalanced"])
def test_build_command_rejects_bad_templates(template: str) -> None:
    with pytest.raises(PayloadError):
        build_command(template, inputs=[], outputs=[], job_id=1, attempt=1)


# --- running -------------------------------------------------------------------------------

def test_exit_code_and_captured_streams(tmp_path: Path) -> None:
    result = run_payload(py("import sys; print('to out'); print('to err', file=sys.stderr); "
                            "sys.exit(3)"), tmp_path)
    assert result.exit_code == 3
    assert not result.timed_out and result.kill_reason is None
    assert (tmp_path / STDOUT_NAME).read_text() == "to out\n"
    assert (tmp_path / STDERR_NAME).read_text() == "to err\n"


def test_runs_in_its_work_dir_and_produces_outputs(tmp_path: Path) -> None:
    (tmp_path / "in.1").write_bytes(b"abc")
    (tmp_path / "in 2").write_bytes(b"def")
    script = tmp_path / "cat.py"
    script.write_text("import sys\n*ins, out = sys.argv[1:]\n"
                      "open(out, 'wb').write(b''.join(open(i, 'rb').read() for i in ins))\n")
    argv = build_command(f"{PY} {script} {{inputs}} {{output}}", inputs=["in.1", "in 2"],
                         outputs=["out.1"], job_id=1, attempt=1)
    result = run_payload(argv, tmp_path)
    assert result.exit_code == 0
    assert (tmp_path / "out.1").read_bytes() == b"abcdef"


def test_missing_executable_is_a_payload_error(tmp_path: Path) -> None:
    with pytest.raises(PayloadError, match="no-such-program"):
        run_payload(["no-such-program-dawms"], tmp_path)


def test_walltime_kills_the_payload(tmp_path: Path) -> None:
    start = time.monotonic()
    result = run_payload(py("import time; time.sleep(60)"), tmp_path, walltime_s=0.5)
    assert time.monotonic() - start < 10
    assert result.timed_out
    assert result.exit_code < 0
    assert "walltime" in (result.kill_reason or "")


def test_sigkill_after_the_grace_when_sigterm_is_ignored(tmp_path: Path) -> None:
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "open('ready', 'w').close(); time.sleep(60)")
    payload = Payload(py(code), tmp_path, kill_grace_s=0.3)
    payload.start()
    assert wait_for(lambda: (tmp_path / "ready").exists())
    payload.kill("test")
    result = payload.wait()
    assert result.exit_code == -9
    assert result.kill_reason == "test" and not result.timed_out


def test_kill_from_another_thread_kills_the_whole_process_group(tmp_path: Path) -> None:
    code = ("import subprocess, time; "
            "p = subprocess.Popen(['sleep', '60']); "
            "open('child.pid', 'w').write(str(p.pid)); time.sleep(60)")
    payload = Payload(py(code), tmp_path, kill_grace_s=1)
    payload.start()
    assert wait_for(lambda: (tmp_path / "child.pid").exists() and
                    (tmp_path / "child.pid").read_text())
    child = int((tmp_path / "child.pid").read_text())
    threading.Timer(0.2, payload.kill, ["server said so"]).start()
    result = payload.wait()
    assert result.kill_reason == "server said so"
    assert wait_for(lambda: not pid_alive(child)), "the payload's child survived"


def test_kill_before_start_stops_it_at_once(tmp_path: Path) -> None:
    payload = Payload(py("import time; time.sleep(60)"), tmp_path, kill_grace_s=1)
    payload.kill("aborted early")
    payload.start()
    start = time.monotonic()
    result = payload.wait()
    assert time.monotonic() - start < 5
    assert result.kill_reason == "aborted early" and result.exit_code < 0


def test_metrics_measure_cpu_and_memory(tmp_path: Path) -> None:
    code = ("import time\nblob = bytearray(80 * 1024 * 1024)\nt = time.process_time()\n"
            "while time.process_time() - t < 0.6: pass\n")
    result = run_payload(py(code), tmp_path)
    assert result.exit_code == 0
    assert result.cpu_s >= 0.5
    assert result.wall_s >= result.cpu_s * 0.9
    assert result.max_rss_kb > 80 * 1024
    assert set(result.metrics()) == {"cpu_s", "wall_s", "max_rss_kb", "max_pss_kb",
                                     "max_procs", "monitor_samples"}


def test_metrics_while_running(tmp_path: Path) -> None:
    code = ("import time\nblob = bytearray(60 * 1024 * 1024)\nt = time.process_time()\n"
            "while time.process_time() - t < 5: pass\n")
    payload = Payload(py(code), tmp_path, kill_grace_s=1, sample_every_s=0.1)
    payload.start()
    waiter = threading.Thread(target=payload.wait)
    waiter.start()
    try:
        assert wait_for(lambda: payload.metrics()["max_rss_kb"] > 60 * 1024, timeout=4)
        assert payload.metrics()["wall_s"] > 0
    finally:
        payload.kill("done")
        waiter.join()


# --- stage-in ------------------------------------------------------------------------------

def replica(directory: Path, name: str, data: bytes) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)
    return (directory / name).as_uri()


def test_stagein_falls_back_to_the_next_replica_when_the_first_is_corrupt(
    tmp_path: Path,
) -> None:
    data = os.urandom(3000)
    corrupt = bytes([data[0] ^ 0xFF]) + data[1:]
    urls = [replica(tmp_path / "site_a", "f.1", corrupt),
            replica(tmp_path / "site_b", "f.1", data)]
    item = InputFile(scope="t", lfn="f.1", size=len(data), adler32=adler32_hex(data), urls=urls)
    staged = stage_in_file(item, tmp_path / "work", allowed=[tmp_path.as_uri()])
    assert staged.url == urls[1]
    assert (tmp_path / "work" / "f.1").read_bytes() == data
    assert staged.adler32 == adler32_hex(data)


def test_stagein_error_names_every_attempt(tmp_path: Path) -> None:
    data = os.urandom(100)
    urls = [replica(tmp_path / "a", "f.2", data[:50]),  # truncated
            (tmp_path / "nowhere" / "f.2").as_uri(),  # missing
            "root://eos.example.org//f.2"]  # a scheme this queue may not read
    item = InputFile(scope="t", lfn="f.2", size=len(data), adler32=adler32_hex(data), urls=urls)
    with pytest.raises(StageInError) as err:
        stage_in_file(item, tmp_path / "work", ["file"],
                      allowed=[tmp_path.as_uri(), "root://eos.example.org//"])
    message = str(err.value)
    assert all(url in message for url in urls)
    assert "not allowed" in message
    assert not (tmp_path / "work" / "f.2").exists()


def test_mover_preferences_order_and_filter_replicas() -> None:
    urls = ["file:///a/1", "root://x//1", "davs://y/1", "file:///b/1"]
    assert order_urls(urls, ["root", "file"]) == ["root://x//1", "file:///a/1", "file:///b/1"]
    assert order_urls(urls, None) == urls
    assert order_urls(urls, ["s3"]) == []


def test_stage_in_of_a_spec_and_early_stop(tmp_path: Path) -> None:
    files = {f"f.{i}": os.urandom(10 + i) for i in range(3)}
    spec = JobSpec(job_id=1, attempt=1, task_id=1, job_name="j", transformation="true",
                   memory_mb=0, walltime_s=0, heartbeat_s=1, movers=Movers(read=["file"]),
                   inputs=[InputFile(scope="t", lfn=n, size=len(d), adler32=adler32_hex(d),
                                     urls=[replica(tmp_path / "s", n, d)])
                           for n, d in files.items()],
                   endpoints={"S": (tmp_path / "s").as_uri()})
    staged = stage_in(spec, tmp_path / "w")
    assert [s.lfn for s in staged] == list(files)
    assert sum(s.size for s in staged) == sum(len(d) for d in files.values())
    with pytest.raises(StageInError, match="interrupted"):
        stage_in(spec, tmp_path / "w2", should_stop=lambda: True)


def test_stagein_refuses_names_that_escape_the_work_dir(tmp_path: Path) -> None:
    item = InputFile(scope="t", lfn="../evil", size=1, adler32="00000001",
                     urls=["file:///etc/hosts"])
    with pytest.raises(StageInError, match="plain file name"):
        stage_in_file(item, tmp_path, allowed=["file:///"])
