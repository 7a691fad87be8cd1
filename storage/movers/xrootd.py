"""The ``root://`` mover: XRootD storage (EOS, dCache, XrdCeph...) through fsspec-xrootd.

fsspec-xrootd has no ``put_file``, so a put streams through ``open(p, "wb")``
(the generic ``FsspecMover.upload``). XRootD servers compute checksums
themselves (``xrootd.chksum adler32``): after every copy the mover asks the
server for the file's adler32 (``xrdfs query checksum``) and compares it with
the adler32 of the bytes that moved, the same end-to-end check as
``xrdcp --cksum adler32``. Storage options go to ``XRootDFileSystem``; the
client timeout (``timeout``, seconds) defaults to 60 so a hung server fails
the attempt instead of the pilot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsspec_xrootd  # noqa: F401  (a missing client library fails here, at import)
from fsspec.core import url_to_fs

from dawms.storage.checksum import Digests, normalize_adler32
from dawms.storage.movers.base import FsspecMover

DEFAULT_TIMEOUT_S = 60
#: XRootD status codes that no retry can cure: kXR_NotAuthorized, kXR_NotFound, kXR_isDirectory
PERMANENT_CODES = ("[3010]", "[3011]", "[3016]")


class XRootDMover(FsspecMover):
    """Copies to and from ``root://host[:port]//path`` URLs."""

    schemes = ("root",)

    def fs_for(self, url: str) -> tuple[Any, str]:
        options = {"timeout": DEFAULT_TIMEOUT_S, **self.storage_options}
        return url_to_fs(url, **options)

    def is_retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, OSError) and any(code in str(exc) for code in PERMANENT_CODES):
            return False
        return super().is_retryable(exc)

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
