"""The shell without a server: the client config file (mode 0600, precedence flag >
environment > file > default, errors naming what to fix), bad input refused with a
message and no traceback, and shell completion through argcomplete."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dawms.cli import main

pytestmark = pytest.mark.cli


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _dawms(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None,
           stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dawms", *argv], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})}, cwd=cwd,
                          input=stdin)


def test_config_file_is_private_and_flags_beat_env_beat_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    for var in ("DAWMS_SERVER", "DAWMS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "dawms" / "config.toml"
    code, out, _ = _run(capsys, "config", "path")
    assert code == 0 and out.strip() == str(path)
    code, out, _ = _run(capsys, "config", "show", "--json")
    shown = json.loads(out)
    assert not shown["exists"] and shown["settings"]["server"] == {
        "value": "http://127.0.0.1:8080", "from": "default"}
    os.umask(0o022)  # a careless umask: the file must still be 0600
    code, _, _ = _run(capsys, "config", "set", "server", "http://files.example:9000/")
    assert code == 0 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    monkeypatch.setattr(sys, "stdin", io.StringIO("tok.from.stdin\n"))
    code, _, _ = _run(capsys, "config", "set", "token", "-")
    assert code == 0 and 'token = "tok.from.stdin"' in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    code, out, _ = _run(capsys, "config", "show", "--json")
    settings = json.loads(out)["settings"]
    assert settings["server"] == {"value": "http://files.example:9000", "from": str(path)}
    assert "tok.from.stdin" not in out and settings["token"]["from"] == str(path)
    # the environment beats the file, a flag beats the environment
    monkeypatch.setenv("DAWMS_SERVER", "http://env.example:1")
    code, out, _ = _run(capsys, "config", "show", "--json")
    assert json.loads(out)["settings"]["server"] == {"value": "http://env.example:1",
                                                     "from": "$DAWMS_SERVER"}
    code, out, _ = _run(capsys, "--server", "http://flag.example:2", "config", "show", "--json")
    assert json.loads(out)["settings"]["server"] == {"value": "http://flag.example:2",
                                                     "from": "flag"}
    # the client uses what is in force: the flag's unreachable port, with a hint
    code, _, err = _run(capsys, "--server", "http://127.0.0.1:9", "task", "list")
    assert code == 1 and "cannot reach the dawms server at http://127.0.0.1:9" in err
    assert "DAWMS_SERVER" in err and "dawms config set server" in err
    code, _, _ = _run(capsys, "config", "unset", "token")
    assert code == 0 and "token" not in path.read_text()
    code, _, err = _run(capsys, "config", "set", "server", "ftp://nope")
    assert code == 2 and "must be an http(s) URL" in err


def test_bad_config_files_are_errors_that_name_the_file_and_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(os.environ["XDG_CONFIG_HOME"]) / "dawms" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text('servr = "http://x:1"\n')
    code, _, err = _run(capsys, "task", "list")
    assert code == 2 and "servr: not a setting (known: server, token" in err
    assert str(path) in err
    code, _, _ = _run(capsys, "config", "unset", "server")  # the repair commands still run
    assert code == 0
    path.write_text("server = [1, 2]\n")
    code, _, err = _run(capsys, "task", "list")
    assert code == 2 and "server:" in err
    path.write_text("server = \n")
    code, _, err = _run(capsys, "task", "list")
    assert code == 2 and "not valid TOML" in err
    path.write_text('token = "abc"\n')
    path.chmod(0o644)
    code, out, err = _run(capsys, "config", "show")
    assert code == 0 and "others may read it" in err and "chmod 600" in err
    path.unlink()
    path.mkdir()
    code, _, err = _run(capsys, "task", "list")
    assert code == 2 and "not a regular file" in err
    path.rmdir()
    # $DAWMS_CONFIG names another file
    other = tmp_path / "other.toml"
    other.write_text('server = "http://other.example:7"\n')
    monkeypatch.setenv("DAWMS_CONFIG", str(other))
    monkeypatch.delenv("DAWMS_SERVER", raising=False)
    code, out, _ = _run(capsys, "config", "show", "--json")
    assert json.loads(out)["settings"]["server"]["value"] == "http://other.example:7"


@pytest.mark.parametrize(("content", "suffix", "message"), [
    ('name = "t"\n[split]\ngb_per_job = nan\n', ".toml", "split.gb_per_job is nan"),
    ('name = "t"\npriority = inf\n', ".toml", "priority is inf"),
    ('{"name": "t", "split": {"files_per_job": [1, -Infinity]}}', ".json",
     "split.files_per_job[1] is -inf"),
    ('name = \n', ".toml", "cannot read"),
    ("[1, 2]", ".json", "a task file is a table"),
    (b"\xff\xfe\x00garbage", ".toml", "cannot read"),
])
def test_bad_task_files_are_refused_before_sending_without_a_traceback(
        tmp_path: Path, content: str | bytes, suffix: str, message: str) -> None:
    f = tmp_path / f"task{suffix}"
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    # no server at all: nothing is sent
    r = _dawms("--server", "http://127.0.0.1:9", "task", "submit", str(f))
    assert r.returncode == 2, r
    assert message in r.stderr and "Traceback" not in r.stderr


def test_unreadable_task_files_and_invalid_filters_exit_2_listing_choices(
        tmp_path: Path) -> None:
    for path in (tmp_path / "missing.toml", tmp_path):
        r = _dawms("task", "submit", str(path))
        assert r.returncode == 2 and "cannot read" in r.stderr and "Traceback" not in r.stderr
    for argv, allowed in ((["task", "list", "--state", "bogus"], "'registered'"),
                          (["job", "list", "--state", "bogus"], "'activated'"),
                          (["queue", "list", "--status", "up"], "'brokeroff'"),
                          (["request", "list", "--state", "x"], "'requested'"),
                          (["job", "log", "x"], "invalid int value"),
                          (["task", "watch", "1", "--interval", "nan"], "0.1 to 3600"),
                          (["job", "log", "1", "-n", "-3"], "from 0 to 100000")):
        r = _dawms(*argv)
        assert r.returncode == 2, (argv, r)
        assert allowed in r.stderr and "Traceback" not in r.stderr, (argv, r.stderr)


def test_completion_completes_commands_and_state_choices(tmp_path: Path) -> None:
    r = _dawms("completion", "bash")
    assert r.returncode == 0 and "complete" in r.stdout and "dawms" in r.stdout
    out = tmp_path / "completions"

    def complete(line: str) -> list[str]:
        env = {"_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
               "_ARGCOMPLETE_STDOUT_FILENAME": str(out), "_ARGCOMPLETE_IFS": "\n"}
        r = _dawms(env=env)
        assert r.returncode == 0, r.stderr
        return sorted(out.read_text().split())

    assert {"task", "job", "dataset", "queue", "site", "request", "config"} <= set(
        complete("dawms "))
    assert complete("dawms task l") == ["list"]
    assert complete("dawms task list --state fin") == ["finished"]
    assert complete("dawms queue list --status b") == ["brokeroff"]
