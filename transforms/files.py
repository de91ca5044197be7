"""File helpers over Beam's ``FileSystems``, so local paths, ``gs://`` and ``s3://`` are only flag values.

Importing this module (every worker process that runs our stages does) applies our fixes of Beam's GCS and S3
clients (``transforms.beam_fixes``: empty S3 uploads, one S3 client per process, no ADC lookup with a GCS
emulator); the ``transforms`` package sets the clients' retry defaults (``elmo.retries``).
"""

from __future__ import annotations

import os
from typing import IO, Any

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

import transforms.beam_fixes  # noqa: F401  (applies the fixes of Beam's GCS/S3 clients in this process)
from elmo.model_cache import cached_files
from elmo.retries import with_retries
from elmo.storage import is_remote

_WILDCARDS = "*?["
TEMP_DIR_MARK = "beam-temp-"  # Beam's file sinks stage shards under <dir>/beam-temp-<prefix>-<uuid>/


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
    result = with_retries(lambda: FileSystems.match([pattern])[0], f"listing {pattern}")
    return sorted((m.path, m.size_in_bytes) for m in result.metadata_list)


def relative_source(path: str, root: str) -> str:
    """``path`` relative to the glob ``root`` (the id prefix of documents read from it)."""
    if root and path.startswith(root):
        return path[len(root) :]
    if root and not is_remote(root):
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

    return with_retries(read, f"reading {path}")


def write_text(path: str, text: str) -> None:
    """Writes (replaces) a small UTF-8 file, retrying the whole write on transient storage errors."""

    def write() -> None:
        with FileSystems.create(path, mime_type="text/plain", compression_type=CompressionTypes.UNCOMPRESSED) as f:
            f.write(text.encode("utf-8"))

    with_retries(write, f"writing {path}")


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
    directory lives) into a directory keyed by their content hash; see ``elmo.model_cache.cached_files``.
    """
    if FileSystems.get_scheme(directory) in (None, "file"):
        return directory
    return cached_files(directory, names, open_fn=_open, stat_fn=_stat)


def file_exists(path: str) -> bool:
    """Whether a file exists (local, gs://, s3://), with retries of transient errors."""
    return with_retries(lambda: FileSystems.exists(path), f"checking {path}")


def list_tree(directory: str) -> list[str]:
    """Every file under ``directory`` (a local folder or a gs:// / s3:// prefix), sorted."""
    pattern = directory.rstrip("/") + "/**"
    found = with_retries(lambda: FileSystems.match([pattern])[0].metadata_list, f"listing {pattern}")
    return sorted(m.path for m in found)


def delete_files(paths: list[str], what: str) -> None:
    """Deletes ``paths`` (retried as a whole; deleting what is already gone is not an error)."""

    def delete() -> None:
        still = [p for p in paths if FileSystems.exists(p)]
        if still:
            FileSystems.delete(still)

    if paths:
        with_retries(delete, what)
