"""The ``davs://`` / ``https://`` mover: WebDAV storage (dCache, EOS, StoRM,
XrdHttp, nginx) through webdav4's fsspec filesystem.

fsspec knows no ``dav``/``davs`` protocol: a URL ``davs://host:port/path`` is
served by ``WebdavFileSystem(base_url="https://host:port")`` at ``/path``
(``dav://`` and ``http://`` use plain HTTP). Storage options go to the
webdav4 client and through it to httpx: ``verify`` (a CA bundle path or
false), ``cert``, ``auth`` (``[user, password]``), ``headers`` (e.g. a
bearer token), ``timeout`` (default 60 s). Where the server answers RFC 3230
``Want-Digest: adler32`` (dCache, XrdHttp), its adler32 is compared with the
bytes that moved.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import unquote, urlsplit

from webdav4.fsspec import WebdavFileSystem

from dawms.storage.checksum import normalize_adler32
from dawms.storage.movers.base import FsspecMover

_HTTP_SCHEME = {"davs": "https", "https": "https", "dav": "http", "http": "http"}
DEFAULT_TIMEOUT_S = 60.0


def parse_digest_header(value: str) -> dict[str, str]:
    """``adler32=0a1b2c3d, md5=...`` (RFC 3230 ``Digest``) -> {"adler32": "0a1b2c3d"}."""
    out = {}
    for part in value.split(","):
        algo, _, digest = part.strip().partition("=")
        if algo.strip().lower() == "adler32" and digest:
            try:
                out["adler32"] = normalize_adler32(digest.strip())
            except ValueError:
                continue
    return out


class WebDAVMover(FsspecMover):
    """Copies to and from ``davs://host[:port]/path`` (and https, dav, http) URLs."""

    schemes = ("davs", "https", "dav", "http")

    def fs_for(self, url: str) -> tuple[Any, str]:
        parts = urlsplit(url)
        scheme = _HTTP_SCHEME.get(parts.scheme.lower())
        if scheme is None or not parts.netloc:
            raise ValueError(f"not a WebDAV URL: {url}")
        options = {"timeout": DEFAULT_TIMEOUT_S, **self.storage_options}
        if isinstance(options.get("auth"), list):
            options["auth"] = tuple(options["auth"])
        if isinstance(options.get("verify"), str):  # a CA bundle (httpx wants a context)
            options["verify"] = ssl.create_default_context(cafile=options["verify"])
        fs = WebdavFileSystem(f"{scheme}://{parts.netloc}", **options)
        return fs, unquote(parts.path).lstrip("/")

    def server_checksums(self, fs: Any, path: str) -> dict[str, str]:
        reply = fs.client.http.head(fs.client.join_url(path),
                                    headers={"Want-Digest": "adler32"})
        if reply.status_code >= 400:
            return {}
        return parse_digest_header(reply.headers.get("Digest", ""))
