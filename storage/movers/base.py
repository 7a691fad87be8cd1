"""The mover interface: how a pilot copies one file in or out, verified.

Every transfer backend (``file``, ``root``, ``s3``, ``gs``, ``davs``) implements
``Mover``; stage-in and stage-out only ever see this interface. ``FsspecMover``
does the work for any fsspec filesystem, so a backend is usually a subclass
that names its protocol, maps its storage options and says which checksum the
server itself can give.

Verification is part of the contract. ``get`` streams into a hidden temporary
file next to the destination, computes adler32 (and the server's own digest
algorithm) of the bytes that landed, checks them against the expected size
and adler32 and against the server's checksum, and only then renames the file
into place: a failed get never leaves a file behind. ``put`` computes what it
sends, then checks the size (and, where the server has one, the checksum) the
destination holds, and removes what it wrote when that check fails.

Every attempt has a deadline (``MoverSettings``: a fixed part plus the size at
a minimum rate, as pilot3 does); transient failures (connection errors, 5xx,
truncated streams) are retried with exponential backoff; permanent ones
(missing file, no permission, a wrong checksum) fail at once so the pilot can
try the next replica. Every error is a ``MoverError`` naming the URL and reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import ssl
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from fsspec.callbacks import Callback
from fsspec.core import url_to_fs

from dawms.storage.checksum import (
    CHUNK_SIZE,
    Digests,
    FollowingHasher,
    copy_stream,
    hash_file,
    normalize_adler32,
)

__all__ = ["CHUNK_SIZE", "ChecksumMismatch", "FsspecMover", "Mover", "MoverError",
           "MoverSettings", "SizeMismatch", "Transfer", "TransferTimeout", "copy_stream",
           "normalize_adler32"]

log = logging.getLogger(__name__)


class MoverError(Exception):
    """A transfer failed; the message names the URL and the reason.

    ``retryable`` says whether the same copy may work if tried again (a broken
    connection) or not (a missing file, a bad checksum: try another replica).
    """

    retryable = False

    def __init__(self, message: str, *, url: str | None = None,
                 retryable: bool | None = None) -> None:
        super().__init__(message)
        self.url = url
        if retryable is not None:
            self.retryable = retryable


class SizeMismatch(MoverError):
    """The bytes moved differ from the size expected."""


class ChecksumMismatch(MoverError):
    """The adler32 (or the server's own checksum) of the bytes moved differs."""


class TruncatedTransfer(SizeMismatch):
    """The stream ended before the size the server itself reports: worth a retry."""

    retryable = True


class TransferTimeout(MoverError):
    """One attempt ran past its per-file deadline."""


@dataclass(frozen=True)
class Transfer:
    """What one transfer moved: size in bytes, adler32 as 8 lowercase hex chars."""

    size: int
    adler32: str
    seconds: float
    attempts: int = 1
    #: the server's own checksums that were compared and agreed, e.g. {"adler32": ...}
    server_checksums: dict[str, str] | None = None


@dataclass(frozen=True)
class MoverSettings:
    """How hard a mover tries: attempts, backoff and the per-file deadline.

    An attempt may take ``timeout_s`` if set, else ``base_timeout_s`` plus the
    file's size at ``min_rate_Bps`` (pilot3: 400 s + size at 1 MB/s).
    """

    attempts: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    timeout_s: float | None = None
    base_timeout_s: float = 400.0
    min_rate_Bps: float = 1_000_000.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.attempts > 100:
            raise ValueError("attempts must be between 1 and 100")
        if self.backoff_s < 0 or self.backoff_max_s < 0:
            raise ValueError("backoff must not be negative")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if self.base_timeout_s <= 0 or self.min_rate_Bps <= 0:
            raise ValueError("base_timeout_s and min_rate_Bps must be positive")

    def timeout_for(self, size: int | None) -> float:
        if self.timeout_s is not None:
            return self.timeout_s
        return self.base_timeout_s + (size or 0) / self.min_rate_Bps

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based), with jitter."""
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
        return delay * (0.5 + random.random() / 2)


class Mover(ABC):
    """Copies files between a local path and URLs of one or more schemes."""

    schemes: tuple[str, ...] = ()

    def __init__(self, *, settings: MoverSettings | None = None, **storage_options: Any) -> None:
        """``storage_options``: backend settings (credentials, endpoints) of the
        endpoint; ``settings``: attempts, backoff and timeouts."""
        self.settings = settings or MoverSettings()
        self.storage_options = storage_options

    @abstractmethod
    def get(
        self, src_url: str, dst_path: str | os.PathLike[str], *,
        size: int | None = None, adler32: str | None = None,
    ) -> Transfer:
        """Copy ``src_url`` to the local ``dst_path``, verifying size and adler32
        when given; on any failure raise ``MoverError`` and leave no file behind."""

    @abstractmethod
    def put(self, src_path: str | os.PathLike[str], dst_url: str) -> Transfer:
        """Copy the local ``src_path`` to ``dst_url`` (parents created) and
        return what was sent; raise ``MoverError`` on failure."""


_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
              FileExistsError, ValueError, TypeError, NotImplementedError)


def _part_path(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.dawms-part-{os.getpid()}")


class FsspecMover(Mover):
    """A mover over any fsspec filesystem; ``storage_options`` go to fsspec as they are.

    Subclasses override ``fs_for`` (map a URL to a filesystem and path),
    ``server_checksums`` (what the server says about a stored file) and
    ``server_algorithms`` (which of those to compute while copying).
    """

    #: digest algorithms the server can confirm, computed alongside adler32
    server_algorithms: tuple[str, ...] = ()
    #: bytes per read from / write to the remote side
    block_size: int = 16 * 1024 * 1024
    #: ranged reads in flight during a get (1: one sequential stream)
    read_parallelism: int = 1
    #: copy with the backend's own get_file/put_file (its concurrency and request
    #: sizes), hashing the local side beside it; else stream through open()
    native_copy: bool = True

    # --- hooks -------------------------------------------------------------

    def fs_for(self, url: str) -> tuple[Any, str]:
        """The fsspec filesystem and the path inside it for ``url``."""
        return url_to_fs(url, **self.storage_options)

    def server_checksums(self, fs: Any, path: str) -> dict[str, str]:
        """The stored file's checksums as the server computes them (lowercase hex,
        adler32/crc32/crc32c 8 digits); empty when the server has none."""
        return {}

    def is_retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, MoverError):
            return exc.retryable
        cause: BaseException | None = exc
        for _ in range(10):  # an untrusted certificate stays untrusted, however deep
            if cause is None:
                break
            if isinstance(cause, ssl.SSLCertVerificationError):
                return False
            cause = cause.__cause__ or cause.__context__
        return not isinstance(exc, _PERMANENT)

    # --- the copies --------------------------------------------------------

    def open_block_size(self) -> int:
        """The block size to open remote files with (some backends have a minimum)."""
        return self.block_size

    def download(self, fs: Any, path: str, tmp: Path, digests: Digests,
                 deadline: float) -> None:
        """Copy ``path`` into the local ``tmp`` and compute the digests of ``tmp``."""
        if self.read_parallelism > 1:
            self.download_ranges(fs, path, tmp, digests, deadline)
            return
        if self.native_copy:
            # the backend may write parts out of order: hash once the file is complete
            # (a page-cache read at several GB/s next to a network transfer)
            fs.get_file(path, os.fspath(tmp), callback=_DeadlineCallback(deadline, path))
            with open(tmp, "rb", buffering=0) as f:
                hash_file(f, digests)
            return
        with fs.open(path, "rb", block_size=self.open_block_size()) as src, \
                open(tmp, "wb", buffering=0) as out:
            hasher = FollowingHasher(tmp, digests)
            hasher.start()
            try:
                while True:
                    _check_deadline(deadline, path)
                    chunk = src.read(self.block_size)
                    if not chunk:
                        break
                    view = memoryview(chunk)
                    while view:
                        view = view[out.write(view):]
                    hasher.advance(len(chunk))
            except BaseException:
                hasher.abort()
                raise
            hasher.finish()

    def download_ranges(self, fs: Any, path: str, tmp: Path, digests: Digests,
                        deadline: float) -> None:
        """Read ``path`` as consecutive ranges, ``read_parallelism`` in flight (as
        xrdcp does), each written at its offset; the hasher follows the prefix
        that is complete, so adler32 is still of the bytes in ``tmp``, in order."""
        with self.range_reader(fs, path) as (total, read_range):
            self._download_ranges(path, tmp, digests, deadline, total, read_range)

    @contextlib.contextmanager
    def range_reader(self, fs: Any, path: str
                     ) -> Iterator[tuple[int, Callable[[int, int], bytes]]]:
        """(size, read(offset, length)) for ``path``; ``read`` is called from several
        threads at once. The default asks fsspec for each range."""
        yield int(fs.size(path)), lambda offset, n: fs.cat_file(path, start=offset,
                                                                   end=offset + n)

    def _download_ranges(self, path: str, tmp: Path, digests: Digests, deadline: float,
                         total: int, read_range: Callable[[int, int], bytes]) -> None:
        chunk = self.block_size
        offsets = iter(range(0, total, chunk))

        def read(fd: int, offset: int) -> int:
            data = read_range(offset, min(chunk, total - offset))
            view = memoryview(data)
            while view:
                done = os.pwrite(fd, view, offset)
                view, offset = view[done:], offset + done
            return len(data)

        with open(tmp, "wb", buffering=0) as out, \
                ThreadPoolExecutor(self.read_parallelism, thread_name_prefix="dawms-read") as pool:
            hasher = FollowingHasher(tmp, digests)
            hasher.start()
            try:
                pending = deque((off, pool.submit(read, out.fileno(), off))
                                for off in islice(offsets, self.read_parallelism))
                while pending:
                    offset, future = pending.popleft()
                    got = future.result()
                    if got != min(chunk, total - offset):
                        raise TruncatedTransfer(f"{path}: {got} bytes at offset {offset}, "
                                                f"expected {min(chunk, total - offset)}")
                    hasher.advance(got)
                    _check_deadline(deadline, path)
                    nxt = next(offsets, None)
                    if nxt is not None:
                        pending.append((nxt, pool.submit(read, out.fileno(), nxt)))
            except BaseException:
                for _, future in pending:
                    future.cancel()
                hasher.abort()
                raise
            hasher.finish()

    def upload(self, src: Path, fs: Any, path: str, digests: Digests, deadline: float) -> None:
        """Copy the local ``src`` to ``path``, hashing it while it is sent."""
        if self.native_copy:
            with ThreadPoolExecutor(1, thread_name_prefix="dawms-hasher") as pool, \
                    open(src, "rb", buffering=0) as fin:
                hashed = pool.submit(hash_file, fin, digests)
                try:
                    fs.put_file(os.fspath(src), path, callback=_DeadlineCallback(deadline, path))
                finally:
                    hashed.result()
            if digests.size != src.stat().st_size:
                raise MoverError(f"{src} changed while it was sent", retryable=True)
            return
        with open(src, "rb", buffering=0) as fin, \
                fs.open(path, "wb", block_size=self.open_block_size()) as out, \
                ThreadPoolExecutor(1, thread_name_prefix="dawms-hasher") as pool:
            while True:
                _check_deadline(deadline, path)
                chunk = fin.read(self.block_size)
                if not chunk:
                    break
                hashed = pool.submit(digests.update, chunk)
                out.write(chunk)
                hashed.result()

    def make_parent(self, fs: Any, path: str) -> None:
        parent = fs._parent(path)
        if parent and parent != path:
            fs.makedirs(parent, exist_ok=True)

    def remove_partial(self, fs: Any, path: str) -> None:
        """Best effort: remove what a failed put left at the destination."""
        with contextlib.suppress(Exception):
            if fs.exists(path):
                fs.rm_file(path)

    # --- the interface -----------------------------------------------------

    def _resolve(self, url: str) -> tuple[Any, str]:
        try:
            return self.fs_for(url)
        except (ImportError, ValueError, TypeError) as exc:
            raise MoverError(f"cannot open {url}: {exc}", url=url) from exc

    def _retrying(self, what: str, url: str, attempt_fn: Any) -> tuple[Any, int]:
        """Run ``attempt_fn`` up to ``settings.attempts`` times; MoverError at the end."""
        attempts = self.settings.attempts
        for attempt in range(1, attempts + 1):
            try:
                return attempt_fn(), attempt
            except Exception as exc:
                retry = self.is_retryable(exc) and attempt < attempts
                if isinstance(exc, MoverError):
                    err = exc
                    if exc.url is None:  # raised below the mover: say which transfer
                        exc.url = url
                        exc.args = (f"{what} {url}: {exc}",)
                else:
                    err = MoverError(f"{what} {url}: {type(exc).__name__}: {exc}", url=url,
                                     retryable=self.is_retryable(exc))
                if not retry:
                    if attempt > 1:
                        err.args = (f"{err.args[0]} (after {attempt} attempts)",)
                    if err is exc:
                        raise
                    raise err from exc
                delay = self.settings.backoff(attempt)
                log.warning("%s %s failed (attempt %d of %d), again in %.1f s: %s",
                            what, url, attempt, attempts, delay, err)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def get(
        self, src_url: str, dst_path: str | os.PathLike[str], *,
        size: int | None = None, adler32: str | None = None,
    ) -> Transfer:
        try:
            expected_sum = normalize_adler32(adler32) if adler32 else None
        except ValueError as exc:
            raise MoverError(f"get {src_url}: {exc}", url=src_url) from exc
        if size is not None and size < 0:
            raise MoverError(f"get {src_url}: negative expected size {size}", url=src_url)
        fs, path = self._resolve(src_url)
        dst = Path(dst_path)
        dst.parent.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()

        def attempt() -> tuple[Digests, dict[str, str]]:
            tmp = _part_path(dst)
            try:
                return self._get_once(fs, path, src_url, tmp, dst, size, expected_sum)
            except BaseException:
                tmp.unlink(missing_ok=True)  # never leave a partial or unverified file
                raise

        (digests, agreed), attempts = self._retrying("get", src_url, attempt)
        return Transfer(digests.size, digests.adler32, time.monotonic() - start, attempts,
                        agreed or None)

    def _get_once(self, fs: Any, path: str, url: str, tmp: Path, dst: Path,
                  size: int | None, expected_sum: str | None
                  ) -> tuple[Digests, dict[str, str]]:
        deadline = time.monotonic() + self.settings.timeout_for(size)
        digests = Digests(self.server_algorithms)
        self.download(fs, path, tmp, digests, deadline)
        if size is not None and digests.size != size:
            stored = _stored_size(fs, path)
            if stored is not None and stored == size and digests.size < size:
                raise TruncatedTransfer(
                    f"{url}: the stream ended after {digests.size} of {size} bytes", url=url)
            raise SizeMismatch(f"{url}: got {digests.size} bytes, expected {size}", url=url)
        if expected_sum is not None and digests.adler32 != expected_sum:
            raise ChecksumMismatch(
                f"{url}: adler32 {digests.adler32}, expected {expected_sum}", url=url)
        agreed = self._compare_server(fs, path, url, digests)
        os.replace(tmp, dst)
        return digests, agreed

    def _compare_server(self, fs: Any, path: str, url: str, digests: Digests) -> dict[str, str]:
        """Check our digests against the server's own; returns those that agreed."""
        try:
            theirs = self.server_checksums(fs, path)
        except Exception as exc:
            raise MoverError(f"{url}: cannot read the server's checksum: "
                             f"{type(exc).__name__}: {exc}", url=url, retryable=True) from exc
        ours = digests.hexdigests()
        agreed = {}
        for algo, value in theirs.items():
            if algo not in ours:
                continue
            if ours[algo] != value:
                raise ChecksumMismatch(
                    f"{url}: the server's {algo} is {value}, the bytes moved have {ours[algo]}",
                    url=url)
            agreed[algo] = value
        return agreed

    def put(self, src_path: str | os.PathLike[str], dst_url: str) -> Transfer:
        src = Path(src_path)
        fs, path = self._resolve(dst_url)
        start = time.monotonic()

        def attempt() -> tuple[Digests, dict[str, str]]:
            try:
                return self._put_once(src, fs, path, dst_url)
            except FileNotFoundError as exc:
                if not src.is_file():
                    raise MoverError(f"put {src} -> {dst_url}: no such local file {src}",
                                     url=dst_url) from exc
                self.remove_partial(fs, path)
                raise
            except BaseException:
                self.remove_partial(fs, path)
                raise

        (digests, agreed), attempts = self._retrying(f"put {src} ->", dst_url, attempt)
        return Transfer(digests.size, digests.adler32, time.monotonic() - start, attempts,
                        agreed or None)

    def _put_once(self, src: Path, fs: Any, path: str, url: str
                  ) -> tuple[Digests, dict[str, str]]:
        local_size = src.stat().st_size
        deadline = time.monotonic() + self.settings.timeout_for(local_size)
        digests = Digests(self.server_algorithms)
        self.make_parent(fs, path)
        self.upload(src, fs, path, digests, deadline)
        stored = _stored_size(fs, path, refresh=True)
        if stored != digests.size:
            raise SizeMismatch(f"{url}: destination holds {stored} bytes, sent {digests.size}",
                               url=url)
        return digests, self._compare_server(fs, path, url, digests)


class _DeadlineCallback(Callback):
    """Ends a backend's own copy once the per-file deadline has passed."""

    def __init__(self, deadline: float, path: str) -> None:
        super().__init__()
        self.deadline = deadline
        self.path = path

    def call(self, *args: Any, **kwargs: Any) -> None:
        _check_deadline(self.deadline, self.path)


def _check_deadline(deadline: float, path: str) -> None:
    if time.monotonic() > deadline:
        raise TransferTimeout(f"{path}: the transfer ran past its per-file timeout")


def _stored_size(fs: Any, path: str, refresh: bool = False) -> int | None:
    if refresh:
        with contextlib.suppress(Exception):
            fs.invalidate_cache(path)
    try:
        return int(fs.size(path))
    except Exception:
        return None
