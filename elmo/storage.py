"""Local paths, ``gs://`` and ``s3://`` URLs in the parts outside Beam (``elmo`` commands, training, tools).

Remote URLs go through fsspec (gcsfs for ``gs://``, s3fs for ``s3://``); credentials and endpoints come only from
the standard places (application default credentials or ``STORAGE_EMULATOR_HOST`` for GCS; the AWS environment,
profile or config for S3, ``AWS_ENDPOINT_URL_S3`` for S3-compatible stores). No Beam imports here.

Model files are fetched into a local cache keyed by content hash (``cached_files``): once per process (a memo),
and once per machine as long as the cache directory survives (downloads go to a temporary directory that is
renamed into place, so concurrent processes never see a half-written model).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO, Any, TypeVar

_LOG = logging.getLogger(__name__)
T = TypeVar("T")

REMOTE_SCHEMES = ("gs://", "s3://", "gcs://", "s3a://")
CACHE_ENV = "ELMO_MODEL_CACHE"
ATTEMPTS_ENV = "ELMO_STORAGE_ATTEMPTS"
RETRY_ATTEMPTS = 4  # our own retries on top of the clients' (which retry each request): 0.5 + 1 + 2 s of backoff
BUDGET_ENV = "ELMO_STORAGE_RETRY_BUDGET_S"
RETRY_BUDGET_S = 60.0
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 8.0


def configure_client_retries() -> None:
    """Defaults for the storage clients' own retries, through their standard configuration (never overriding
    what the user set): botocore's ``standard`` retry mode with 10 attempts (503/500/throttling and dropped
    connections, exponential backoff with jitter) for Beam's and s3fs's S3 clients; gcsfs's old gRPC probe off.

    google-cloud-storage (Beam's ``gs://``) already retries 429/5xx and connection errors for 120 s by default.
    Environment variables reach worker processes started from this one.
    """
    os.environ.setdefault("AWS_RETRY_MODE", "standard")
    os.environ.setdefault("AWS_MAX_ATTEMPTS", "10")
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


configure_client_retries()


class StorageError(OSError):
    """A storage operation failed for good (after retries); the message names the URL."""


def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a gs:// or s3:// URL (anything else is a local path)."""
    return str(path).startswith(REMOTE_SCHEMES)


def join(base: str | os.PathLike, name: str) -> str:
    """``base/name`` for URLs and local paths alike."""
    base = os.fspath(base)
    return base.rstrip("/") + "/" + name if is_remote(base) else os.path.join(base, name)


def _is_permanent(err: BaseException) -> bool:
    """Errors no retry can fix: missing objects, refused credentials, bad arguments."""
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError)):
        return True
    name = type(err).__name__
    if name in ("NotFound", "Forbidden", "Unauthorized", "NoSuchKey", "NoSuchBucket", "BadRequest"):
        return True
    status = getattr(err, "code", None) or getattr(err, "status", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in (408, 429)


_RETRIES = {"count": 0}  # retries done by ``with_retries`` in this process (tests read it)


def retries_done() -> int:
    """How many times ``with_retries`` retried in this process."""
    return _RETRIES["count"]


def with_retries(fn: Callable[[], T], what: str, attempts: int | None = None, budget_s: float | None = None) -> T:
    """Calls ``fn`` until it succeeds, retrying transient errors with exponential backoff and jitter.

    For our own storage steps that no client retries as a whole (a model fetch, ``manifest.json``, ``_SUCCESS``).
    A permanent error (not found, forbidden) is raised at once; after ``attempts`` a ``StorageError`` naming
    ``what`` (the URL) and the last error is raised. ``$ELMO_STORAGE_ATTEMPTS`` overrides the default of 4.
    No new attempt starts once ``budget_s`` (``$ELMO_STORAGE_RETRY_BUDGET_S``, default 60 s) have passed since the
    first: when a client has already retried one call for minutes, repeating it all would only multiply the wait
    before a persistent outage is reported.
    """
    attempts = attempts or int(os.environ.get(ATTEMPTS_ENV, RETRY_ATTEMPTS))
    budget_s = budget_s if budget_s is not None else float(os.environ.get(BUDGET_ENV, RETRY_BUDGET_S))
    started = time.monotonic()
    delay = RETRY_INITIAL_S
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as err:  # classified below
            if _is_permanent(err):
                raise
            elapsed = time.monotonic() - started
            if attempt == attempts or elapsed + delay > budget_s:
                raise StorageError(
                    f"{what}: still failing after {attempt} attempts over {elapsed:.0f} s: {type(err).__name__}: {err}"
                ) from err
            _RETRIES["count"] += 1
            _LOG.warning(
                "%s: %s: %s; retry %d/%d in %.1f s", what, type(err).__name__, err, attempt, attempts - 1, delay
            )
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, RETRY_MAX_S)
    raise AssertionError("unreachable")


def open_url(path: str | os.PathLike, mode: str = "rb", **kwargs: Any) -> IO:
    """Opens a local path or a gs:// / s3:// URL (fsspec: gcsfs, s3fs) like ``open``."""
    path = os.fspath(path)
    if not is_remote(path):
        return open(path, mode, **kwargs)
    import fsspec

    return fsspec.open(path, mode, **kwargs).open()


def read_bytes(path: str | os.PathLike) -> bytes:
    """A whole (small) file, local or remote, with retries."""

    def read() -> bytes:
        with open_url(path, "rb") as f:
            return f.read()

    return with_retries(read, f"reading {os.fspath(path)}")


def upload_file(local: str | os.PathLike, url: str) -> None:
    """Copies a local file to ``url`` (local path or gs:// / s3://), with retries of the whole copy."""
    if not is_remote(url):
        os.makedirs(os.path.dirname(os.path.abspath(url)), exist_ok=True)
        shutil.copyfile(local, url)
        return
    import fsspec

    def put() -> None:
        fs, target = fsspec.core.url_to_fs(url)
        fs.put_file(os.fspath(local), target)

    with_retries(put, f"writing {url}")


def write_bytes(url: str, data: bytes) -> None:
    """Writes (replaces) a small file, local or remote."""
    with tempfile.NamedTemporaryFile(delete=False) as tmp:
        tmp.write(data)
    try:
        upload_file(tmp.name, url)
    finally:
        os.unlink(tmp.name)


# -- the model cache ---------------------------------------------------------------------------------------------

_FETCHES = {"count": 0}  # downloads of a model file into the cache by this process (tests read it)
_MEMO: dict[str, str] = {}
_MEMO_LOCK = threading.Lock()


def fetch_count() -> int:
    """How many files ``cached_files`` downloaded in this process (cache misses)."""
    return _FETCHES["count"]


def cache_root() -> str:
    """``$ELMO_MODEL_CACHE``, else ``<tempdir>/elmo-model-cache``."""
    return os.environ.get(CACHE_ENV) or os.path.join(tempfile.gettempdir(), "elmo-model-cache")


def _fsspec_stat(url: str) -> dict[str, Any]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    info = fs.info(path)
    return {
        "size": int(info.get("size", -1)),
        "version": str(info.get("md5Hash") or info.get("crc32c") or info.get("ETag") or info.get("generation") or ""),
    }


def _fsspec_open(url: str) -> IO[bytes]:
    return open_url(url, "rb")


def cached_files(
    directory: str | os.PathLike,
    names: Iterable[str],
    open_fn: Callable[[str], IO[bytes]] = _fsspec_open,
    stat_fn: Callable[[str], dict[str, Any]] = _fsspec_stat,
) -> str:
    """A local directory holding ``names`` from ``directory``: the directory itself when local, else a cached copy.

    The copy lives in ``<cache_root()>/content/<sha256 of the files' names and bytes>``; an index entry keyed by
    the remote objects' URL, size and version (md5/crc32c/ETag) points at it, so an unchanged model is found
    without downloading it and a changed one (new version or size) is fetched again. Within a process the result
    is memoised (one stat per file, then nothing). Downloads are retried as a whole (``with_retries``) and checked
    against the remote size; they go to a temporary directory renamed into place, so processes sharing the cache
    never see a partial copy. ``open_fn``/``stat_fn`` let the pipeline use Beam's filesystems instead of fsspec.
    """
    directory = os.fspath(directory)
    names = tuple(names)
    if not is_remote(directory):
        return directory
    urls = [directory.rstrip("/") + "/" + name for name in names]
    memo_key = json.dumps([directory, names])
    with _MEMO_LOCK:
        local = _MEMO.get(memo_key)
        if local and all(os.path.exists(os.path.join(local, n)) for n in names):
            return local
        stats = [with_retries(lambda url=url: stat_fn(url), f"looking up {url}") for url in urls]
        source_key = hashlib.sha256(json.dumps([urls, stats], sort_keys=True).encode()).hexdigest()
        root = cache_root()
        index = os.path.join(root, "sources", source_key)
        local = _from_index(root, index, names, stats)
        if local is None:
            local = _download(root, urls, names, stats, open_fn)
            _write_atomically(index, os.path.basename(local))
        _MEMO[memo_key] = local
        return local


def _from_index(root: str, index: str, names: tuple[str, ...], stats: list[dict[str, Any]]) -> str | None:
    try:
        with open(index, encoding="utf-8") as f:
            content = os.path.join(root, "content", f.read().strip())
    except OSError:
        return None
    for name, stat in zip(names, stats, strict=True):
        path = os.path.join(content, name)
        if not os.path.isfile(path) or (stat["size"] >= 0 and os.path.getsize(path) != stat["size"]):
            return None
    return content


def _download(
    root: str,
    urls: list[str],
    names: tuple[str, ...],
    stats: list[dict[str, Any]],
    open_fn: Callable[[str], IO[bytes]],
) -> str:
    os.makedirs(os.path.join(root, "content"), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".fetch-", dir=os.path.join(root, "content"))
    try:
        digest = hashlib.sha256()
        for url, name, stat in zip(urls, names, stats, strict=True):
            target = os.path.join(staging, name)
            file_digest = with_retries(
                lambda url=url, target=target: _copy_one(url, target, open_fn), f"fetching {url}"
            )
            size = os.path.getsize(target)
            if stat["size"] >= 0 and size != stat["size"]:
                raise StorageError(f"fetching {url}: got {size} bytes, the store lists {stat['size']}")
            digest.update(f"{name}\0{size}\0{file_digest}\0".encode())
            _FETCHES["count"] += 1
        final = os.path.join(root, "content", digest.hexdigest()[:32])
        try:
            os.rename(staging, final)  # atomic; fails if another process got there first (same bytes)
        except OSError:
            if not os.path.isdir(final):
                raise
        _LOG.info("model files from %s cached in %s", os.path.dirname(urls[0]), final)
        return final
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)


def _copy_one(url: str, target: str, open_fn: Callable[[str], IO[bytes]]) -> str:
    digest = hashlib.sha256()
    with open_fn(url) as src, open(target, "wb") as dst:
        while chunk := src.read(1 << 22):
            digest.update(chunk)
            dst.write(chunk)
    return digest.hexdigest()


def _write_atomically(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def local_file(path: str | os.PathLike) -> str:
    """A local path for a single file (``options.json``, weights): itself when local, else a cached copy."""
    path = os.fspath(path)
    if not is_remote(path):
        return path
    parent, name = path.rstrip("/").rsplit("/", 1)
    return os.path.join(cached_files(parent, (name,)), name)
