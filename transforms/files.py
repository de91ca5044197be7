"""File helpers over Beam's ``FileSystems``, so local paths, ``gs://`` and ``s3://`` are only flag values.

Importing this module (every worker process that runs our stages does) sets the storage clients' retry defaults
(``elmo.storage.configure_client_retries``) and, when ``STORAGE_EMULATOR_HOST`` points at a GCS emulator, skips
Beam's application-default-credentials lookup (which finds nothing off Google Cloud and retries for ~23 s per
process before connecting anonymously, as it then does anyway).
"""

from __future__ import annotations

import os
import threading
import types
from typing import IO, Any

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from elmo import storage

_WILDCARDS = "*?["
TEMP_DIR_MARK = "beam-temp-"  # Beam's file sinks stage shards under <dir>/beam-temp-<prefix>-<uuid>/


def skip_adc_for_gcs_emulator() -> None:
    """With ``STORAGE_EMULATOR_HOST`` set: Beam's GCS client connects anonymously without looking for ADC."""
    if not os.environ.get("STORAGE_EMULATOR_HOST"):
        return
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:  # Beam without the gcp extra
        return
    credentials = getattr(auth, "_Credentials", None)
    if credentials is not None and not getattr(credentials, "_credentials_init", True):
        with credentials._credentials_lock:
            credentials._credentials = None
            credentials._credentials_init = True


skip_adc_for_gcs_emulator()


def _fix_empty_s3_uploads() -> None:
    """Beam 2.62's S3 writer completes an empty file's multipart upload with no part at all, which S3 rejects
    (``MalformedXML``), so an empty shard (e.g. ``errors/`` of a clean run) failed the job: upload one empty part
    (S3 has no minimum size for the last part)."""
    try:
        from apache_beam.io.aws import s3io
    except ImportError:  # Beam without the aws extra
        return
    original = s3io.S3Uploader.finish
    if getattr(original, "elmo_fixed", False):
        return

    def finish(self):
        if not self.parts and not self.buffer and self.last_error is None:
            self._write_to_s3(b"")
        return original(self)

    finish.elmo_fixed = True
    s3io.S3Uploader.finish = finish


_fix_empty_s3_uploads()

_CLIENT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_MAX_ATTEMPTS")


def _reuse_s3_clients() -> None:
    """Beam 2.62 builds a new boto3 session and S3 client for every filesystem call (~0.25 s each here, most of an
    s3:// run's overhead); hand it one client per process and settings instead (boto3 clients are thread-safe;
    refreshable credentials such as instance roles are refreshed by the client itself)."""
    try:
        import boto3
        from apache_beam.io.aws.clients.s3 import boto3_client
    except ImportError:
        return
    if getattr(boto3_client.boto3, "elmo_fixed", False) or boto3_client.boto3 is None:
        return
    clients: dict[tuple, Any] = {}
    lock = threading.Lock()

    class CachedSession:
        def client(self, **kwargs: Any) -> Any:
            settings = tuple(sorted((k, repr(v)) for k, v in kwargs.items()))
            key = (settings, tuple(os.environ.get(e) for e in _CLIENT_ENV))
            with lock:
                if key not in clients:
                    clients[key] = boto3.session.Session().client(**kwargs)
                return clients[key]

    boto3_client.boto3 = types.SimpleNamespace(session=types.SimpleNamespace(Session=CachedSession), elmo_fixed=True)


_reuse_s3_clients()


def glob_root(pattern: str) -> str:
    """The directory part of a glob before its first wildcard, with a trailing separator.

    ``data/**/*.txt`` -> ``data/``; ``gs://b/x/part-*`` -> ``gs://b/x/``; a plain file path -> its directory.
    """
    cut = min((pattern.find(c) for c in _WILDCARDS if c in pattern), default=len(pattern))
    head = pattern[:cut]
    slash = head.rfind("/")
    return head[: slash + 1] if slash >= 0 else ""


def match_files(pattern: str) -> list[tuple[str, int]]:
    """All files matching ``pattern``, sorted by path: ``[(path, size_in_bytes), ...]``."""
    result = storage.with_retries(lambda: FileSystems.match([pattern])[0], f"listing {pattern}")
    return sorted((m.path, m.size_in_bytes) for m in result.metadata_list)


def relative_source(path: str, root: str) -> str:
    """``path`` relative to the glob ``root`` (the id prefix of documents read from it)."""
    if root and path.startswith(root):
        return path[len(root) :]
    if root and not root.startswith(("gs://", "s3://")):
        absolute_root = os.path.abspath(root)
        if os.path.abspath(path).startswith(absolute_root + os.sep):
            return os.path.relpath(os.path.abspath(path), absolute_root)
    return path


def _open(path: str) -> IO[bytes]:
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def read_text(path: str) -> str:
    """A whole (small, uncompressed) UTF-8 file; transient storage errors are retried, a missing file is not."""

    def read() -> str:
        with _open(path) as f:
            return f.read().decode("utf-8")

    return storage.with_retries(read, f"reading {path}")


def write_text(path: str, text: str) -> None:
    """Writes (replaces) a small UTF-8 file, retrying the whole write on transient storage errors."""

    def write() -> None:
        with FileSystems.create(path, mime_type="text/plain", compression_type=CompressionTypes.UNCOMPRESSED) as f:
            f.write(text.encode("utf-8"))

    storage.with_retries(write, f"writing {path}")


def _stat(path: str) -> dict[str, Any]:
    found = FileSystems.match([path])[0].metadata_list
    if not found:
        raise FileNotFoundError(f"{path} does not exist")
    try:
        version = str(FileSystems.checksum(path))  # GCS crc32c, S3 ETag
    except Exception:  # a filesystem without checksums: size and mtime only
        version = ""
    return {"size": int(found[0].size_in_bytes), "version": version or str(found[0].last_updated_in_seconds)}


def localize_directory(directory: str, names: tuple[str, ...]) -> str:
    """A local directory holding ``names`` from ``directory``: itself when local, else the local model cache.

    Remote files are fetched through Beam's filesystems once per process (and once per machine while the cache
    directory lives) into a directory keyed by their content hash; see ``elmo.storage.cached_files``.
    """
    if FileSystems.get_scheme(directory) in (None, "file"):
        return directory
    return storage.cached_files(directory, names, open_fn=_open, stat_fn=_stat)


def file_exists(path: str) -> bool:
    """Whether a file exists (local, gs://, s3://), with retries of transient errors."""
    return storage.with_retries(lambda: FileSystems.exists(path), f"checking {path}")


def list_tree(directory: str) -> list[str]:
    """Every file under ``directory`` (a local folder or a gs:// / s3:// prefix), sorted."""
    pattern = directory.rstrip("/") + "/**"
    found = storage.with_retries(lambda: FileSystems.match([pattern])[0].metadata_list, f"listing {pattern}")
    return sorted(m.path for m in found)


def delete_files(paths: list[str], what: str) -> None:
    """Deletes ``paths`` (retried as a whole; deleting what is already gone is not an error)."""

    def delete() -> None:
        still = [p for p in paths if FileSystems.exists(p)]
        if still:
            FileSystems.delete(still)

    if paths:
        storage.with_retries(delete, what)
