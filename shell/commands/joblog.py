"""``dawms job log ID``: the tail of a job's stdout and stderr, read from its log
tarball, which the server fetches from the endpoint holding it; ``--full`` saves
the tarball itself. The tarball is read in memory, member by member (never
extracted to disk), and only regular members named as the pilot names them are
shown, so a log cannot write anywhere."""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
from pathlib import Path

from dawms.pilot.log import PILOT_LOG_NAME
from dawms.pilot.payload import STDERR_NAME, STDOUT_NAME

from ..settings import Settings
from ._common import Groups, client, print_json

MAX_MEMBER_TAIL = 4 * 1024 * 1024  # bytes read from the end of each member
STREAMS = {"stdout": STDOUT_NAME, "stderr": STDERR_NAME, "pilot": PILOT_LOG_NAME}


def tails(tarball: Path, names: list[str], lines: int) -> dict[str, list[str]]:
    """The last ``lines`` lines of each of ``names`` (members anywhere in the tarball)."""
    out: dict[str, list[str]] = {}
    with tarfile.open(tarball, mode="r:gz") as tar:
        for member in tar.getmembers():
            base = member.name.rsplit("/", 1)[-1]
            if base not in names or not member.isreg() or base in out:
                continue
            f = tar.extractfile(member)
            if f is None:
                continue
            if member.size > MAX_MEMBER_TAIL:
                f.seek(member.size - MAX_MEMBER_TAIL)
            text = f.read(MAX_MEMBER_TAIL).decode("utf-8", errors="replace")
            out[base] = text.splitlines()[-lines:] if lines else []
    return out


def cmd_job_log(args: argparse.Namespace, st: Settings) -> int:
    with client(args) as c:
        if args.full is not None:
            dest = Path(args.full)
            if dest.is_dir():
                dest = dest / f"job-{args.id}.log.tgz"
            c.job_log(args.id, dest)
            print(dest) if not args.json else print_json({"job_id": args.id,
                                                           "path": str(dest)})
            return 0
        with tempfile.TemporaryDirectory(prefix="dawms-log-") as tmp:
            tarball = c.job_log(args.id, Path(tmp) / "log.tgz")
            try:
                found = tails(tarball, [STREAMS[s] for s in args.stream], args.lines)
            except (tarfile.TarError, OSError, EOFError) as exc:
                print(f"error: the log of job {args.id} is not a readable tarball: {exc}",
                      file=sys.stderr)
                return 1
    if args.json:
        print_json({"job_id": args.id, "lines": args.lines,
                    **{s: found.get(STREAMS[s]) for s in args.stream}})
        return 0
    for s in args.stream:
        got = found.get(STREAMS[s])
        print(f"==> job {args.id} {STREAMS[s]}"
              + (" (not in the log)" if got is None else f" (last {len(got)} lines)") + " <==")
        for line in got or ():
            print(line)
    return 0


def _lines(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= n <= 100000:
        raise argparse.ArgumentTypeError("must be from 0 to 100000")
    return n


def register(groups: Groups) -> None:
    jl = groups("job", "jobs").add_parser(
        "log", help="the tail of a job's stdout and stderr (from its log tarball)")
    jl.add_argument("id", type=int)
    jl.add_argument("-n", "--lines", type=_lines, default=20, help="lines of each (20)")
    jl.add_argument("--stream", nargs="+", choices=list(STREAMS), default=["stdout", "stderr"],
                    help="which to show (stdout stderr)")
    jl.add_argument("--full", nargs="?", const=".", metavar="PATH",
                    help="save the whole log tarball to PATH (a directory: job-ID.log.tgz "
                         "in it; default the current directory)")
    jl.add_argument("--json", action="store_true")
    jl.set_defaults(fn=cmd_job_log)
