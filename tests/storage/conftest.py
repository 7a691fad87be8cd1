"""Session-scoped real storage servers for the mover suite (see servers.py).

A server whose program is missing skips its tests with the reason (on a
laptop); ``make test`` installs them all and sets ``DAWMS_NO_SKIP=1``, under
which a skip is a failure.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from servers import SERVERS, FaultProxy, MotoServer, Server, ServerMissing


def _serve(kind: str) -> Iterator[Server]:
    server = SERVERS[kind]()
    try:
        server.start()
    except ServerMissing as exc:
        server.stop()
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def xrootd_server() -> Iterator[Server]:
    yield from _serve("root")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Server]:
    yield from _serve("s3")


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[Server]:
    yield from _serve("gs")


@pytest.fixture(scope="session")
def webdav_server() -> Iterator[Server]:
    yield from _serve("davs")


@pytest.fixture
def s3_faults(moto_server: MotoServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(moto_server.port)
    yield proxy
    proxy.close()
