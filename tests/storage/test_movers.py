"""Mover conformance suite, run against every mover backend, plus the registry.

A backend gets the whole suite by subclassing ``MoverConformance`` and
providing ``mover`` and ``url_base`` fixtures (a writable base URL on a real
server: XRootD, moto S3, fake-gcs-server, wsgidav over TLS, started once per
session by conftest.py) and ``server_checked``, the checksums its server
confirms. Faults that a real server cannot be made to produce (a wrong server
checksum, a dropped connection) are injected by patching the one hook.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from servers import FaultProxy, Server

from dawms.storage import checksum, movers
from dawms.storage.checksum import bytes_adler32
from dawms.storage.movers import (
    ChecksumMismatch,
    FsspecMover,
    Mover,
    MoverError,
    MoverSettings,
    SizeMismatch,
    TransferTimeout,
    get_mover,
    resolve_options,
    storage_options_for,
)
from dawms.storage.movers.base import CHUNK_SIZE, normalize_adler32
from dawms.storage.movers.file import FileMover


def adler(data: bytes) -> str:
    return bytes_adler32(data)


FAST_RETRY = MoverSettings(attempts=3, backoff_s=0.01, backoff_max_s=0.05)


class MoverConformance:
    """What every mover must do. Subclasses provide ``mover`` and ``url_base``."""

    #: the checksums the server itself confirms after a get and a put
    server_checked: frozenset[str] = frozenset()

    def put_bytes(self, mover: Mover, url: str, data: bytes, tmp_path: Path) -> None:
        src = tmp_path / f"src-{len(data)}-{adler(data)}"
        src.write_bytes(data)
        mover.put(src, url)

    def test_put_get_round_trip(self, mover: Mover, url_base: str, tmp_path: Path) -> None:
        data = os.urandom(2 * CHUNK_SIZE + 12345)  # several chunks
        src = tmp_path / "src.bin"
        src.write_bytes(data)
        sent = mover.put(src, f"{url_base}/a/b/file.bin")
        assert (sent.size, sent.adler32) == (len(data), adler(data))
        assert sent.seconds >= 0
        dst = tmp_path / "in" / "file.bin"
        got = mover.get(f"{url_base}/a/b/file.bin", dst, size=len(data), adler32=adler(data))
        assert (got.size, got.adler32) == (len(data), adler(data))
        assert dst.read_bytes() == data

    def test_get_without_expectations_reports_what_it_read(
        self, mover: Mover, url_base: str, tmp_path: Path
    ) -> None:
        self.put_bytes(mover, f"{url_base}/plain", b"hello", tmp_path)
        got = mover.get(f"{url_base}/plain", tmp_path / "plain")
        assert (got.size, got.adler32) == (5, adler(b"hello"))

    def test_empty_file(self, mover: Mover, url_base: str, tmp_path: Path) -> None:
        self.put_bytes(mover, f"{url_base}/empty", b"", tmp_path)
        got = mover.get(f"{url_base}/empty", tmp_path / "empty", size=0, adler32="00000001")
        assert (got.size, got.adler32) == (0, "00000001")

    def test_checksum_mismatch_raises_and_leaves_no_file(
        self, mover: Mover, url_base: str, tmp_path: Path
    ) -> None:
        data = os.urandom(5000)
        self.put_bytes(mover, f"{url_base}/c.bin", data, tmp_path)
        dst = tmp_path / "c.bin"
        wrong = adler(data[:-1] + bytes([data[-1] ^ 1]))
        with pytest.raises(ChecksumMismatch, match="adler32"):
            mover.get(f"{url_base}/c.bin", dst, size=len(data), adler32=wrong)
        assert not dst.exists()

    def test_size_mismatch_raises_and_leaves_no_file(
        self, mover: Mover, url_base: str, tmp_path: Path
    ) -> None:
        data = os.urandom(5000)
        self.put_bytes(mover, f"{url_base}/s.bin", data, tmp_path)
        dst = tmp_path / "s.bin"
        with pytest.raises(SizeMismatch, match="5000"):
            mover.get(f"{url_base}/s.bin", dst, size=4999, adler32=adler(data))
        assert not dst.exists()

    def test_mismatches_are_mover_errors(self) -> None:
        assert issubclass(ChecksumMismatch, MoverError)
        assert issubclass(SizeMismatch, MoverError)

    def test_missing_source_raises(self, mover: Mover, url_base: str, tmp_path: Path) -> None:
        dst = tmp_path / "never.bin"
        with pytest.raises(MoverError, match="no-such-file"):
            mover.get(f"{url_base}/no-such-file", dst, size=1, adler32="00000001")
        assert not dst.exists()

    def test_put_missing_local_file_raises(
        self, mover: Mover, url_base: str, tmp_path: Path
    ) -> None:
        with pytest.raises(MoverError):
            mover.put(tmp_path / "absent", f"{url_base}/x")

    def test_put_overwrites(self, mover: Mover, url_base: str, tmp_path: Path) -> None:
        self.put_bytes(mover, f"{url_base}/o", b"first version", tmp_path)
        self.put_bytes(mover, f"{url_base}/o", b"2nd", tmp_path)
        got = mover.get(f"{url_base}/o", tmp_path / "o", size=3, adler32=adler(b"2nd"))
        assert got.size == 3

    def test_registry_gives_this_mover(self, mover: Mover, url_base: str) -> None:
        assert type(get_mover(f"{url_base}/x", **mover.storage_options)) is type(mover)

    def test_server_checksums_are_compared(
        self, mover: Mover, url_base: str, tmp_path: Path
    ) -> None:
        data = os.urandom(3 * 1024 * 1024 + 7)
        src = tmp_path / "srv.bin"
        src.write_bytes(data)
        sent = mover.put(src, f"{url_base}/srv.bin")
        got = mover.get(f"{url_base}/srv.bin", tmp_path / "srv.out", size=len(data),
                        adler32=adler(data))
        assert set(sent.server_checksums or {}) == self.server_checked
        assert set(got.server_checksums or {}) == self.server_checked
        if "adler32" in self.server_checked:
            assert got.server_checksums["adler32"] == adler(data)

    def test_server_checksum_mismatch_fails_the_get(
        self, mover: Mover, url_base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.put_bytes(mover, f"{url_base}/bad-at-server", b"payload", tmp_path)
        monkeypatch.setattr(mover, "server_checksums", lambda fs, path: {"adler32": "00000bad"})
        dst = tmp_path / "in" / "bad-at-server"
        with pytest.raises(ChecksumMismatch, match="server's adler32 is 00000bad"):
            mover.get(f"{url_base}/bad-at-server", dst, size=7)
        assert os.listdir(tmp_path / "in") == []  # neither the file nor its part file

    def test_per_file_timeout(
        self, mover: Mover, url_base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data = os.urandom(1024 * 1024)
        self.put_bytes(mover, f"{url_base}/slow", data, tmp_path)
        monkeypatch.setattr(checksum, "COPY_CHUNK", 64 * 1024)
        monkeypatch.setattr(mover, "block_size", 64 * 1024)
        monkeypatch.setattr(mover, "settings", MoverSettings(timeout_s=1e-6, attempts=3))
        dst = tmp_path / "slow.out"
        with pytest.raises(TransferTimeout, match="timeout") as err:
            mover.get(f"{url_base}/slow", dst, size=len(data))
        assert f"{url_base}/slow" in str(err.value) and "attempts" not in str(err.value)
        assert not dst.exists()
        with pytest.raises(TransferTimeout, match="timeout"):
            mover.put(tmp_path / f"src-{len(data)}-{adler(data)}", f"{url_base}/slow-put")

    def test_transient_errors_are_retried(
        self, mover: Mover, url_base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.put_bytes(mover, f"{url_base}/flaky", b"flaky data", tmp_path)
        real = mover.download
        calls = []

        def flaky(*args: Any) -> None:
            calls.append(1)
            if len(calls) < 3:
                raise ConnectionResetError("connection reset by peer (injected)")
            real(*args)

        monkeypatch.setattr(mover, "download", flaky)
        monkeypatch.setattr(mover, "settings", FAST_RETRY)
        got = mover.get(f"{url_base}/flaky", tmp_path / "flaky", size=10)
        assert (got.attempts, len(calls)) == (3, 3)
        calls.clear()
        monkeypatch.setattr(mover, "settings", MoverSettings(attempts=2, backoff_s=0.01))
        with pytest.raises(MoverError, match=r"ConnectionResetError.*after 2 attempts") as err:
            mover.get(f"{url_base}/flaky", tmp_path / "flaky2", size=10)
        assert err.value.url == f"{url_base}/flaky" and len(calls) == 2

    def test_a_stream_that_ends_early_is_retried(
        self, mover: Mover, url_base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        data = os.urandom(100_000)
        self.put_bytes(mover, f"{url_base}/short", data, tmp_path)
        real = mover.download
        calls = []

        def short_once(fs: Any, path: str, tmp: Path, digests: Any, deadline: float) -> None:
            calls.append(1)
            if len(calls) == 1:  # the connection closed cleanly half way: no exception
                tmp.write_bytes(data[:50_000])
                digests.update(data[:50_000])
                return
            real(fs, path, tmp, digests, deadline)

        monkeypatch.setattr(mover, "download", short_once)
        monkeypatch.setattr(mover, "settings", FAST_RETRY)
        got = mover.get(f"{url_base}/short", tmp_path / "short", size=len(data),
                        adler32=adler(data))
        assert got.attempts == 2 and (tmp_path / "short").read_bytes() == data

    def test_permanent_errors_are_not_retried(
        self, mover: Mover, url_base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(mover, "settings", FAST_RETRY)
        with pytest.raises(MoverError) as err:
            mover.get(f"{url_base}/no-such-file", tmp_path / "x")
        assert "attempts" not in str(err.value) and not err.value.retryable


class TestFileMover(MoverConformance):
    @pytest.fixture
    def mover(self) -> Mover:
        return FileMover()

    @pytest.fixture
    def url_base(self, tmp_path: Path) -> str:
        return (tmp_path / "storage").as_uri()


def _fresh(server: Server) -> str:
    return f"{server.url_base}/{uuid.uuid4().hex[:12]}"


@pytest.mark.movers
class TestXRootDMover(MoverConformance):
    server_checked = frozenset({"adler32"})

    @pytest.fixture
    def mover(self, xrootd_server: Server) -> Mover:
        return get_mover(xrootd_server.url_base, **xrootd_server.options)

    @pytest.fixture
    def url_base(self, xrootd_server: Server) -> str:
        return _fresh(xrootd_server)


@pytest.mark.movers
class TestS3Mover(MoverConformance):
    server_checked = frozenset({"crc32"})

    @pytest.fixture
    def mover(self, moto_server: Server) -> Mover:
        return get_mover(moto_server.url_base, **moto_server.options)

    @pytest.fixture
    def url_base(self, moto_server: Server) -> str:
        return _fresh(moto_server)

    def test_truncated_object_is_a_size_mismatch(
        self, mover: Mover, moto_server: Server, url_base: str, tmp_path: Path
    ) -> None:
        data = os.urandom(100_000)
        fs, path = mover.fs_for(f"{url_base}/trunc")  # type: ignore[attr-defined]
        fs.pipe_file(path, data[:60_000])  # the object on the server lost its tail
        dst = tmp_path / "trunc"
        with pytest.raises(SizeMismatch, match="got 60000 bytes, expected 100000"):
            mover.get(f"{url_base}/trunc", dst, size=len(data), adler32=adler(data))
        assert not dst.exists()


@pytest.mark.movers
class TestS3Faults:
    """moto behind a proxy that answers 503 or cuts bodies: retries and their limit.

    Uploads go to moto directly; the faults hit the GETs of object data."""

    @pytest.fixture
    def mover(self, moto_server: Server, s3_faults: FaultProxy) -> Mover:
        options = {**moto_server.options, "endpoint_url": f"http://127.0.0.1:{s3_faults.port}",
                   "config_kwargs": {"retries": {"max_attempts": 1}}}
        return get_mover("s3://x", settings=FAST_RETRY, **options)

    def test_server_errors_are_retried_with_backoff(
        self, mover: Mover, moto_server: Server, s3_faults: FaultProxy, tmp_path: Path
    ) -> None:
        data = os.urandom(200_000)
        (tmp_path / "f").write_bytes(data)
        url = f"{_fresh(moto_server)}/f"
        get_mover(url, **moto_server.options).put(tmp_path / "f", url)  # not through the proxy
        s3_faults.fail(2)
        got = mover.get(url, tmp_path / "in", size=len(data), adler32=adler(data))
        # s3fs retries a 503 once by itself; the second one needs the mover's retry
        assert got.attempts >= 2 and (tmp_path / "in").read_bytes() == data
        assert s3_faults.failures == []
        s3_faults.fail(100)
        with pytest.raises(MoverError, match="after 3 attempts") as err:
            mover.get(url, tmp_path / "in2", size=len(data), adler32=adler(data))
        assert err.value.url == url and not (tmp_path / "in2").exists()

    def test_a_cut_connection_is_retried(
        self, mover: Mover, moto_server: Server, s3_faults: FaultProxy, tmp_path: Path
    ) -> None:
        data = os.urandom(300_000)
        (tmp_path / "f").write_bytes(data)
        url = f"{_fresh(moto_server)}/f"
        get_mover(url, **moto_server.options).put(tmp_path / "f", url)  # not through the proxy
        s3_faults.truncate(1, keep=1000)
        got = mover.get(url, tmp_path / "in", size=len(data), adler32=adler(data))
        assert got.attempts >= 1 and (tmp_path / "in").read_bytes() == data
        assert s3_faults.gets >= 2  # the cut GET and at least one more


@pytest.mark.movers
class TestGCSMover(MoverConformance):
    server_checked = frozenset({"crc32c"} if checksum.crc32c_available() else {"md5"})

    @pytest.fixture
    def mover(self, gcs_server: Server) -> Mover:
        return get_mover(gcs_server.url_base, **gcs_server.options)

    @pytest.fixture
    def url_base(self, gcs_server: Server) -> str:
        return _fresh(gcs_server)


@pytest.mark.movers
class TestWebDAVMover(MoverConformance):
    """davs:// against wsgidav over TLS, its self-signed certificate passed as ``verify``."""

    @pytest.fixture
    def mover(self, webdav_server: Server) -> Mover:
        return get_mover(webdav_server.url_base, **webdav_server.options)

    @pytest.fixture
    def url_base(self, webdav_server: Server) -> str:
        return _fresh(webdav_server)

    def test_an_untrusted_certificate_is_refused(
        self, webdav_server: Server, url_base: str, tmp_path: Path
    ) -> None:
        (tmp_path / "f").write_bytes(b"x")
        with pytest.raises(MoverError, match="CERTIFICATE_VERIFY_FAILED") as err:
            get_mover(url_base).put(tmp_path / "f", f"{url_base}/f")
        assert "attempts" not in str(err.value)  # not worth a retry


class TestFsspecMemoryMover(MoverConformance):
    """The generic FsspecMover over fsspec's in-memory filesystem (a second backend)."""

    @pytest.fixture
    def mover(self, monkeypatch: pytest.MonkeyPatch) -> Mover:
        monkeypatch.setattr(movers, "registry", movers.registry.copy())
        movers.register_mover("memory", FsspecMover)
        return FsspecMover()

    @pytest.fixture
    def url_base(self, tmp_path: Path) -> Iterator[str]:
        base = f"memory://{tmp_path.name}"
        yield base
        fs = fsspec.filesystem("memory")
        if fs.exists(base):
            fs.rm(base, recursive=True)

    def test_put_checks_the_size_the_destination_holds(
        self, mover: Mover, url_base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(MemoryFileSystem, "size", lambda self, path: 1)
        src = tmp_path / "five"
        src.write_bytes(b"12345")
        with pytest.raises(SizeMismatch, match="holds 1 bytes, sent 5"):
            mover.put(src, f"{url_base}/five")




def test_unknown_scheme_error_is_clear() -> None:
    with pytest.raises(MoverError) as err:
        get_mover("gopher://host/file")
    message = str(err.value)
    assert "'gopher'" in message and "file" in message and "dawms.movers" in message


def test_missing_backend_names_the_pip_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(movers, "registry", movers.registry.copy())
    movers.register_mover("root", "dawms_test_no_such_module:XRootDMover", extra="xrootd",
                          clobber=True)
    with pytest.raises(MoverError, match=r"pip install 'dawms\[xrootd\]'"):
        get_mover("root://eos.example.org//data/file")


def test_registered_target_must_be_a_mover(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(movers, "registry", movers.registry.copy())
    movers.register_mover("weird", "pathlib:Path")
    with pytest.raises(MoverError, match="not a Mover"):
        get_mover("weird://x")


def test_registering_a_scheme_twice_needs_clobber(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(movers, "registry", movers.registry.copy())
    with pytest.raises(ValueError, match="already registered"):
        movers.register_mover("file", FsspecMover)
    movers.register_mover("file", FsspecMover, clobber=True)
    assert type(get_mover("file:///tmp/x")) is FsspecMover


def test_bare_path_uses_the_file_mover() -> None:
    assert isinstance(get_mover("/data/x"), FileMover)
    assert "file" in movers.available_schemes()


@pytest.mark.parametrize(("text", "canonical"), [
    ("0A1B2C3D", "0a1b2c3d"), ("ad:a1b2c3d", "0a1b2c3d"), (" 1 ", "00000001"),
])
def test_normalize_adler32(text: str, canonical: str) -> None:
    assert normalize_adler32(text) == canonical


@pytest.mark.parametrize("text", ["", "xyz", "123456789", "ad:"])
def test_normalize_adler32_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError):
        normalize_adler32(text)


def test_storage_options_for_picks_the_longest_prefix() -> None:
    table = {"s3://bucket": {"endpoint_url": "http://a"},
             "s3://bucket/deep/": {"endpoint_url": "http://b"}}
    assert storage_options_for("s3://bucket/x", table) == {"endpoint_url": "http://a"}
    assert storage_options_for("s3://bucket/deep/x", table) == {"endpoint_url": "http://b"}
    assert storage_options_for("s3://bucketother/x", table) == {}
    assert storage_options_for("s3://bucket/x", None) == {}


def test_resolve_options_reads_secrets_from_the_environment_and_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAWMS_TEST_SECRET", "s3cr3t")
    token = tmp_path / "token"
    token.write_text("tok\n")
    got = resolve_options({"key": "k", "secret": {"env": "DAWMS_TEST_SECRET"},
                           "headers": {"Authorization": {"file": str(token)}}, "n": 1})
    assert got == {"key": "k", "secret": "s3cr3t", "headers": {"Authorization": "tok"}, "n": 1}
    monkeypatch.delenv("DAWMS_TEST_SECRET")
    with pytest.raises(MoverError, match=r"'secret' wants \$DAWMS_TEST_SECRET"):
        get_mover("file:///x", secret={"env": "DAWMS_TEST_SECRET"})
    token.write_bytes(b"x" * (64 * 1024 + 1))
    with pytest.raises(MoverError, match="over 64 KiB"):
        resolve_options({"t": {"file": str(token)}})


def test_mover_settings_are_bounded() -> None:
    with pytest.raises(ValueError):
        MoverSettings(attempts=0)
    with pytest.raises(ValueError):
        MoverSettings(timeout_s=-1)
    assert MoverSettings().timeout_for(100_000_000) == 400 + 100


def test_the_file_mover_imports_no_backend_library() -> None:
    code = ("import sys; from dawms.storage.movers import get_mover; get_mover('file:///x'); "
            "bad = [m for m in ('fsspec_xrootd', 'XRootD', 's3fs', 'gcsfs', 'webdav4', 'botocore')"
            " if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(("scheme", "extra"), [
    ("root", "xrootd"), ("s3", "s3"), ("gs", "gcs"), ("davs", "davs"), ("https", "davs")])
def test_every_backend_names_its_pip_extra(scheme: str, extra: str) -> None:
    assert movers.registry._entries[scheme].extra == extra
