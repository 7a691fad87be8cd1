"""Pilot-factory conformance suite, run against every pilot backend.

A backend (``slurm``, ``htcondor``, ``kubernetes``) gets the whole suite by
subclassing ``PilotFactoryConformance`` and providing a ``factory`` fixture (an
instance whose pilots can reach ``stub_server`` and see ``tmp_path``) and, if it
needs them, ``submit_opts`` (backend settings passed to every submit) and a
longer ``timeout_s``. The pilots are real ``python -m dawms.pilot`` processes
talking HTTP to the stub server of ``pilot_helpers``; every wait is on a
condition with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_kube import FakeKube, running_fake_kube
from fake_schedd import FakeSchedd, parse_quoted
from pilot_helpers import StubServer, pid_alive, wait_for

from dawms import wire
from dawms.pilot.factory import PILOT_ENDED, PilotFactory, PilotHandle, PilotStatus, SubmitError
from dawms.pilot.factory.base import MAX_PER_SUBMIT
from dawms.pilot.factory.htcondor import HTCondorFactory, quote_args, quote_env
from dawms.pilot.factory.kubernetes import KubernetesFactory
from dawms.pilot.factory.local import LocalFactory
from dawms.pilot.factory.slurm import SlurmFactory, job_name

pytestmark = pytest.mark.pilot
SpecMaker = Callable[..., dict[str, Any]]


class PilotFactoryConformance:
    """What every pilot factory must do. Subclasses provide ``factory``."""

    timeout_s = 60.0

    @pytest.fixture
    def submit_opts(self) -> dict[str, Any]:
        return {}

    @pytest.fixture
    def submit(self, factory: PilotFactory, submit_opts: dict[str, Any], tmp_path: Path,
               stub_server: StubServer) -> Iterator[Callable[..., list[PilotHandle]]]:
        """Submit pilots to the stub server; every pilot is cancelled at the end."""
        handles: list[PilotHandle] = []

        def run(n: int = 1, **opts: Any) -> list[PilotHandle]:
            opts = {"idle_timeout": 0.5, "poll_interval": 0.1, "give_up_after": 5,
                    **submit_opts, **opts}
            got = factory.submit(stub_server.url, "Q", n, tmp_path / "pilots", **opts)
            handles.extend(got)
            return got

        yield run
        for h in handles:
            factory.cancel(h)
        for h in handles:
            factory.wait(h, self.timeout_s)

    def log_of(self, handle: PilotHandle) -> str:
        return handle.log_path.read_text() if handle.log_path and handle.log_path.exists() \
            else ""

    # --- submit --------------------------------------------------------------------------
    def test_submit_gives_one_handle_per_pilot_each_known_to_the_server(
        self, factory: PilotFactory, submit: Callable[..., list[PilotHandle]],
        stub_server: StubServer,
    ) -> None:
        handles = submit(3)
        assert len(handles) == 3
        assert {h.backend for h in handles} == {factory.name}
        assert len({h.id for h in handles}) == len({h.pilot_id for h in handles}) == 3
        assert [factory.wait(h, self.timeout_s) for h in handles] == [PilotStatus.DONE] * 3
        with stub_server.lock:
            asked = {body["pilot_id"] for _, path, body, _ in stub_server.calls
                     if path == wire.ACQUIRE_JOBS}
        assert asked == {h.pilot_id for h in handles}

    def test_a_pilot_runs_the_queued_job_and_ends_done(
        self, factory: PilotFactory, submit: Callable[..., list[PilotHandle]],
        stub_server: StubServer, make_spec: SpecMaker,
    ) -> None:
        stub_server.jobs = [make_spec()]
        [handle] = submit()
        assert factory.wait(handle, self.timeout_s) is PilotStatus.DONE, self.log_of(handle)
        assert stub_server.states() == ["starting", "running", "finished"]

    def test_several_pilots_share_the_queue(
        self, factory: PilotFactory, submit: Callable[..., list[PilotHandle]],
        stub_server: StubServer, make_spec: SpecMaker,
    ) -> None:
        stub_server.jobs = [make_spec() for _ in range(4)]
        handles = submit(2)
        assert [factory.wait(h, self.timeout_s) for h in handles] == [PilotStatus.DONE] * 2
        assert stub_server.states().count("finished") == 4

    # --- status --------------------------------------------------------------------------
    def test_status_is_running_while_the_pilot_works(
        self, factory: PilotFactory, submit: Callable[..., list[PilotHandle]],
        stub_server: StubServer, make_spec: SpecMaker,
    ) -> None:
        stub_server.jobs = [make_spec()]
        [handle] = submit(env={"TEST_SLEEP": "60"}, kill_grace=1)
        assert factory.poll(handle) in (PilotStatus.PENDING, PilotStatus.RUNNING)
        assert wait_for(lambda: "running" in stub_server.states(), self.timeout_s), \
            self.log_of(handle)
        assert factory.poll(handle) is PilotStatus.RUNNING

    def test_a_pilot_that_cannot_reach_the_server_ends_failed(
        self, factory: PilotFactory, submit_opts: dict[str, Any], tmp_path: Path,
    ) -> None:
        [handle] = factory.submit("http://127.0.0.1:9", "Q", 1, tmp_path / "pilots",
                                  give_up_after=0.5, **submit_opts)
        assert factory.wait(handle, self.timeout_s) is PilotStatus.FAILED
        factory.cleanup(handle)

    # --- cancel --------------------------------------------------------------------------
    def test_cancel_stops_the_pilot_which_reports_its_job_killed(
        self, factory: PilotFactory, submit: Callable[..., list[PilotHandle]],
        stub_server: StubServer, make_spec: SpecMaker,
    ) -> None:
        stub_server.jobs = [make_spec()]
        [handle] = submit(env={"TEST_SLEEP": "60"}, kill_grace=1)
        assert wait_for(lambda: "running" in stub_server.states(), self.timeout_s), \
            self.log_of(handle)
        factory.cancel(handle)
        assert factory.wait(handle, self.timeout_s) is PilotStatus.CANCELLED
        final = stub_server.updates()[-1]
        assert (final["state"], final["error_category"]) == ("failed", "killed")

    def test_cancel_is_harmless_once_the_pilot_has_ended(
        self, factory: PilotFactory, submit: Callable[..., list[PilotHandle]],
    ) -> None:
        [handle] = submit()
        assert factory.wait(handle, self.timeout_s) is PilotStatus.DONE
        factory.cancel(handle)
        factory.cancel(handle)
        assert factory.poll(handle) is PilotStatus.DONE

    # --- cleanup -------------------------------------------------------------------------
    def test_cleanup_forgets_an_ended_pilot_and_keeps_its_log(
        self, factory: PilotFactory, submit: Callable[..., list[PilotHandle]],
    ) -> None:
        [handle] = submit()
        assert factory.wait(handle, self.timeout_s) is PilotStatus.DONE
        log_before = self.log_of(handle)
        factory.cleanup(handle)
        assert factory.poll(handle) is PilotStatus.UNKNOWN
        factory.cleanup(handle)  # twice is harmless
        assert self.log_of(handle) == log_before and handle.pilot_id in log_before

    def test_cleanup_refuses_a_running_pilot(
        self, factory: PilotFactory, submit: Callable[..., list[PilotHandle]],
        stub_server: StubServer, make_spec: SpecMaker,
    ) -> None:
        stub_server.jobs = [make_spec()]
        [handle] = submit(env={"TEST_SLEEP": "60"}, kill_grace=1)
        assert wait_for(lambda: "running" in stub_server.states(), self.timeout_s)
        with pytest.raises(ValueError, match="still running"):
            factory.cleanup(handle)
        assert factory.poll(handle) is PilotStatus.RUNNING

    # --- limits --------------------------------------------------------------------------
    @pytest.mark.parametrize(("n", "queue", "url"), [
        (0, "Q", "http://s"), (4, "Q", "http://s"), (-1, "Q", "http://s"),
        (True, "Q", "http://s"), (1.0, "Q", "http://s"), (1, "", "http://s"),
        (1, "Q" * 129, "http://s"), (1, "Q; rm -rf /", "http://s"), (1, "Q\n", "http://s"),
        (1, "Q", "file:///etc/passwd"), (1, "Q", "--server=x"),
    ])
    def test_a_submit_out_of_limits_is_refused_and_starts_nothing(
        self, factory: PilotFactory, submit_opts: dict[str, Any], tmp_path: Path,
        n: Any, queue: str, url: str,
    ) -> None:
        factory.max_per_submit = 3  # small, so a broken guard starts few pilots
        # and any it wrongly starts leave at once
        opts = {"give_up_after": 0.1, "idle_timeout": 0.1, **submit_opts}
        with pytest.raises(SubmitError):
            factory.submit(url, queue, n, tmp_path / "pilots", **opts)
        assert not (tmp_path / "pilots").exists() or not any((tmp_path / "pilots").iterdir())

    def test_the_default_limit_per_submit(self, factory: PilotFactory) -> None:
        assert type(factory).max_per_submit == MAX_PER_SUBMIT

    def test_max_jobs_bounds_what_one_pilot_runs(
        self, factory: PilotFactory, submit: Callable[..., list[PilotHandle]],
        stub_server: StubServer, make_spec: SpecMaker,
    ) -> None:
        stub_server.jobs = [make_spec() for _ in range(3)]
        [handle] = submit(max_jobs=1)
        assert factory.wait(handle, self.timeout_s) is PilotStatus.DONE
        assert stub_server.states() == ["starting", "running", "finished"]
        assert len(stub_server.jobs) == 2  # left for other pilots

    def test_lifetime_bounds_how_long_a_pilot_takes_new_jobs(
        self, factory: PilotFactory, submit: Callable[..., list[PilotHandle]],
        stub_server: StubServer,
    ) -> None:
        stub_server.pending = lambda: 1  # jobs pending: without a lifetime it waits forever
        [handle] = submit(lifetime=1)
        assert factory.wait(handle, self.timeout_s) is PilotStatus.DONE
        assert "lifetime of 1 s reached" in self.log_of(handle)

    # --- handles -------------------------------------------------------------------------
    def test_a_handle_of_another_backend_is_refused(self, factory: PilotFactory) -> None:
        alien = PilotHandle("no-such-backend", "1", "x")
        for call in (factory.poll, factory.cancel, factory.cleanup):
            with pytest.raises(ValueError, match="no-such-backend"):
                call(alien)

    def test_a_handle_it_never_submitted_is_unknown_and_left_alone(
        self, factory: PilotFactory,
    ) -> None:
        bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                     start_new_session=True)
        try:
            stranger = PilotHandle(factory.name, str(bystander.pid), "x")
            assert factory.poll(stranger) is PilotStatus.UNKNOWN
            factory.cancel(stranger)
            factory.cleanup(stranger)
            assert bystander.poll() is None and pid_alive(bystander.pid), \
                "cancel signalled a process the factory did not start"
        finally:
            bystander.kill()
            bystander.wait()


class TestLocalFactory(PilotFactoryConformance):
    @pytest.fixture
    def factory(self) -> LocalFactory:
        return LocalFactory()

    def test_cancel_kills_the_payload_too(
        self, factory: LocalFactory, submit: Callable[..., list[PilotHandle]],
        stub_server: StubServer, make_spec: SpecMaker, tmp_path: Path,
    ) -> None:
        stub_server.jobs = [make_spec()]
        [handle] = submit(env={"TEST_SLEEP": "60"}, kill_grace=1)
        pid_files = (tmp_path / "pilots").glob
        assert wait_for(lambda: list(pid_files("pilot-*/*/payload.pid")), self.timeout_s)
        payload_pid = int(next(pid_files("pilot-*/*/payload.pid")).read_text())
        factory.cancel(handle)
        assert factory.wait(handle, self.timeout_s) is PilotStatus.CANCELLED
        assert "SIGTERM" in stub_server.updates()[-1]["error_diag"]
        assert wait_for(lambda: not pid_alive(payload_pid)), "the payload survived its pilot"

    def test_a_pilot_killed_outright_is_failed_and_leaves_no_payload(
        self, factory: LocalFactory, submit: Callable[..., list[PilotHandle]],
        stub_server: StubServer, make_spec: SpecMaker, tmp_path: Path,
    ) -> None:
        stub_server.jobs = [make_spec()]
        [handle] = submit(env={"TEST_SLEEP": "60"})
        pid_files = (tmp_path / "pilots").glob
        assert wait_for(lambda: list(pid_files("pilot-*/*/payload.pid")), self.timeout_s)
        payload_pid = int(next(pid_files("pilot-*/*/payload.pid")).read_text())
        os.killpg(int(handle.id), signal.SIGKILL)  # no chance to clean up
        assert factory.wait(handle, self.timeout_s) is PilotStatus.FAILED
        assert wait_for(lambda: not pid_alive(payload_pid)), "the payload outlived its pilot"


def _slurm_conf() -> str:
    conf = os.environ.get("SLURM_CONF", "")
    if not conf or not Path(conf).is_file():
        pytest.fail("SLURM_CONF names no slurm.conf: run `make services` "
                    "(scripts/services_slurm.sh) and source .services/env")
    return conf


def _argv_of_processes() -> list[str]:
    """Every process's command line on this machine (what any user of it can read)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                continue
    return out


@pytest.mark.slurm
class TestSlurmFactory(PilotFactoryConformance):
    """The suite against the real one-node cluster of scripts/services_slurm.sh."""

    timeout_s = 90.0

    @pytest.fixture
    def factory(self) -> SlurmFactory:
        return SlurmFactory(_slurm_conf())

    def test_the_token_is_on_no_command_line_and_in_a_0600_file(
        self, factory: SlurmFactory, submit: Callable[..., list[PilotHandle]],
        stub_server: StubServer, make_spec: SpecMaker, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        secret = "tok-" + os.urandom(16).hex()
        monkeypatch.setenv("DAWMS_TOKEN", "factory-own-" + secret)  # must not reach pilots
        stub_server.jobs = [make_spec()]
        [handle] = submit(env={"TEST_SLEEP": "60"}, kill_grace=1, token=secret)
        assert wait_for(lambda: "running" in stub_server.states(), self.timeout_s), \
            self.log_of(handle)
        assert not [a for a in _argv_of_processes() if secret in a]
        shown = subprocess.run(["scontrol", "show", "job", "-dd", handle.id],
                               capture_output=True, text=True, check=True).stdout
        assert secret not in shown and "Command=" in shown
        [token_file] = (tmp_path / "pilots" / "tokens").iterdir()
        assert token_file.read_text() == secret
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "pilots" / "tokens").stat().st_mode & 0o077 == 0

    def test_a_queue_name_becomes_a_safe_job_name(
        self, factory: SlurmFactory, submit: Callable[..., list[PilotHandle]],
    ) -> None:
        assert job_name("Q/../x;$(id)") == "dawms-pilot-Q_.._x___id_"
        assert len(job_name("Q" * 128)) == 64

    @pytest.mark.parametrize("settings", [
        {"partition": "debug --wrap=id"}, {"partition": ""}, {"account": "a b"},
        {"time_limit_min": 0}, {"time_limit_min": "10"}, {"mem_mb": True},
        {"cpus_per_task": 10**9}, {"wrap": "id"},
    ])
    def test_bad_slurm_settings_are_refused_and_submit_nothing(
        self, factory: SlurmFactory, stub_server: StubServer, tmp_path: Path,
        settings: dict[str, Any],
    ) -> None:
        with pytest.raises(SubmitError):
            factory.submit(stub_server.url, "Q", 1, tmp_path / "pilots", slurm=settings)
        assert not (tmp_path / "pilots").exists()

    def test_slurm_settings_reach_sbatch(
        self, factory: SlurmFactory, submit: Callable[..., list[PilotHandle]],
    ) -> None:
        [handle] = submit(slurm={"partition": "debug", "time_limit_min": 7,
                                 "cpus_per_task": 2})
        shown = subprocess.run(["scontrol", "show", "job", "-o", handle.id],
                               capture_output=True, text=True, check=True).stdout
        assert "Partition=debug" in shown and "TimeLimit=00:07:00" in shown
        assert "NumCPUs=2" in shown and "JobName=dawms-pilot-Q" in shown
        assert factory.wait(handle, self.timeout_s) is PilotStatus.DONE


class TestHTCondorFactory(PilotFactoryConformance):
    """The suite through the htcondor2 bindings against a fake Schedd (fake_schedd.py)
    that runs each submitted description as a local process."""

    @pytest.fixture
    def schedd(self) -> Iterator[FakeSchedd]:
        fake = FakeSchedd()
        yield fake
        fake.kill_all()

    @pytest.fixture
    def factory(self, schedd: FakeSchedd) -> HTCondorFactory:
        return HTCondorFactory(schedd)

    def test_the_token_is_in_no_job_ad_nor_argv_and_the_factory_token_stays_home(
        self, factory: HTCondorFactory, schedd: FakeSchedd,
        submit: Callable[..., list[PilotHandle]], stub_server: StubServer,
        make_spec: SpecMaker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        secret = "tok-" + os.urandom(16).hex()
        monkeypatch.setenv("DAWMS_TOKEN", "factory-own-" + secret)
        stub_server.jobs = [make_spec()]
        [handle] = submit(env={"TEST_SLEEP": "60"}, kill_grace=1, token=secret)
        assert wait_for(lambda: "running" in stub_server.states(), self.timeout_s), \
            self.log_of(handle)
        [description] = schedd.descriptions
        assert secret not in repr(description) and "--token-file" in description["arguments"]
        assert not [a for a in _argv_of_processes() if secret in a]
        [token_file] = (tmp_path / "pilots" / "tokens").iterdir()
        assert token_file.read_text() == secret and token_file.stat().st_mode & 0o777 == 0o600

    @pytest.mark.parametrize("settings", [
        {"request_cpus": 0}, {"request_cpus": "2"}, {"request_memory_mb": True},
        {"requirements": "True"}, {"getenv": "true"},
    ])
    def test_bad_htcondor_settings_are_refused_and_submit_nothing(
        self, factory: HTCondorFactory, schedd: FakeSchedd, stub_server: StubServer,
        tmp_path: Path, settings: dict[str, Any],
    ) -> None:
        with pytest.raises(SubmitError):
            factory.submit(stub_server.url, "Q", 1, tmp_path / "pilots", htcondor=settings)
        assert not schedd.descriptions and not (tmp_path / "pilots").exists()

    def test_settings_become_submit_lines(
        self, factory: HTCondorFactory, schedd: FakeSchedd,
        submit: Callable[..., list[PilotHandle]],
    ) -> None:
        [handle] = submit(htcondor={"request_cpus": 2, "request_memory_mb": 1000,
                                    "max_walltime_s": 3600})
        [d] = schedd.descriptions
        assert (d["request_cpus"], d["request_memory"]) == ("2", "1000")
        assert "3600" in d["periodic_remove"] and d["MY.DawmsPilotId"] == f'"{handle.pilot_id}"'
        assert factory.wait(handle, self.timeout_s) is PilotStatus.DONE


class TestKubernetesFactory(PilotFactoryConformance):
    """The suite through the kubernetes client against a fake API server (fake_kube.py)
    that runs each pod's container as a local process."""

    @pytest.fixture
    def kube(self) -> Iterator[tuple[FakeKube, str]]:
        with running_fake_kube() as running:
            yield running

    @pytest.fixture
    def factory(self, kube: tuple[FakeKube, str]) -> KubernetesFactory:
        from kubernetes import client

        return KubernetesFactory(client.ApiClient(client.Configuration(host=kube[1])),
                                 namespace="pilots")

    @pytest.fixture
    def submit_opts(self, tmp_path: Path) -> dict[str, Any]:
        (tmp_path / "pods").mkdir()
        return {"kubernetes": {"python": sys.executable, "image": "dawms-pilot:test",
                               "workdir": str(tmp_path / "pods")}}

    def test_the_token_is_a_secret_not_in_the_pod_spec_nor_argv(
        self, factory: KubernetesFactory, kube: tuple[FakeKube, str],
        submit: Callable[..., list[PilotHandle]], stub_server: StubServer,
        make_spec: SpecMaker, monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        secret = "tok-" + os.urandom(16).hex()
        monkeypatch.setenv("DAWMS_TOKEN", "factory-own-" + secret)
        stub_server.jobs = [make_spec()]
        [handle] = submit(env={"TEST_SLEEP": "60"}, kill_grace=1, token=secret)
        assert wait_for(lambda: "running" in stub_server.states(), self.timeout_s), \
            self.log_of(handle)
        [pod] = kube[0].created
        assert secret not in json.dumps(pod) and "DAWMS_TOKEN" in json.dumps(pod)
        assert pod["metadata"]["labels"] == {"app": "dawms-pilot", "dawms-queue": "Q"}
        assert [s["token"] for s in kube[0].secrets.values()] == [secret]
        assert not [a for a in _argv_of_processes() if secret in a]
        factory.cancel(handle)
        assert factory.wait(handle, self.timeout_s) is PilotStatus.CANCELLED
        factory.cleanup(handle)
        assert not kube[0].secrets  # the batch's secret goes with its last pilot

    @pytest.mark.parametrize(("settings", "env"), [
        ({"image": "x; rm -rf /"}, {}), ({"python": "python3"}, {}), ({"cpu": "1 2"}, {}),
        ({"privileged": True}, {}), ({}, {"DAWMS_TOKEN": "x"}), ({}, {"A-B": "1"}),
    ])
    def test_bad_kubernetes_settings_are_refused_and_create_nothing(
        self, factory: KubernetesFactory, kube: tuple[FakeKube, str], stub_server: StubServer,
        tmp_path: Path, settings: dict[str, Any], env: dict[str, str],
    ) -> None:
        with pytest.raises(SubmitError):
            factory.submit(stub_server.url, "Q", 1, tmp_path / "pilots", kubernetes=settings,
                           env=env, token="t")
        assert not kube[0].created and not kube[0].secrets


@pytest.mark.parametrize("argv", [
    ["a b", "it's", 'say "hi"', "", "$(HOME)", "'", '"', "--x=1 --y"],
])
def test_htcondor_quoting_gives_back_every_argument(argv: list[str]) -> None:
    assert parse_quoted(quote_args(argv)) == argv
    env = {"A": "x y", "B": "it's \"q\"", "C": "", "bad-name": "1", "D": "two\nlines"}
    got = dict(w.split("=", 1) for w in parse_quoted(quote_env(env)))
    assert got == {"A": "x y", "B": "it's \"q\"", "C": ""}
    with pytest.raises(SubmitError):
        quote_args(["a\nb"])


def test_every_status_a_poll_can_end_on_is_final() -> None:
    assert set(PilotStatus) - {PilotStatus.PENDING, PilotStatus.RUNNING} == PILOT_ENDED
