"""Uploading into the local DDM never corrupts a registered replica.

Other bytes under a registered name are refused before anything is written; a
copy lands under a temporary name and is renamed into place only when complete;
the same bytes uploaded again change nothing. ``dawms data upload`` reports every
such problem in one line (exit 2), never with a traceback.
"""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest
from sqlalchemy import func, select

from dawms.catalog.db import Database
from dawms.catalog.models import DatasetFile, File, Replica, StorageEndpoint
from dawms.cli import main
from dawms.ddm_bridge.abc import RegistrationError
from dawms.ddm_bridge.local import LocalDDM
from dawms.ddm_bridge.local import ddm as local
from dawms.storage import checksum


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _upload(db: Database, ddm: LocalDDM, did: str, *paths: Path,
            endpoint: str = "SITE_A_DISK") -> list[tuple[str, int, str]]:
    with db.session() as s:
        ep = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == endpoint))
        return [(f.name, f.size, f.adler32) for f in ddm.upload(s, did, list(paths), ep)]


def _on_disk(db: Database, ddm: LocalDDM, scope: str, name: str,
             endpoint: str = "SITE_A_DISK") -> Path:
    with db.session() as s:
        ep = s.scalar(select(StorageEndpoint).where(StorageEndpoint.name == endpoint))
        return Path(fsspec.core.url_to_fs(ddm.pfn(ep, scope, name))[1])


def _catalog(db: Database) -> tuple[int, int, int]:
    with db.session() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) or 0  # type: ignore[return-value]
                     for t in (File, Replica, DatasetFile))


@pytest.mark.parametrize("other", [b"B" * 100, b"B" * 99],
                         ids=["same-size-other-bytes", "other-size"])
def test_other_bytes_under_a_registered_name_are_refused_before_writing(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path, other: bytes) -> None:
    original = _write(tmp_path / "a" / "f.1", b"A" * 100)
    _upload(db, ddm, "up:ds", original)
    stored = _on_disk(db, ddm, "up", "f.1")
    before = _catalog(db)
    with pytest.raises(RegistrationError, match="up:f.1 is already registered with size 100"):
        _upload(db, ddm, "up:other", _write(tmp_path / "b" / "f.1", other))
    assert stored.read_bytes() == b"A" * 100
    assert sorted(p.name for p in stored.parent.iterdir()) == ["f.1"]  # no temporary left
    assert _catalog(db) == before


def test_a_refused_file_stops_the_whole_upload_before_any_byte_moves(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    _upload(db, ddm, "up:ds", _write(tmp_path / "a" / "f.1", b"A" * 10))
    fresh = _write(tmp_path / "b" / "f.0", b"new")
    with pytest.raises(RegistrationError, match="nothing was uploaded"):
        _upload(db, ddm, "up:ds", fresh, _write(tmp_path / "b" / "f.1", b"B" * 10))
    assert not _on_disk(db, ddm, "up", "f.0").exists()


def test_the_same_name_twice_with_other_bytes_is_refused(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    one, two = _write(tmp_path / "a" / "f.1", b"A"), _write(tmp_path / "b" / "f.1", b"B")
    with pytest.raises(RegistrationError, match="differ; nothing was uploaded"):
        _upload(db, ddm, "up:ds", one, two)
    assert not _on_disk(db, ddm, "up", "f.1").exists()
    assert _catalog(db) == (0, 0, 0)


def test_uploading_the_same_bytes_again_changes_nothing(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path) -> None:
    path = _write(tmp_path / "a" / "f.1", b"A" * 100)
    first = _upload(db, ddm, "up:ds", path)
    counts = _catalog(db)
    assert _upload(db, ddm, "up:ds", path) == first == [("f.1", 100, first[0][2])]
    assert _catalog(db) == counts == (1, 1, 1)
    stored = _on_disk(db, ddm, "up", "f.1")
    assert stored.read_bytes() == b"A" * 100
    assert sorted(p.name for p in stored.parent.iterdir()) == ["f.1"]


def test_a_copy_that_breaks_leaves_nothing_at_the_destination(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = local.copy_stream

    def disk_full(src, dst=None):  # type: ignore[no-untyped-def]
        if dst is None:
            return real(src)
        dst.write(src.read(10))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local, "copy_stream", disk_full)  # the checksum pass
    monkeypatch.setattr(checksum, "copy_stream", disk_full)  # the copy (put_verified)
    with pytest.raises(OSError, match="No space left"):
        _upload(db, ddm, "up:ds", _write(tmp_path / "a" / "f.1", b"A" * 100))
    stored = _on_disk(db, ddm, "up", "f.1")
    assert not stored.exists() and list(stored.parent.iterdir()) == []
    assert _catalog(db) == (0, 0, 0)


def test_a_file_that_changes_while_uploaded_is_refused(
        db: Database, ddm: LocalDDM, sites: list[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "a" / "f.1", b"A" * 100)
    real = local.copy_stream

    def then_changed(src, dst=None):  # type: ignore[no-untyped-def]
        result = real(src, dst)
        if dst is None:  # checksummed: now someone rewrites the file
            path.write_bytes(b"B" * 100)
        return result

    monkeypatch.setattr(local, "copy_stream", then_changed)
    monkeypatch.setattr(checksum, "copy_stream", then_changed)
    with pytest.raises(RegistrationError, match="changed while it was uploaded"):
        _upload(db, ddm, "up:ds", path)
    assert list(_on_disk(db, ddm, "up", "f.1").parent.iterdir()) == []
    assert _catalog(db) == (0, 0, 0)


# ------------------------------------------------------------------ the CLI
def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["data", "upload", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cli_db(db: Database, sites: list[str], monkeypatch: pytest.MonkeyPatch) -> Database:
    monkeypatch.setenv("DAWMS_DB_URL", db.url)
    return db


def _one_line_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_cli_upload_errors_are_one_line(cli_db: Database, ddm: LocalDDM, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path / "a" / "f.1", b"A" * 100)
    _one_line_error(*_cli(capsys, "no-colon", str(f), "--endpoint", "SITE_A_DISK"),
                    "dataset name 'no-colon' must look like scope:name")
    missing = tmp_path / "nope" / "f.2"
    _one_line_error(*_cli(capsys, "up:ds", str(f), str(missing), "--endpoint", "SITE_A_DISK"),
                    f"{missing}: No such file or directory; nothing was registered")
    _one_line_error(*_cli(capsys, "up:ds", str(f), "--endpoint", "NOPE"), "no endpoint NOPE")
    assert _catalog(cli_db) == (0, 0, 0)

    code, out, err = _cli(capsys, "up:ds", str(f), "--endpoint", "SITE_A_DISK")
    assert (code, out, err) == (0, "1 files in up:ds at SITE_A_DISK\n", "")
    other = _write(tmp_path / "b" / "f.1", b"B" * 100)
    _one_line_error(*_cli(capsys, "up:ds", str(other), "--endpoint", "SITE_A_DISK"),
                    "up:f.1 is already registered with size 100", "nothing was uploaded")
    assert _on_disk(cli_db, ddm, "up", "f.1").read_bytes() == b"A" * 100
    assert _catalog(cli_db) == (1, 1, 1)
