"""Splitting a task's input files into jobs (JEDI's split rules, the ones dawms has).

Pure: takes the ordered input files and the rule, returns chunks. A job takes
files until ``files_per_job`` is reached or adding the next file would pass
``gb_per_job`` (a single file larger than the cap still makes one job).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar


class Sized(Protocol):
    size: int


F = TypeVar("F", bound=Sized)


def split_files(files: Sequence[F], rule: dict[str, Any]) -> list[list[F]]:
    max_files = int(rule.get("files_per_job") or 0) or None
    max_bytes = int(float(rule["gb_per_job"]) * 1e9) if rule.get("gb_per_job") else None
    if max_files is None and max_bytes is None:
        raise ValueError("a split rule needs files_per_job or gb_per_job")
    if (max_files is not None and max_files < 1) or (max_bytes is not None and max_bytes <= 0):
        raise ValueError(f"split rule {rule} must be positive")
    chunks: list[list[F]] = []
    current: list[F] = []
    current_bytes = 0
    for f in files:
        full = (max_files is not None and len(current) >= max_files) or (
            max_bytes is not None and current and current_bytes + f.size > max_bytes)
        if full:
            chunks.append(current)
            current, current_bytes = [], 0
        current.append(f)
        current_bytes += f.size
    if current:
        chunks.append(current)
    return chunks
