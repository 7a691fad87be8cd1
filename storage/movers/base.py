"""The mover interface: how a pilot copies one file in or out, verified.

Every transfer backend (``file``, ``root``, ``s3``, ``gs``, ``davs``) implements
``Mover``; stage-in and stage-out only ever see this interface. ``FsspecMover``
does the work for any fsspec filesystem, so a backend is usually a subclass
that names its protocol. Verification is part of the contract: ``get`` checks
size and adler32 while streaming and never leaves a partial file; ``put``
reports what it sent and checks the size the destination holds.
"""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsspec.core import url_to_fs

from dawms.storage.checksum import CHUNK_SIZE, copy_stream, normalize_adler32

__all__ = ["CHUNK_SIZE", "ChecksumMismatch", "FsspecMover", "Mover", "MoverError",
           "SizeMismatch", "Transfer", "normalize_adler32"]


class MoverError(Exception):
    """A transfer failed; the message names the URL and the reason."""


class SizeMismatch(MoverError):
    """The bytes moved differ from the size expected."""


class ChecksumMismatch(MoverError):
    """The adler32 of the bytes moved differs from the one expected."""


@dataclass(frozen=True)
class Transfer:
    """What one transfer moved: size in bytes, adler32 as 8 lowercase hex chars."""

    size: int
    adler32: str
    seconds: float


class Mover(ABC):
    """Copies files between a local path and URLs of one or more schemes."""

    schemes: tuple[str, ...] = ()

    def __init__(self, **storage_options: Any) -> None:
        """``storage_options``: backend settings (credentials, endpoints) of the queue."""
        self.storage_options = storage_options

    @abstractmethod
    def get(
        self, src_url: str, dst_path: str | os.PathLike[str], *,
        size: int | None = None, adler32: str | None = None,
    ) -> Transfer:
        """Copy ``src_url`` to the local ``dst_path``, verifying size and adler32
        when given; on any failure raise ``MoverError`` and leave no file behind."""

    @abstractmethod
    def put(self, src_path: str | os.PathLike[str], dst_url: str) -> Transfer:
        """Copy the local ``src_path`` to ``dst_url`` (parents created) and
        return what was sent; raise ``MoverError`` on failure."""


class FsspecMover(Mover):
    """A mover over any fsspec filesystem; ``storage_options`` go to fsspec as they are."""

    def _resolve(self, url: str) -> tuple[Any, str]:
        try:
            return url_to_fs(url, **self.storage_options)
        except (ImportError, ValueError) as exc:
            raise MoverError(f"cannot open {url}: {exc}") from exc

    def get(
        self, src_url: str, dst_path: str | os.PathLike[str], *,
        size: int | None = None, adler32: str | None = None,
    ) -> Transfer:
        try:
            expected_sum = normalize_adler32(adler32) if adler32 else None
        except ValueError as exc:
            raise MoverError(f"get {src_url}: {exc}") from exc
        fs, path = self._resolve(src_url)
        dst = Path(dst_path)
        dst.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        try:
            with fs.open(path, "rb") as src, open(dst, "wb") as out:
                got_size, got_sum = copy_stream(src, out)
            if size is not None and got_size != size:
                raise SizeMismatch(f"{src_url}: got {got_size} bytes, expected {size}")
            if expected_sum is not None and got_sum != expected_sum:
                raise ChecksumMismatch(
                    f"{src_url}: adler32 {got_sum}, expected {expected_sum}")
        except BaseException as exc:
            dst.unlink(missing_ok=True)  # never leave a partial or unverified file
            if isinstance(exc, Exception) and not isinstance(exc, MoverError):
                raise MoverError(f"get {src_url}: {type(exc).__name__}: {exc}") from exc
            raise
        return Transfer(got_size, got_sum, time.monotonic() - start)

    def put(self, src_path: str | os.PathLike[str], dst_url: str) -> Transfer:
        fs, path = self._resolve(dst_url)
        start = time.monotonic()
        try:
            parent = fs._parent(path)
            if parent and parent != path:
                fs.makedirs(parent, exist_ok=True)
            # Streaming through open() works on every backend; some lack put_file.
            with open(src_path, "rb") as src, fs.open(path, "wb") as out:
                sent_size, sent_sum = copy_stream(src, out)
            stored = fs.size(path)
        except Exception as exc:
            raise MoverError(f"put {src_path} -> {dst_url}: {type(exc).__name__}: {exc}") from exc
        if stored != sent_size:
            raise SizeMismatch(f"{dst_url}: destination holds {stored} bytes, sent {sent_size}")
        return Transfer(sent_size, sent_sum, time.monotonic() - start)
