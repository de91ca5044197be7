"""``--previous_run``: find the previous run, check it before any work, and decide whether its vectors can be reused.

A previous run is usable when it committed (``_SUCCESS``), was written with this schema version, and its Parquet
shards exist and carry the columns a nightly run reads. Its vectors are *carried* only when every setting that
changes vectors is the same (``vector_settings`` in both manifests) and ``--full`` is not given; otherwise every
sentence is embedded again (the previous run still gives the changes and deletions), and the reason is recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from elmo import storage
from elmo.errors import UsageError
from pipeline.options import LATEST
from transforms.files import file_exists, read_text
from transforms.incremental import PREVIOUS_COLUMNS
from transforms.latest import previous_entry, read_latest
from transforms.run_folder import MANIFEST_FILE, SUCCESS_FILE
from transforms.write import SCHEMA_VERSION


@dataclass(frozen=True)
class PreviousRun:
    """A checked previous run: where it is, its Parquet shards, and whether its vectors are reused."""

    run_dir: str
    sentence_files: tuple[str, ...]
    carry: bool  # reuse its vectors (same vector settings and no --full)
    note: str  # why (for the manifest and the summary)

    def manifest_entry(self) -> dict[str, Any]:
        """What the manifest records about it."""
        return {"run_dir": self.run_dir, "mode": "incremental" if self.carry else "full", "note": self.note}


def resolve_previous_run(
    spec: str | None, output: str, run_dir: str, run_date: str | None, vector_settings: dict[str, Any], full: bool
) -> PreviousRun | None:
    """The checked previous run named by ``--previous_run`` (a folder, or ``latest``), or None: no flag, or
    ``latest`` on the first dated run under ``output``. Raises ``UsageError`` naming the folder and the problem."""
    if spec is None:
        return None
    folder = spec
    if spec == LATEST:
        entry = previous_entry(read_latest(output), run_date, run_dir)
        if entry is None:
            return None
        folder = entry["run_dir"]
    folder = folder.rstrip("/")
    if _same_folder(folder, run_dir):
        raise UsageError(f"--previous_run {folder} is this run's own folder; name an earlier run")
    manifest = _checked_manifest(folder)
    files = tuple(_sentence_files(folder, manifest))
    differs = _differences(manifest.get("model", {}).get("vector_settings", {}), vector_settings)
    if full:
        return PreviousRun(folder, files, False, "--full: every sentence embedded again")
    if differs:
        return PreviousRun(folder, files, False, f"every sentence embedded again: {differs} differ(s)")
    return PreviousRun(folder, files, True, "sentences whose content key the previous run holds are carried over")


def _same_folder(a: str, b: str) -> bool:
    if storage.is_remote(a) or storage.is_remote(b):
        return a.rstrip("/") == b.rstrip("/")
    import os

    return os.path.abspath(a) == os.path.abspath(b)


def _checked_manifest(folder: str) -> dict[str, Any]:
    """The previous run's manifest, refusing a run that did not commit or has another schema version."""
    if not file_exists(f"{folder}/{MANIFEST_FILE}") and not file_exists(f"{folder}/{SUCCESS_FILE}"):
        raise UsageError(f"--previous_run {folder}: no run there (no {MANIFEST_FILE}, no {SUCCESS_FILE})")
    if not file_exists(f"{folder}/{SUCCESS_FILE}"):
        raise UsageError(f"--previous_run {folder}: the run did not finish (no {SUCCESS_FILE}); name a committed run")
    try:
        manifest = json.loads(read_text(f"{folder}/{MANIFEST_FILE}"))
    except (ValueError, OSError) as err:
        raise UsageError(f"--previous_run {folder}: unreadable {MANIFEST_FILE} ({err})") from None
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UsageError(
            f"--previous_run {folder}: written with schema version {version}, this pipeline reads {SCHEMA_VERSION} "
            "(sentence keys); run once without --previous_run to start a new chain"
        )
    return manifest


def _sentence_files(folder: str, manifest: dict[str, Any]) -> list[str]:
    """The previous run's Parquet shards from its manifest, each checked to exist and to be readable Parquet with
    the columns a nightly run needs."""
    import pyarrow.parquet as pq

    files = [f"{folder}/{name}" for name in manifest.get("outputs", []) if name.startswith("sentences/")]
    if not files:
        raise UsageError(f"--previous_run {folder}: its manifest lists no sentences/ shards")
    for path in files:
        try:
            with storage.open_url(path, "rb") as f:
                names = set(pq.ParquetFile(f).schema_arrow.names)
        except FileNotFoundError:
            raise UsageError(f"--previous_run {folder}: {path} is missing") from None
        except Exception as err:  # pyarrow raises its own types for a corrupt footer
            raise UsageError(f"--previous_run {folder}: {path} is not readable Parquet ({err})") from None
        missing = sorted(set(PREVIOUS_COLUMNS) - names)
        if missing:
            raise UsageError(f"--previous_run {folder}: {path} lacks the columns {missing}")
    return files


def _differences(previous: dict[str, Any], current: dict[str, Any]) -> str:
    """The vector-changing settings that differ, as text ('' when none)."""
    names = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
    return ", ".join(f"{k} ({previous.get(k)!r} -> {current.get(k)!r})" for k in names)
