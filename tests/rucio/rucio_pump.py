"""Run Rucio's own daemons once, in the Rucio server's venv (not the project's).

``python rucio_pump.py [--transfers] [--hermes]``: the judge re-evaluator, then
the conveyor's submitter, poller and finisher with the ``mock`` transfertool
(it copies no bytes: the replica becomes AVAILABLE in Rucio, the test places
the bytes itself), then hermes, which delivers the queued messages to the
services of ``[hermes] services_list`` (elastic -> our HTTP endpoint, activemq
-> STOMP). ``RUCIO_CONFIG`` says which server database and which endpoints.
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
    if "--hermes" in argv:
        from rucio.daemons.hermes.hermes import hermes

        hermes(once=True)
    print(f"pump done in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
