"""Reading a pipeline run folder (local, ``gs://`` or ``s3://``, through fsspec): its manifest, its sentence rows
(without or with vectors) and its nightly delta. Only a run with ``_SUCCESS`` is read (docs/pipeline.md)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from search.errors import RunNotFinishedError, SearchError

# The columns that make up an index row besides its vector; a change in any of them re-writes the row.
META_COLUMNS = ["id", "doc_id", "sentence_index", "key", "source", "line", "text", "char_start", "char_end"]
TOKEN_COLUMNS = ["tokens", "token_starts", "token_ends"]


@dataclass(frozen=True)
class Run:
    """A finished run folder."""

    path: str  # the URL, or the absolute local path, without a trailing slash
    root: str  # the same in the filesystem's own form (no scheme)
    manifest: dict[str, Any]
    manifest_sha256: str
    shards: list[str]  # sentences/part-*.parquet, as fsspec paths
    fs: Any  # the fsspec filesystem

    @property
    def vector_settings(self) -> dict[str, Any]:
        """Every setting that changes a vector (the manifest's ``model.vector_settings``)."""
        return self.manifest["model"]["vector_settings"]

    @property
    def fingerprint(self) -> str:
        """The model fingerprint the run's vectors come from."""
        return self.manifest["model"]["fingerprint"]

    @property
    def has_token_vectors(self) -> bool:
        """Whether the run stored every token's vector (``--token_vectors``)."""
        return bool(self.vector_settings.get("token_vectors"))

    @property
    def previous_run_dir(self) -> str | None:
        """The run folder this nightly run was computed against (None without ``--previous_run``)."""
        previous = self.manifest.get("previous_run") or {}
        return previous.get("run_dir")

    def entry(self) -> dict[str, Any]:
        """What the index records about this run."""
        return {
            "run_dir": self.path,
            "run_id": self.manifest.get("run_id"),
            "run_date": self.manifest.get("run_date"),
            "manifest_sha256": self.manifest_sha256,
            "previous_run": self.previous_run_dir,
        }

    def metadata(self) -> pa.Table:
        """Every sentence's ``id`` and ``row_digest`` (a hash of its index columns), without reading vectors."""
        parts = []
        for shard in self.shards:
            with self.fs.open(shard, "rb") as f:
                table = pq.read_table(f, columns=META_COLUMNS)
            parts.append(pa.table({"id": table.column("id"), "row_digest": row_digests(table)}))
        return pa.concat_tables(parts) if parts else pa.table({"id": pa.array([], pa.string()), "row_digest": []})

    def rows(self, ids: set[str] | None, with_tokens: bool, batch_rows: int = 4096) -> Iterator[pa.Table]:
        """The sentence rows (index columns + ``sentence_vector`` [+ tokens and ``token_vectors``]) whose id is in
        ``ids`` (all with None), in batches of at most ``batch_rows`` (one row group at a time)."""
        columns = [*META_COLUMNS, "sentence_vector"] + ([*TOKEN_COLUMNS, "token_vectors"] if with_tokens else [])
        wanted = None if ids is None else pa.array(sorted(ids), pa.string())
        if wanted is not None and len(wanted) == 0:
            return
        for shard in self.shards:
            with self.fs.open(shard, "rb") as f:
                parquet = pq.ParquetFile(f)
                for group in range(parquet.num_row_groups):
                    mask = None
                    if wanted is not None:  # read a row group's vectors only when it holds a wanted id
                        ids_here = parquet.read_row_group(group, columns=["id"]).column("id")
                        mask = pc.is_in(ids_here, value_set=wanted)
                        if not pc.any(mask).as_py():
                            continue
                    table = parquet.read_row_group(group, columns=columns)
                    if mask is not None:
                        table = table.filter(mask)
                    for start in range(0, table.num_rows, batch_rows):
                        yield table.slice(start, batch_rows)

    def delta(self) -> tuple[set[str], set[str]] | None:
        """The nightly delta's upserted and deleted ids (``vertex-delta/``), or None when the run has none."""
        base = f"{self.root}/vertex-delta"
        if not self.fs.exists(base):
            return None
        upserts: set[str] = set()
        for part in sorted(self.fs.glob(f"{base}/part-*.json")):
            with self.fs.open(part, "rt", encoding="utf-8") as f:
                upserts.update(json.loads(line)["id"] for line in f if line.strip())
        deletes: set[str] = set()
        for part in sorted(self.fs.glob(f"{base}/delete/part-*.txt")):
            with self.fs.open(part, "rt", encoding="utf-8") as f:
                deletes.update(line.strip() for line in f if line.strip())
        return upserts, deletes


def row_digests(table: pa.Table) -> pa.Array:
    """sha256 (32 hex digits) over each row's ``META_COLUMNS``: equal digests mean equal index rows (the content
    key covers the vectors: equal keys, equal vectors)."""
    columns = [table.column(name).to_pylist() for name in META_COLUMNS]
    return pa.array(
        [hashlib.sha256(json.dumps(values).encode()).hexdigest()[:32] for values in zip(*columns, strict=True)],
        pa.string(),
    )


def open_run(path: str) -> Run:
    """The run folder at ``path``, checked: ``_SUCCESS`` present, a manifest with vector settings, Parquet shards.

    ``path`` may also be a pipeline ``--output`` folder holding a ``LATEST`` pointer: its newest run is opened.
    Raises ``RunNotFinishedError`` without ``_SUCCESS`` and ``SearchError`` for anything else unusable.
    """
    path = path.rstrip("/") if "://" in path else os.path.abspath(path)
    fs, root = fsspec.core.url_to_fs(path)
    if not fs.exists(f"{root}/manifest.json") and fs.exists(f"{root}/LATEST"):
        with fs.open(f"{root}/LATEST", "rt", encoding="utf-8") as f:
            return open_run(json.load(f)["run_dir"])
    if not fs.isdir(root):
        raise SearchError(f"run folder {path} does not exist")
    if not fs.exists(f"{root}/_SUCCESS"):
        raise RunNotFinishedError(
            f"run folder {path} has no _SUCCESS: the run did not finish (or is still running); index only finished runs"
        )
    try:
        with fs.open(f"{root}/manifest.json", "rb") as f:
            raw = f.read()
        manifest = json.loads(raw)
        if "fingerprint" not in manifest["model"]["vector_settings"]:  # schema version 2 or later
            raise KeyError("model.vector_settings.fingerprint")
    except (FileNotFoundError, KeyError, TypeError, json.JSONDecodeError) as err:
        raise SearchError(
            f"run folder {path}: manifest.json is missing or lacks model.vector_settings ({err}); "
            "runs of schema version 2 or later can be indexed"
        ) from None
    shards = sorted(fs.glob(f"{root}/sentences/part-*.parquet"))
    if not shards:
        raise SearchError(f"run folder {path} has no sentences/part-*.parquet")
    return Run(path, root, manifest, hashlib.sha256(raw).hexdigest(), shards, fs)


def vectors_of(column: pa.ChunkedArray | pa.Array, n_rows: int) -> np.ndarray:
    """A fixed-size-list vector column -> (n_rows, dim) float32."""
    flat = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = np.asarray(flat.flatten(), dtype=np.float32)
    return values.reshape(n_rows, -1)
