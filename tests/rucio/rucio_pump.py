"""Run Rucio's own daemons once, in the Rucio server's venv (not the project's).

``python rucio_pump.py [--transfers] [--cleaner] [--hermes SERVICE]``: the judge
re-evaluator, then the conveyor's submitter, poller and finisher with the
``mock`` transfertool (it copies no bytes: the replica becomes AVAILABLE in
Rucio, the test places the bytes itself), the judge's cleaner (expired rules
go, with their locks), then hermes for one service of
``[hermes] services_list`` (``elastic`` -> our HTTP endpoint, ``activemq`` ->
STOMP), run until that service's queue is empty: hermes takes the oldest 1,000
messages a run, and messages of earlier tests may be queued before ours.
``RUCIO_CONFIG`` says which server database and which endpoints.
"""

from __future__ import annotations

import sys
import time


def main(argv: list[str]) -> int:
    t0 = time.monotonic()
    if "--transfers" in argv:
        from rucio.daemons.conveyor.finisher import finisher
        from rucio.daemons.conveyor.poller import poller
        from rucio.daemons.conveyor.submitter import submitter
        from rucio.daemons.judge.evaluator import re_evaluator

        re_evaluator(once=True)
        submitter(once=True, partition_wait_time=0, transfertools=["mock"])
        poller(once=True, older_than=0, partition_wait_time=0, transfertool="mock")
        finisher(once=True, partition_wait_time=0)
    if "--cleaner" in argv:
        from rucio.daemons.judge.cleaner import rule_cleaner

        rule_cleaner(once=True)
    if "--hermes" in argv:
        from rucio.core.message import retrieve_messages
        from rucio.daemons.hermes.hermes import hermes

        service = argv[argv.index("--hermes") + 1]
        for _ in range(50):
            hermes(once=True)
            if not retrieve_messages(bulk=1, old_mode=False, service_filter=service):
                break
        else:
            print(f"hermes left {service} messages undelivered", file=sys.stderr)
            return 1
    print(f"pump done in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
