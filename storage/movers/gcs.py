"""The ``gs://`` mover: Google Cloud Storage (and its emulators) through gcsfs.

``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` is set to ``false`` before gcsfs is
imported (unless the operator set it): otherwise every bucket operation first
probes the bucket type and, against an emulator or a private endpoint, hangs
60 s. Storage options go to ``gcsfs.GCSFileSystem`` (``endpoint_url``,
``token``, ``project``, ...). GCS keeps a CRC32C and, for non-composite
objects, an MD5 of every object: the mover computes the CRC32C (with
google-crc32c; the MD5 where that is not installed) and compares it with the
server's after every get and put.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import gcsfs  # noqa: E402,F401  (a missing client library fails here, at import)
from fsspec.core import url_to_fs  # noqa: E402

from dawms.storage.checksum import b64_to_hex, crc32c_available  # noqa: E402
from dawms.storage.movers.base import FsspecMover  # noqa: E402

MIN_BLOCK = 2**18  # gcsfs's smallest block


class GCSMover(FsspecMover):
    """Copies to and from ``gs://bucket/object`` URLs."""

    schemes = ("gs",)
    # crc32c runs at GB/s (google-crc32c, hardware); md5 at 0.2-0.6 GB/s on a loaded
    # core, so it is computed only where crc32c cannot be
    server_algorithms = ("crc32c",) if crc32c_available() else ("md5",)

    def open_block_size(self) -> int:
        return max(MIN_BLOCK, self.block_size)

    def fs_for(self, url: str) -> tuple[Any, str]:
        return url_to_fs(url, **self.storage_options)

    def server_checksums(self, fs: Any, path: str) -> dict[str, str]:
        fs.invalidate_cache(path)
        info = fs.info(path)
        out = {}
        if info.get("crc32c"):
            out["crc32c"] = b64_to_hex(info["crc32c"])
        if info.get("md5Hash"):
            out["md5"] = b64_to_hex(info["md5Hash"])
        return out
