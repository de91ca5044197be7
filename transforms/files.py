"""File helpers over Beam's ``FileSystems``, so local paths, ``gs://`` and ``s3://`` are only flag values."""

from __future__ import annotations

import os
import tempfile

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

_WILDCARDS = "*?["


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
    result = FileSystems.match([pattern])[0]
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


def read_text(path: str) -> str:
    """A whole (small, uncompressed) UTF-8 file."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read().decode("utf-8")


def write_text(path: str, text: str) -> None:
    """Writes (replaces) a small UTF-8 file."""
    with FileSystems.create(path, mime_type="text/plain", compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(text.encode("utf-8"))


def localize_directory(directory: str, names: tuple[str, ...]) -> str:
    """A local directory holding ``names`` from ``directory``: itself when local, else a temporary copy."""
    if FileSystems.get_scheme(directory) in (None, "file"):
        return directory
    local = tempfile.mkdtemp(prefix="elmo-model-")
    for name in names:
        source = FileSystems.join(directory, name)
        with FileSystems.open(source, compression_type=CompressionTypes.UNCOMPRESSED) as src:
            with open(os.path.join(local, name), "wb") as dst:
                while chunk := src.read(1 << 24):
                    dst.write(chunk)
    return local


def delete_tree(directory: str) -> int:
    """Deletes every file under ``directory`` (a local folder or a gs:// / s3:// prefix); returns how many.

    ``_SUCCESS`` goes first, so an interrupted deletion never leaves a run that still looks complete.
    """
    found = FileSystems.match([directory.rstrip("/") + "/**"])[0].metadata_list
    paths = sorted((m.path for m in found), key=lambda path: (not path.endswith("/_SUCCESS"), path))
    if paths:
        FileSystems.delete(paths)
    return len(paths)
