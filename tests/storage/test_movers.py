"""Mover conformance suite, run against every mover backend, plus the registry.

A new backend (root, s3, gs, davs) gets the whole suite by subclassing
``MoverConformance`` and providing ``mover`` and ``url_base`` fixtures (a
writable base URL on a real server for backends that need one).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from dawms.storage import movers
from dawms.storage.checksum import bytes_adler32
from dawms.storage.movers import (
    ChecksumMismatch,
    FsspecMover,
    Mover,
    MoverError,
    SizeMismatch,
    get_mover,
)
from dawms.storage.movers.base import CHUNK_SIZE, normalize_adler32
from dawms.storage.movers.file import FileMover


def adler(data: bytes) -> str:
    return bytes_adler32(data)


class MoverConformance:
    """What every mover must do. Subclasses provide ``mover`` and ``url_base``."""

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
        assert type(get_mover(f"{url_base}/x")) is type(mover)


class TestFileMover(MoverConformance):
    @pytest.fixture
    def mover(self) -> Mover:
        return FileMover()

    @pytest.fixture
    def url_base(self, tmp_path: Path) -> str:
        return (tmp_path / "storage").as_uri()


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
    movers.register_mover("root", "dawms_test_no_such_module:XRootDMover", extra="xrootd")
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
