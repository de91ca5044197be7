"""Writing the outputs: sentence records as Parquet and as Vertex AI Vector Search JSON lines, errors as JSON lines.

File names are ``part-SSSSS-of-NNNNN``: ``num_shards`` of them, or with ``num_shards=0`` one per bundle (Beam's
runner-determined sharding, which groups only the written files' names, never records).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import orjson
import pyarrow as pa

from transforms.metrics import counter

SCHEMA_VERSION = 2  # of the sentence records and the manifest; 2 added each sentence's content ``key``
SHARD_TEMPLATE = "-SSSSS-of-NNNNN"
ARROW_DTYPES = {"float32": pa.float32(), "float16": pa.float16()}
PARQUET_ROWS_PER_TABLE = 256
VERTEX_JSON = "vertex_json"  # not a column: a record's Vertex AI datapoint line, when assembling formatted it once


def embedding_schema(dim: int, n_layers: int, dtype: str, layers: str, with_token_vectors: bool) -> pa.Schema:
    """The Parquet schema of sentence records; vectors are fixed-size lists (documented in docs/pipeline.md)."""
    value = ARROW_DTYPES[dtype]
    fields = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("sentence_index", pa.int32(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("line", pa.int64()),
        pa.field("text", pa.string()),
        pa.field("char_start", pa.int64()),
        pa.field("char_end", pa.int64()),
        pa.field("tokens", pa.list_(pa.string())),
        pa.field("token_starts", pa.list_(pa.int32())),
        pa.field("token_ends", pa.list_(pa.int32())),
        pa.field("n_windows", pa.int32()),
        pa.field("sentence_vector", pa.list_(value, dim)),
    ]
    if with_token_vectors:
        token_type = pa.list_(value, dim)  # one token of the mix: (W,)
        if layers == "all":
            token_type = pa.list_(token_type, n_layers)  # one token, every layer: (L+1, W)
        fields.append(pa.field("token_vectors", pa.list_(token_type)))
    fields += [
        pa.field("layers", pa.string()),
        pa.field("dtype", pa.string()),
        pa.field("model_fingerprint", pa.string()),
    ]
    return pa.schema(fields)


def _fixed_size(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    """A numpy array (N, *shape) -> an Arrow array of nested fixed-size lists of ``type_``."""
    flat = values.reshape(-1)
    array: pa.Array = pa.array(flat, type=_leaf(type_))
    sizes = []
    while pa.types.is_fixed_size_list(type_):
        sizes.append(type_.list_size)
        type_ = type_.value_type
    for size in reversed(sizes):
        array = pa.FixedSizeListArray.from_arrays(array, size)
    return array


def _leaf(type_: pa.DataType) -> pa.DataType:
    while pa.types.is_fixed_size_list(type_) or pa.types.is_list(type_):
        type_ = type_.value_type
    return type_


def records_to_table(records: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Sentence records (numpy vectors) -> one Arrow table of ``schema``, vectors copied without Python lists."""
    columns = {}
    for field in schema:
        name = field.name
        if name == "sentence_vector":
            columns[name] = _fixed_size(np.stack([r[name] for r in records]), field.type)
        elif name == "token_vectors":
            per_sentence = [r[name] for r in records]
            # (L+1, T, W) -> (T, L+1, W) so that each list item is one token
            per_sentence = [v.transpose(1, 0, 2) if v.ndim == 3 else v for v in per_sentence]
            offsets = np.cumsum([0] + [len(v) for v in per_sentence], dtype=np.int32)
            items = _fixed_size(np.concatenate(per_sentence), field.type.value_type)
            columns[name] = pa.ListArray.from_arrays(pa.array(offsets), items)
        else:
            columns[name] = pa.array([r[name] for r in records], type=field.type)
    return pa.Table.from_pydict(columns, schema=schema)


def vertex_json(record: dict[str, Any]) -> str:
    """One sentence record -> a Vertex AI Vector Search datapoint (JSON), with restricts on document and source.

    Each float is written as the shortest decimal that reads back to the same float32 value (a float16 vector's
    values are float32 values too, so they read back exactly as well), by orjson's numpy serializer: ~9x faster
    than ``'%.9g' % value`` per value. Text that is not valid UTF-8 (a lone surrogate) raises.
    """
    vector = record["sentence_vector"]
    if not np.isfinite(vector).all():
        raise ValueError(f"non-finite sentence vector for {record['id']}")
    point = {
        "id": record["id"],
        "embedding": np.ascontiguousarray(vector),
        "restricts": [
            {"namespace": "doc_id", "allow": [record["doc_id"]]},
            {"namespace": "source", "allow": [record["source"]]},
        ],
    }
    return orjson.dumps(point, option=orjson.OPT_SERIALIZE_NUMPY).decode("utf-8")


class WriteParquet(beam.PTransform):
    """PCollection[dict sentence record] -> PCollection[str written file path]: ``<prefix>-SSSSS-of-NNNNN.parquet``."""

    def __init__(self, prefix: str, schema: pa.Schema, num_shards: int):
        super().__init__()
        self._prefix = prefix
        self._schema = schema
        self._num_shards = num_shards

    def expand(self, records):
        schema = self._schema
        return (
            records
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=PARQUET_ROWS_PER_TABLE)
            | "ToArrow" >> beam.Map(records_to_table, schema)
            | "Write"
            >> beam.io.WriteToParquetBatched(
                self._prefix,
                schema,
                codec="snappy",
                num_shards=self._num_shards,
                shard_name_template=SHARD_TEMPLATE,
                file_name_suffix=".parquet",
            )
        )


def vertex_line(record: dict[str, Any]) -> str:
    """A record's Vertex AI datapoint line: the one assembling formatted (``VERTEX_JSON``, so vertex/ and
    vertex-delta/ format each vector once), else ``vertex_json(record)``."""
    line = record.get(VERTEX_JSON)
    return vertex_json(record) if line is None else line


class WriteVertexJsonl(beam.PTransform):
    """PCollection[dict sentence record] -> PCollection[str written file path]: sentence vectors in the Vertex AI
    Vector Search input format, ``<prefix>-SSSSS-of-NNNNN.json``."""

    def __init__(self, prefix: str, num_shards: int):
        super().__init__()
        self._prefix = prefix
        self._num_shards = num_shards

    def expand(self, records):
        return (
            records
            | "ToVertexJson" >> beam.Map(vertex_line)
            | "Write"
            >> beam.io.WriteToText(
                self._prefix, file_name_suffix=".json", num_shards=self._num_shards, shard_name_template=SHARD_TEMPLATE
            )
        )


class WriteDeletedIds(beam.PTransform):
    """PCollection[str sentence id] -> PCollection[str written file path]: one id per line, the ``delete/`` file of
    a Vertex AI Vector Search batch update, ``<prefix>-SSSSS-of-NNNNN.txt``."""

    def __init__(self, prefix: str, num_shards: int):
        super().__init__()
        self._prefix = prefix
        self._num_shards = num_shards

    def expand(self, ids):
        return ids | "Write" >> beam.io.WriteToText(
            self._prefix, file_name_suffix=".txt", num_shards=self._num_shards, shard_name_template=SHARD_TEMPLATE
        )


class _CountFailure(beam.DoFn):
    def __init__(self):
        self._failed = counter("documents_failed")

    def process(self, record: dict):
        self._failed.inc()
        yield json.dumps(record, ensure_ascii=False, sort_keys=True)


class WriteErrors(beam.PTransform):
    """PCollection[dict error record] -> PCollection[str written file path]: one JSON line per failed document,
    ``<prefix>-SSSSS-of-NNNNN.jsonl`` (counter ``documents_failed``)."""

    def __init__(self, prefix: str, num_shards: int = 1):
        super().__init__()
        self._prefix = prefix
        self._num_shards = num_shards

    def expand(self, errors):
        return (
            errors
            | "ToJson" >> beam.ParDo(_CountFailure())
            | "Write"
            >> beam.io.WriteToText(
                self._prefix, file_name_suffix=".jsonl", num_shards=self._num_shards, shard_name_template=SHARD_TEMPLATE
            )
        )
