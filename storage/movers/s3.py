"""The ``s3://`` mover: S3 object stores (AWS, Ceph RGW, MinIO, SeaweedFS) through s3fs.

Storage options go to ``s3fs.S3FileSystem`` (``endpoint_url``, ``key``,
``secret``, ``anon``, ...). botocore adds a CRC32 checksum to every upload
request, which the server checks on arrival (S3 "additional checksums"); after
a copy the mover asks the server for the object's full-object CRC32
(``HeadObject`` with ``ChecksumMode=ENABLED``) and compares it with the CRC32
of the bytes that moved. Objects without one (uploaded by old clients, or in
parts with a composite checksum) are verified by size and adler32 alone.
Connect and read timeouts default to 30 and 60 s.
"""

from __future__ import annotations

from typing import Any

import s3fs  # noqa: F401  (a missing client library fails here, at import)
from fsspec.core import url_to_fs

from dawms.storage.checksum import b64_to_hex
from dawms.storage.movers.base import FsspecMover

DEFAULT_CONFIG = {"connect_timeout": 30, "read_timeout": 60}
MIN_PART = 5 * 1024 * 1024  # S3's smallest multipart part


class S3Mover(FsspecMover):
    """Copies to and from ``s3://bucket/key`` URLs."""

    schemes = ("s3",)
    server_algorithms = ("crc32",)

    def fs_for(self, url: str) -> tuple[Any, str]:
        options = dict(self.storage_options)
        options["config_kwargs"] = {**DEFAULT_CONFIG, **(options.get("config_kwargs") or {})}
        return url_to_fs(url, **options)

    def open_block_size(self) -> int:
        return max(MIN_PART, self.block_size)

    def server_checksums(self, fs: Any, path: str) -> dict[str, str]:
        bucket, key, _ = fs.split_path(path)
        head = fs.call_s3("head_object", Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        value = head.get("ChecksumCRC32")
        if not value or "-" in value or head.get("ChecksumType") == "COMPOSITE":
            return {}
        return {"crc32": b64_to_hex(value)}
