"""Streaming size and adler32 of anything fsspec can open (what Rucio and PanDA verify)."""

from __future__ import annotations

import zlib
from typing import BinaryIO

import fsspec

CHUNK = 4 * 1024 * 1024


def format_adler32(value: int) -> str:
    return f"{value & 0xFFFFFFFF:08x}"


def stream_copy(src: BinaryIO, dst: BinaryIO | None = None) -> tuple[int, str]:
    """Read ``src`` to the end (writing to ``dst`` if given); returns (size, adler32)."""
    size, value = 0, 1
    while chunk := src.read(CHUNK):
        size += len(chunk)
        value = zlib.adler32(chunk, value)
        if dst is not None:
            dst.write(chunk)
    return size, format_adler32(value)


def url_checksum(url: str) -> tuple[int, str]:
    """(size, adler32) of the file at ``url``, computed from its bytes."""
    with fsspec.open(url, "rb") as f:
        return stream_copy(f)
