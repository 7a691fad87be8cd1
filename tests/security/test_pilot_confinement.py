"""A real pilot process touches nothing outside its work dir and its job's endpoints.

A (stub) server hands a real ``dawms-pilot`` process specs that try to make it read
a file of the worker node, write outside the output endpoint, ship a link the
payload planted, or write its log through such a link. Each is refused with a
clear report, and the files outside are untouched (compared byte for byte).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pilot_helpers import StubServer
from security_helpers import final_report, run_pilot, tree

pytestmark = pytest.mark.security

Spec = dict[str, Any]
SECRET = b"the worker node's secret\n"
CAT = "sh -c 'cat $DAWMS_INPUTS > \"$DAWMS_OUTPUT\"'"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def _run(stub: StubServer, spec: Spec, tmp_path: Path) -> dict[str, Any]:
    stub.jobs.append(spec)
    run_pilot(stub, tmp_path / "work")
    return final_report(stub)


def _shipped(tmp_path: Path) -> bytes:
    """Every byte that reached the output endpoint, log tarballs unpacked."""
    out = b""
    for path, data in tree(tmp_path / "dest").items():
        out += data
        if path.endswith(".tgz"):
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for m in tar.getmembers():
                    f = tar.extractfile(m)
                    out += f.read() if f else b""
    return out


def test_an_input_url_outside_the_endpoints_is_not_read(
        stub_server: StubServer, job_spec: Callable[..., Spec], tmp_path: Path,
        secret: Path) -> None:
    spec = job_spec(CAT)
    spec["inputs"][0]["urls"] = [secret.as_uri(), f"{spec['endpoints']['STORE']}/../outside/"
                                                   "secret.txt"]
    final = _run(stub_server, spec, tmp_path)
    assert (final["state"], final["error_category"]) == ("failed", "stagein")
    assert "not under any storage endpoint of the job" in final["error_diag"]
    assert SECRET not in b"".join(tree(tmp_path / "work").values())
    assert SECRET not in _shipped(tmp_path)


@pytest.mark.parametrize("where", ["outside/out.1", "dest/../outside/out.1"])
def test_an_output_url_outside_the_output_endpoint_is_not_written(
        stub_server: StubServer, job_spec: Callable[..., Spec], tmp_path: Path,
        where: str) -> None:
    spec = job_spec(CAT)
    spec["outputs"][0]["url"] = f"file://{tmp_path}/{where}"
    final = _run(stub_server, spec, tmp_path)
    assert (final["state"], final["error_category"]) == ("failed", "stageout")
    assert "is not under the job's output endpoint" in final["error_diag"]
    assert not (tmp_path / "outside").exists()


def test_a_spec_without_endpoints_reads_and_writes_nothing(
        stub_server: StubServer, job_spec: Callable[..., Spec], tmp_path: Path) -> None:
    spec = job_spec(CAT)
    del spec["endpoints"]
    final = _run(stub_server, spec, tmp_path)
    assert (final["state"], final["error_category"]) == ("failed", "stagein")
    assert not (tmp_path / "dest").exists() or not list((tmp_path / "dest").iterdir())


@pytest.mark.parametrize("field, value", [
    ("lfn", "../escape.1"), ("lfn", "/abs/escape.1"), ("scope", "../.."),
    ("dataset", "../x:y"), ("lfn", "pilot.log")])
def test_a_spec_with_escaping_output_names_is_refused(
        stub_server: StubServer, job_spec: Callable[..., Spec], tmp_path: Path,
        field: str, value: str) -> None:
    spec = job_spec(CAT)
    spec["outputs"][0][field] = value
    before = tree(tmp_path, tmp_path / "work")
    final = _run(stub_server, spec, tmp_path)
    assert (final["state"], final["error_category"]) == ("failed", "pilot")
    assert "the job spec is refused" in final["error_diag"]
    after = tree(tmp_path, tmp_path / "work")
    new = {p for p in after if p not in before}
    assert all(p.startswith(str(tmp_path / "dest") + "/") and p.endswith(".log.tgz")
               for p in new), new  # only the log, at its place


def test_a_linked_output_is_not_shipped(stub_server: StubServer,
                                        job_spec: Callable[..., Spec], tmp_path: Path,
                                        secret: Path) -> None:
    spec = job_spec(f"ln -s {secret} {{output}}")
    final = _run(stub_server, spec, tmp_path)
    assert (final["state"], final["error_category"]) == ("failed", "stageout")
    assert "symbolic link" in final["error_diag"]
    assert SECRET not in _shipped(tmp_path)


def test_a_linked_stderr_leaks_nothing(stub_server: StubServer,
                                       job_spec: Callable[..., Spec], tmp_path: Path,
                                       secret: Path) -> None:
    spec = job_spec(f"sh -c 'rm -f payload.stderr; ln -s \"$0\" payload.stderr; exit 3' {secret}")
    final = _run(stub_server, spec, tmp_path)
    assert (final["state"], final["error_category"]) == ("failed", "payload")
    assert SECRET.decode().strip() not in final["error_diag"]
    assert any(p.endswith(".log.tgz") for p in tree(tmp_path / "dest"))
    assert SECRET not in _shipped(tmp_path)


def test_the_log_is_never_written_through_a_planted_link(
        stub_server: StubServer, job_spec: Callable[..., Spec], tmp_path: Path,
        secret: Path) -> None:
    spec = job_spec("true")
    spec["transformation"] = f"ln -s {secret} {spec['log']['lfn']}"
    final = _run(stub_server, spec, tmp_path)
    assert final["state"] == "failed"  # no output produced
    assert secret.read_bytes() == SECRET  # not overwritten by the tarball
    assert [o["type"] for o in final["outputs"]] == ["log"]  # a fresh tarball went out
