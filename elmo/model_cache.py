"""The local model cache: remote model files fetched once per process and once per machine, keyed by content.

``cached_files`` copies a remote directory's files into ``<cache_root()>/content/<sha256 of names and bytes>``;
an index from (URL, size, version) finds an unchanged model without downloading it, a memo finds it again in the
same process without a lookup. Downloads go to a temporary directory renamed into place, so concurrent processes
never see a half-written model. No Beam imports here (the pipeline passes Beam's filesystems in).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from typing import IO, Any

from elmo.retries import StorageError, with_retries
from elmo.storage import is_remote, open_url

_LOG = logging.getLogger(__name__)

CACHE_ENV = "ELMO_MODEL_CACHE"

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
