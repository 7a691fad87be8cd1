"""The ``root://`` mover: XRootD storage (EOS, dCache, XrdCeph...) through fsspec-xrootd.

fsspec-xrootd has no ``put_file``, so a put streams through ``open(p, "wb")``
(the generic ``FsspecMover.upload``). XRootD servers compute checksums
themselves (``xrootd.chksum adler32``): after every copy the mover asks the
server for the file's adler32 (``xrdfs query checksum``) and compares it with
the adler32 of the bytes that moved, the same end-to-end check as
``xrdcp --cksum adler32``. A get reads 8 MiB ranges, four in flight, as xrdcp
does. Storage options go to ``XRootDFileSystem``; the
client timeout (``timeout``, seconds) defaults to 60 so a hung server fails
the attempt instead of the pilot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec_xrootd  # noqa: F401  (a missing client library fails here, at import)
from fsspec.core import url_to_fs
from XRootD import client
from XRootD.client.flags import OpenFlags

from dawms.storage.checksum import Digests, normalize_adler32
from dawms.storage.movers.base import FsspecMover

DEFAULT_TIMEOUT_S = 60


def _status_error(status: Any, path: str) -> OSError:
    """An XRootD status as an OSError; the ones no retry can cure as their subclass."""
    if status.errno == 3011:  # kXR_NotFound
        return FileNotFoundError(f"{path}: {status.message}")
    if status.errno == 3010:  # kXR_NotAuthorized
        return PermissionError(f"{path}: {status.message}")
    return OSError(f"XRootD error: {status.message}")


class XRootDMover(FsspecMover):
    """Copies to and from ``root://host[:port]//path`` URLs."""

    schemes = ("root",)
    #: reads in flight during a get, like xrdcp's XRD_CPPARALLELCHUNKS
    read_parallelism = 4
    native_copy = False  # fsspec-xrootd has no put_file; gets read ranges (above)
    block_size = 8 * 1024 * 1024

    def fs_for(self, url: str) -> tuple[Any, str]:
        options = {"timeout": DEFAULT_TIMEOUT_S, **self.storage_options}
        return url_to_fs(url, **options)

    @contextlib.contextmanager
    def range_reader(self, fs: Any, path: str
                     ) -> Iterator[tuple[int, Callable[[int, int], bytes]]]:
        # One XRootD file handle for all ranges, closed at the end: fsspec-xrootd's
        # cat_file keeps handles open in a cache, and a file open for reading on the
        # server cannot be replaced ("already opened by 1 reader").
        timeout = int(fs.timeout)
        handle = client.File()
        status, _ = handle.open(fs.unstrip_protocol(path), OpenFlags.READ, timeout=timeout)
        if not status.ok:
            raise _status_error(status, path)
        try:
            status, stat = handle.stat(timeout=timeout)
            if not status.ok:
                raise _status_error(status, path)

            def read(offset: int, n: int) -> bytes:
                status, data = handle.read(offset, n, timeout=timeout)
                if not status.ok:
                    raise _status_error(status, path)
                return bytes(data)

            yield int(stat.size), read
        finally:
            handle.close(timeout=timeout)

    def upload(self, src: Path, fs: Any, path: str, digests: Digests, deadline: float) -> None:
        # Replace, never write over: opening an existing file for writing keeps the
        # checksum the server cached for it (an xattr keyed by mtime, which a rewrite
        # within the same second leaves unchanged).
        if fs.exists(path):
            fs.rm_file(path)
        super().upload(src, fs, path, digests, deadline)

    def server_checksums(self, fs: Any, path: str) -> dict[str, str]:
        algorithm, value = fs.checksum(path)
        if algorithm != "adler32":
            return {}
        return {"adler32": normalize_adler32(value)}
