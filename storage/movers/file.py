"""The ``file://`` mover: local or shared (NFS, CephFS, Lustre) POSIX storage.

The embedded DDM keeps each site's storage as a directory, so this is the mover
every dawms installation has. It is ``FsspecMover`` over fsspec's local
filesystem with a fast path: large reads and writes through two alternating
buffers while a second thread computes adler32 of each block
(``copy_local_file``), so a verified copy runs at close to ``cp`` speed. A
put writes a hidden temporary file and renames it into place, so readers never
see a partial file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dawms.storage.checksum import Digests, copy_local_file
from dawms.storage.movers.base import FsspecMover, TransferTimeout, _part_path


class FileMover(FsspecMover):
    """Copies to and from ``file://`` URLs (and bare absolute paths)."""

    schemes = ("file",)

    def download(self, fs: Any, path: str, tmp: Path, digests: Digests,
                 deadline: float) -> None:
        try:
            copy_local_file(path, tmp, digests=digests, deadline=deadline)
        except TimeoutError as exc:
            raise TransferTimeout(str(exc)) from exc

    def upload(self, src: Path, fs: Any, path: str, digests: Digests, deadline: float) -> None:
        dst = Path(path)
        tmp = _part_path(dst)
        try:
            copy_local_file(src, tmp, digests=digests, deadline=deadline)
            os.replace(tmp, dst)
        except TimeoutError as exc:
            tmp.unlink(missing_ok=True)
            raise TransferTimeout(str(exc)) from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
