"""Output formats: the Parquet schema and table conversion, the Vertex AI JSON lines, and the write stages."""

from __future__ import annotations

import glob
import json

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.beam_testing import local_pipeline
from transforms.write import (
    WriteErrors,
    WriteParquet,
    WriteVertexJsonl,
    embedding_schema,
    records_to_table,
    vertex_json,
)


def _record(i: int, n_tokens: int, layers: str, dtype: str, with_tokens: bool) -> dict:
    rng = np.random.default_rng(i)
    kind = np.float16 if dtype == "float16" else np.float32
    shape = (3, n_tokens, 4) if layers == "all" else (n_tokens, 4)
    return {
        "id": f"d{i}#0",
        "doc_id": f"d{i}",
        "sentence_index": 0,
        "key": f"key-{i}",
        "source": "s.txt",
        "line": i,
        "text": "t " * n_tokens,
        "char_start": 0,
        "char_end": 2 * n_tokens - 1,
        "tokens": ["t"] * n_tokens,
        "token_starts": np.arange(0, 2 * n_tokens, 2, dtype=np.int32),
        "token_ends": np.arange(1, 2 * n_tokens, 2, dtype=np.int32),
        "n_windows": 1,
        "sentence_vector": rng.standard_normal(4).astype(kind),
        "token_vectors": rng.standard_normal(shape).astype(kind) if with_tokens else None,
        "layers": layers,
        "dtype": dtype,
        "model_fingerprint": "0123456789abcdef",
    }


@pytest.mark.parametrize("layers, dtype", [("all", "float16"), ("top", "float32")])
def test_records_to_table_keeps_vectors_exactly(tmp_path, layers, dtype):
    schema = embedding_schema(4, 3, dtype, layers, with_token_vectors=True)
    records = [_record(i, n, layers, dtype, True) for i, n in enumerate([1, 5, 2])]
    table = records_to_table(records, schema)
    assert table.schema == schema
    pq.write_table(table, tmp_path / "t.parquet")
    back = pq.read_table(tmp_path / "t.parquet").to_pylist()
    for record, row in zip(records, back, strict=True):
        np.testing.assert_array_equal(
            np.asarray(row["sentence_vector"], dtype=record["sentence_vector"].dtype), record["sentence_vector"]
        )
        tokens = np.asarray(row["token_vectors"], dtype=record["token_vectors"].dtype)  # (T, L+1, W) or (T, W)
        expected = record["token_vectors"].transpose(1, 0, 2) if layers == "all" else record["token_vectors"]
        np.testing.assert_array_equal(tokens, expected)
        assert row["token_starts"] == record["token_starts"].tolist()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_vertex_json_is_the_vector_search_input_format(dtype):
    record = _record(7, 3, "average", dtype, False)
    line = json.loads(vertex_json(record))
    assert set(line) == {"id", "embedding", "restricts"}
    assert line["id"] == "d7#0"
    vector = record["sentence_vector"]
    assert vector.dtype == np.dtype(dtype) and len(np.unique(vector)) > 1
    assert np.array_equal(np.asarray(line["embedding"], dtype=vector.dtype), vector)  # exact round trip
    assert line["restricts"] == [
        {"namespace": "doc_id", "allow": ["d7"]},
        {"namespace": "source", "allow": ["s.txt"]},
    ]
    record["sentence_vector"][1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        vertex_json(record)


def test_vertex_json_refuses_text_that_is_not_utf8():
    record = _record(1, 3, "average", "float32", False)
    record["source"] = "bad-\udcff-name.txt"  # a file name's undecodable byte, as Python's os functions give it
    with pytest.raises(TypeError, match="surrogates not allowed"):
        vertex_json(record)


def test_write_stages_use_fixed_shard_names(tmp_path):
    schema = embedding_schema(4, 3, "float32", "average", with_token_vectors=False)
    records = [_record(i, 2, "average", "float32", False) for i in range(5)]
    errors = [{"id": "x", "source": "s", "line": 1, "stage": "parse", "reason": "bad", "excerpt": "é"}]
    with local_pipeline() as p:
        pcoll = p | "Records" >> beam.Create(records)
        _ = pcoll | WriteParquet(str(tmp_path / "sentences" / "part"), schema, num_shards=2)
        _ = pcoll | WriteVertexJsonl(str(tmp_path / "vertex" / "part"), num_shards=1)
        _ = p | "Errors" >> beam.Create(errors) | WriteErrors(str(tmp_path / "errors" / "part"))
    parquet = sorted(glob.glob(str(tmp_path / "sentences" / "*")))
    assert [f.rsplit("/", 1)[1] for f in parquet] == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    assert sum(pq.read_table(f).num_rows for f in parquet) == 5
    assert len((tmp_path / "vertex" / "part-00000-of-00001.json").read_text().splitlines()) == 5
    lines = (tmp_path / "errors" / "part-00000-of-00001.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x) for x in lines] == errors
