"""Local paths, ``gs://`` and ``s3://`` URLs in the parts outside Beam (``elmo`` commands, training, tools).

Remote URLs go through fsspec (gcsfs for ``gs://``, s3fs for ``s3://``); credentials and endpoints come only from
the standard places (application default credentials or ``STORAGE_EMULATOR_HOST`` for GCS; the AWS environment,
profile or config for S3, ``AWS_ENDPOINT_URL_S3`` for S3-compatible stores). No Beam imports here.

Related modules: ``elmo.retries`` (whole-step retries, the clients' retry defaults) and ``elmo.model_cache`` (the
content-addressed local copies of remote model files). Importing any of them sets no environment variable.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import IO, Any

from elmo.retries import with_retries

REMOTE_SCHEMES = ("gs://", "s3://", "gcs://", "s3a://")


def is_remote(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a gs:// or s3:// URL (anything else is a local path)."""
    return str(path).startswith(REMOTE_SCHEMES)


def join(base: str | os.PathLike, name: str) -> str:
    """``base/name`` for URLs and local paths alike."""
    base = os.fspath(base)
    return base.rstrip("/") + "/" + name if is_remote(base) else os.path.join(base, name)


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


def exists(path: str | os.PathLike) -> bool:
    """Whether a local file or a gs:// / s3:// object exists (remote: with retries)."""
    path = os.fspath(path)
    if not is_remote(path):
        return os.path.exists(path)
    import fsspec

    def check() -> bool:
        fs, target = fsspec.core.url_to_fs(path)
        return fs.exists(target)

    return with_retries(check, f"looking for {path}")


def download_file(url: str, local: str | os.PathLike) -> None:
    """Copies ``url`` (local path or gs:// / s3://) to the local file ``local``, with retries of the whole copy."""
    if not is_remote(url):
        shutil.copyfile(url, local)
        return
    import fsspec

    def get() -> None:
        fs, source = fsspec.core.url_to_fs(url)
        fs.get_file(source, os.fspath(local))

    with_retries(get, f"reading {url}")


def write_bytes(url: str, data: bytes) -> None:
    """Writes (replaces) a small file, local or remote."""
    with tempfile.NamedTemporaryFile(delete=False) as tmp:
        tmp.write(data)
    try:
        upload_file(tmp.name, url)
    finally:
        os.unlink(tmp.name)
