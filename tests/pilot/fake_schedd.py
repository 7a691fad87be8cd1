"""A fake HTCondor Schedd at the ``htcondor2`` bindings' seam (no HTCondor daemons run here).

It takes what ``HTCondorFactory`` gives the real ``Schedd`` -- an ``htcondor2.Submit``
description -- and runs each job the way a vanilla-universe starter would: the
executable with the *parsed* arguments and *only* the given environment, in its
initialdir, output and error to the named files. So the backend's quoting and its
explicit environment are tested for what they do, not for how they look.
``query``/``history`` filter with real ClassAd constraints (``classad2``); ``act``
(Remove) marks the job removed (JobStatus 3) and SIGTERMs it; it leaves the queue
for the history once its process is gone, as in HTCondor.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass, field
from typing import Any

import classad2
import htcondor2


def parse_quoted(value: str) -> list[str]:
    """HTCondor's new argument syntax (what ``condor_submit`` accepts) into words."""
    assert value.startswith('"') and value.endswith('"'), value
    text = value[1:-1].replace('""', '"')
    words: list[str] = []
    i, current, in_word = 0, "", False
    while i < len(text):
        c = text[i]
        if c == "'":
            end = i + 1
            while True:
                end = text.index("'", end)
                if text[end:end + 2] == "''":
                    end += 2
                    continue
                break
            current += text[i + 1:end].replace("''", "'")
            in_word, i = True, end + 1
        elif c.isspace():
            if in_word:
                words.append(current)
            current, in_word, i = "", False, i + 1
        else:
            current, in_word, i = current + c, True, i + 1
    if in_word:
        words.append(current)
    return words


@dataclass
class FakeJob:
    proc: subprocess.Popen[bytes]
    ad: dict[str, Any]
    removed: bool = False


@dataclass
class FakeResult:
    cluster_id: int

    def cluster(self) -> int:
        return self.cluster_id


@dataclass
class FakeSchedd:
    queue: dict[str, FakeJob] = field(default_factory=dict)
    past: list[dict[str, Any]] = field(default_factory=list)
    descriptions: list[dict[str, str]] = field(default_factory=list)
    next_cluster: int = 1

    def submit(self, description: htcondor2.Submit, count: int = 0, **_: Any) -> FakeResult:
        d = dict(description)
        self.descriptions.append(d)
        assert d.get("universe") == "vanilla" and count == 1
        assert "getenv" not in d, "getenv would copy the submitter's environment"
        argv = [d["executable"], *parse_quoted(d["arguments"])]
        env = dict(w.split("=", 1) for w in parse_quoted(d["environment"]))
        cluster, self.next_cluster = self.next_cluster, self.next_cluster + 1
        with open(d["output"], "ab") as out:
            proc = subprocess.Popen(argv, cwd=d["initialdir"], env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.queue[f"{cluster}.0"] = FakeJob(proc, {"ClusterId": cluster, "ProcId": 0,
                                                    "JobStatus": 2})
        return FakeResult(cluster)

    def _refresh(self) -> None:
        for job_id, job in list(self.queue.items()):
            code = job.proc.poll()
            if code is not None:
                del self.queue[job_id]
                self.past.append({**job.ad, "JobStatus": 3 if job.removed else 4,
                                  "ExitCode": max(code, 0), "ExitBySignal": code < 0})

    @staticmethod
    def _match(ads: list[dict[str, Any]], constraint: Any, projection: list[str]
               ) -> list[classad2.ClassAd]:
        expr = classad2.ExprTree(str(constraint or "True"))
        out = [classad2.ClassAd(ad) for ad in ads]
        out = [ad for ad in out if expr.eval(ad) is True]
        return [classad2.ClassAd({k: ad[k] for k in projection if k in ad}) if projection else ad
                for ad in out]

    def query(self, constraint: Any = "True", projection: list[str] | None = None,
              **_: Any) -> list[classad2.ClassAd]:
        self._refresh()
        return self._match([j.ad for j in self.queue.values()], constraint, projection or [])

    def history(self, constraint: Any = None, projection: list[str] | None = None,
                match: int = -1, **_: Any) -> list[classad2.ClassAd]:
        self._refresh()
        found = self._match(list(reversed(self.past)), constraint, projection or [])
        return found if match < 0 else found[:match]

    def act(self, action: htcondor2.JobAction, job_spec: list[str], reason: str | None = None
            ) -> None:
        assert action == htcondor2.JobAction.Remove
        for job_id in job_spec:
            job = self.queue.get(job_id)
            if job is not None:
                job.removed, job.ad["JobStatus"] = True, 3
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(job.proc.pid, signal.SIGTERM)

    def kill_all(self) -> None:
        for job in self.queue.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.proc.pid, signal.SIGKILL)
            job.proc.wait()
