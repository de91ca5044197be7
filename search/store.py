"""The LanceDB side of an index: its tables, their schemas, the state record and the vector indexes.

An index is a LanceDB database (a local directory, ``gs://`` or ``s3://`` URI) holding:

- ``sentences``: one row per sentence of the run it reflects (id, doc id, source, text, offsets, content key,
  ``row_digest`` and ``vector``, the run's sentence vector as float32);
- ``tokens`` (when the run stored ``--token_vectors``): one row per token occurrence: its sentence id, position,
  text, ``word`` (lower-cased, what word search matches), document offsets and contextual ``vector``;
- ``index_state``: one row, JSON: the run it reflects, the model fingerprint and vector settings, and a history.

Exact search below ``ANN_THRESHOLD`` sentence rows, an IVF_PQ index (cosine) from there on (docs/search.md says
why). Word search filters the token table by ``word`` (a BTREE scalar index) and ranks that word's occurrences
exactly, so the token table needs no vector index.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

os.environ.setdefault("LANCE_LOG", "error")  # before lancedb loads: no WARN line for every table it creates

import lancedb
import pyarrow as pa
from lancedb.index import BTree, IvfPq

SENTENCES = "sentences"
TOKENS = "tokens"
STATE = "index_state"
# Exact (flat) search is used below this many sentence rows; an IVF_PQ index is built at or above it.
# Measured (bench/bench_search.py, 256 float32, shared 2-core machine): a flat scan of 100k rows answers in
# 60-290 ms (p50, depending on the machine's load), of 1M rows in ~3 s: linear in N; the IVF_PQ index answers 1M rows
# in ~10 ms with recall@10 0.98, but costs minutes of training (~2 min even for 30k rows here) and is approximate.
# At 100k rows sqrt(N) = 316 partitions of ~316 rows each are enough to train IVF centroids and PQ codebooks.
ANN_THRESHOLD = 100_000
NPROBES = 20  # IVF partitions probed per query
REFINE_FACTOR = 10  # re-rank the k * 10 best PQ candidates with their full vectors


def connect(uri: str, storage_options: dict[str, str] | None = None) -> lancedb.DBConnection:
    """The LanceDB database at ``uri`` (local path, ``gs://...`` or ``s3://...``; created on first write)."""
    return lancedb.connect(uri, storage_options=storage_options or None)


def open_table(db: lancedb.DBConnection, name: str) -> Any | None:
    """The table ``name``, or None when the database has none of that name."""
    if name not in list_tables(db):
        return None
    return db.open_table(name)


def list_tables(db: lancedb.DBConnection) -> list[str]:
    """The names of the database's tables (all pages)."""
    names: list[str] = []
    token = None
    while True:
        page = db.list_tables(page_token=token) if token else db.list_tables()
        names += list(page.tables)
        token = page.page_token
        if not token:
            return names


def sentence_schema(dim: int) -> pa.Schema:
    """Schema of the ``sentences`` table for vectors of ``dim`` floats."""
    return pa.schema(
        [
            ("id", pa.string()),
            ("doc_id", pa.string()),
            ("sentence_index", pa.int32()),
            ("key", pa.string()),
            ("source", pa.string()),
            ("line", pa.int64()),
            ("text", pa.string()),
            ("char_start", pa.int64()),
            ("char_end", pa.int64()),
            ("row_digest", pa.string()),
            ("vector", pa.list_(pa.float32(), dim)),
        ]
    )


def token_schema(dim: int) -> pa.Schema:
    """Schema of the ``tokens`` table for vectors of ``dim`` floats."""
    return pa.schema(
        [
            ("sentence_id", pa.string()),
            ("doc_id", pa.string()),
            ("position", pa.int32()),
            ("token", pa.string()),
            ("word", pa.string()),
            ("char_start", pa.int64()),
            ("char_end", pa.int64()),
            ("vector", pa.list_(pa.float32(), dim)),
        ]
    )


def read_state(db: lancedb.DBConnection) -> dict[str, Any] | None:
    """The index's state record, or None for a database that holds no complete index."""
    table = open_table(db, STATE)
    if table is None:
        return None
    rows = table.search().select(["state"]).limit(1).to_list()
    return json.loads(rows[0]["state"]) if rows else None


def write_state(db: lancedb.DBConnection, state: dict[str, Any]) -> None:
    """Replaces the state record (written last, after the tables: a crash leaves the previous state)."""
    data = pa.table({"state": [json.dumps(state, sort_keys=True)]})
    db.create_table(STATE, data, mode="overwrite" if open_table(db, STATE) is not None else "create")


def quote(value: str) -> str:
    """``value`` as an SQL string literal for LanceDB filters."""
    return "'" + value.replace("'", "''") + "'"


def delete_ids(table: Any, column: str, ids: list[str], chunk: int = 2000) -> None:
    """Deletes the rows whose ``column`` is in ``ids`` (in chunks, to keep each filter short)."""
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        table.delete(f"{column} IN ({', '.join(quote(i) for i in part)})")


def has_index(table: Any, column: str) -> bool:
    """Whether ``table`` has an index on ``column``."""
    return any(column in ix.columns for ix in table.list_indices())


def ann_config(n_rows: int, dim: int) -> IvfPq:
    """IVF_PQ for ``n_rows`` vectors of ``dim``: sqrt(N) partitions, dim/8 sub-vectors of 8 bits, cosine."""
    sub_vectors = dim // 8 if dim % 8 == 0 else 1
    return IvfPq(distance_type="cosine", num_partitions=max(1, round(math.sqrt(n_rows))), num_sub_vectors=sub_vectors)


def maintain_indexes(db: lancedb.DBConnection, changed: bool, threshold: int = ANN_THRESHOLD) -> dict[str, Any]:
    """Creates the sentence ANN index once the table reaches ``threshold`` rows, and the scalar indexes (``id``;
    the token table's ``word`` and ``sentence_id``) once the tables have rows; after changes, folds the new rows
    into the existing indexes and compacts (``optimize``). Returns what it did."""
    done: dict[str, Any] = {"ann": False}
    sentences = open_table(db, SENTENCES)
    if sentences is not None and sentences.count_rows():
        fresh = False
        if not has_index(sentences, "id"):  # upserts and deletes by id
            sentences.create_index("id", config=BTree())
            fresh = True
        n = sentences.count_rows()
        if has_index(sentences, "vector"):
            done["ann"] = True
        elif n >= threshold:
            dim = sentences.schema.field("vector").type.list_size
            sentences.create_index("vector", config=ann_config(n, dim))
            done["ann"] = done["ann_created"] = fresh = True
        if changed and not fresh:
            sentences.optimize()
    tokens = open_table(db, TOKENS)
    if tokens is not None and tokens.count_rows():
        if not has_index(tokens, "word"):  # word search filters by word, updates delete by sentence id
            tokens.create_index("word", config=BTree())
            tokens.create_index("sentence_id", config=BTree())
        elif changed:
            tokens.optimize()
    return done


def vector_search(
    table: Any, vector: Any, k: int, where: str | None = None, exact: bool = False, nprobes: int = NPROBES
) -> pa.Table:
    """The ``k`` nearest rows to ``vector`` by cosine (``_distance`` = 1 - cosine): through the ANN index when the
    table has one (``nprobes`` partitions, the candidates re-ranked with their full vectors), exact otherwise or
    with ``exact``; ``where`` filters the rows first."""
    query = table.search(vector, vector_column_name="vector").distance_type("cosine").limit(k)
    if where:
        query = query.where(where, prefilter=True)
    if exact or not has_index(table, "vector"):
        query = query.bypass_vector_index()
    else:
        query = query.nprobes(nprobes).refine_factor(REFINE_FACTOR)
    return query.to_arrow()
