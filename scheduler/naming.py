"""Names of jobs and their output files, PanDA style, in one place."""

from __future__ import annotations

from dawms.catalog.names import split_did


def job_name(task_name: str, task_id: int, index: int) -> str:
    return f"{task_name}.{task_id}._{index:06d}"


def output_lfn(dataset: str, index: int, attempt: int) -> str:
    """``<dataset name>._<index>.<attempt>``: unique per attempt, so a retry never
    overwrites what a late pilot of an earlier attempt may still be writing."""
    return f"{split_did(dataset)[1]}._{index:06d}.{attempt}"


def log_lfn(dataset: str, index: int, attempt: int) -> str:
    return f"{split_did(dataset)[1]}._{index:06d}.{attempt}.log.tgz"
