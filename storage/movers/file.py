"""The ``file://`` mover: local or shared (NFS, CephFS, Lustre) POSIX storage.

The embedded DDM keeps each site's storage as a directory, so this is the mover
every dawms installation has. It is ``FsspecMover`` over fsspec's local
filesystem; it exists as its own module so that each scheme is one small,
separately importable backend.
"""

from __future__ import annotations

from dawms.storage.movers.base import FsspecMover


class FileMover(FsspecMover):
    """Copies to and from ``file://`` URLs (and bare absolute paths)."""

    schemes = ("file",)
