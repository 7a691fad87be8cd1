"""Memory and CPU of a payload's whole process tree, sampled like prmon.

ATLAS' prmon reads ``/proc`` of every process below the payload at an interval
and keeps the maxima; the pilot compares them with the job's limits. This
module does the same through psutil: at each ``sample()`` it walks the tree
(the root and all its descendants) and sums resident memory (RSS) and, where
the kernel gives it, proportional memory (PSS, from ``smaps_rollup``: shared
pages split among the processes sharing them, the fair measure for a tree of
forks). CPU time is user + system of the live processes plus what their reaped
children used (``children_user``/``children_system``), so a tree of short-lived
processes is counted as well as one long one; the maxima are kept. A process
that vanishes while being read is simply skipped.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Sample:
    """One reading of the tree."""

    rss_kb: int
    pss_kb: int  # 0 where the kernel has no PSS
    cpu_s: float
    n_procs: int


class TreeMonitor:
    """Samples the process tree under ``pid`` and keeps the maxima."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.max_rss_kb = 0
        self.max_pss_kb = 0
        self.max_procs = 0
        self.cpu_s = 0.0
        self.samples = 0
        self.last: Sample | None = None
        try:
            self._root: psutil.Process | None = psutil.Process(pid)
        except psutil.Error:
            self._root = None
        self._pss_ok = True  # cleared once the kernel says it has no PSS for us

    def sample(self) -> Sample | None:
        """Read the tree now; None once the payload is gone."""
        if self._root is None:
            return None
        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return None
        rss = pss = 0
        cpu = 0.0
        alive = 0
        for proc in procs:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    mem = self._memory(proc)
            except psutil.Error:
                continue
            alive += 1
            cpu += times.user + times.system + times.children_user + times.children_system
            rss += mem[0]
            pss += mem[1]
        if alive == 0:
            return None
        sample = Sample(rss_kb=rss // 1024, pss_kb=pss // 1024, cpu_s=cpu, n_procs=alive)
        self.max_rss_kb = max(self.max_rss_kb, sample.rss_kb)
        self.max_pss_kb = max(self.max_pss_kb, sample.pss_kb)
        self.max_procs = max(self.max_procs, alive)
        self.cpu_s = max(self.cpu_s, cpu)
        self.samples += 1
        self.last = sample
        return sample

    def _memory(self, proc: psutil.Process) -> tuple[int, int]:
        """(rss, pss) in bytes; pss 0 where it cannot be read."""
        if self._pss_ok:
            try:
                full = proc.memory_full_info()
                return full.rss, getattr(full, "pss", 0)
            except (psutil.AccessDenied, AttributeError, NotImplementedError):
                self._pss_ok = False
        return proc.memory_info().rss, 0


def file_size(path: os.PathLike[str] | str) -> int:
    """The size of a file (0 if it is not there), for the bounded stdout/stderr."""
    with contextlib.suppress(OSError):
        return os.stat(path, follow_symlinks=False).st_size
    return 0
