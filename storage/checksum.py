"""Size and adler32 of a byte stream: what Rucio and PanDA verify on every copy.

The one place dawms computes checksums. The pilot's movers, the local DDM's
transfer worker and upload, and the demo's output check all stream through
``copy_stream``, so a file is read once and verified as it moves.
"""

from __future__ import annotations

import os
import zlib
from typing import BinaryIO

CHUNK_SIZE = 4 * 1024 * 1024


def format_adler32(value: int) -> str:
    """The canonical text form of an adler32 value: 8 lowercase hex digits."""
    return f"{value & 0xFFFFFFFF:08x}"


def bytes_adler32(data: bytes) -> str:
    """The adler32 of bytes in memory, in canonical form."""
    return format_adler32(zlib.adler32(data))


def normalize_adler32(text: str) -> str:
    """Accept ``0A1B2C3D``, ``ad:a1b2c3d`` or ``a1b2c3d`` and return ``0a1b2c3d``."""
    value = text.strip().lower().removeprefix("ad:")
    if not value or len(value) > 8 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"not an adler32 checksum: {text!r}")
    return value.zfill(8)


def is_adler32(text: str) -> bool:
    """Whether ``text`` is already in canonical form (8 lowercase hex digits)."""
    return len(text) == 8 and all(c in "0123456789abcdef" for c in text)


def copy_stream(src: BinaryIO, dst: BinaryIO | None = None) -> tuple[int, str]:
    """Read ``src`` to the end in 4 MiB chunks, writing to ``dst`` if given;
    returns (size, adler32)."""
    size, value = 0, 1
    while chunk := src.read(CHUNK_SIZE):
        size += len(chunk)
        value = zlib.adler32(chunk, value)
        if dst is not None:
            dst.write(chunk)
    return size, format_adler32(value)


def file_adler32(path: str | os.PathLike[str]) -> tuple[int, str]:
    """(size, adler32) of a local file."""
    with open(path, "rb") as f:
        return copy_stream(f)


def url_checksum(url: str, **storage_options: object) -> tuple[int, str]:
    """(size, adler32) of the file at ``url`` (any fsspec URL), computed from its bytes."""
    import fsspec

    with fsspec.open(url, "rb", **storage_options) as f:
        return copy_stream(f)
