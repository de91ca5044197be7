"""The whole job on the shipped sample text: counts, every output format read back, determinism, re-runs."""

from __future__ import annotations

import json
from pathlib import Path

import lancedb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.beam_testing import (
    SAMPLE_DOCUMENTS,
    SAMPLE_GLOB,
    TINY_MODEL,
    restore_torch_threads,  # noqa: F401  (autouse fixture)
    run_job,
    run_pipeline_sh,
    sentence_vectors,
)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory) -> Path:
    return run_job(tmp_path_factory.mktemp("sample"))


def test_counts_reconcile_and_match_the_outputs(sample_run):
    manifest = json.loads((sample_run / "manifest.json").read_text())
    counts = manifest["counts"]
    assert (sample_run / "_SUCCESS").exists()
    assert counts["documents_read"] == SAMPLE_DOCUMENTS
    assert counts["documents_read"] == counts["documents_embedded"] + counts["documents_failed"]
    assert manifest["reconciled"] is True
    table = pq.read_table(sample_run / "sentences" / "part-00000-of-00001.parquet")
    assert table.num_rows == counts["sentences"]
    assert sum(len(t) for t in table.column("tokens").to_pylist()) == counts["tokens"]
    assert len(set(table.column("doc_id").to_pylist())) == counts["documents_embedded"]
    errors = (sample_run / "errors" / "part-00000-of-00001.jsonl").read_text().splitlines()
    assert len(errors) == counts["documents_failed"] == 0
    assert manifest["model"]["fingerprint"] == "5597664da5f09b6c"
    assert set(table.column("model_fingerprint").to_pylist()) == {"5597664da5f09b6c"}
    assert manifest["outputs"] == [
        "errors/part-00000-of-00001.jsonl",
        "sentences/part-00000-of-00001.parquet",
        "vertex/part-00000-of-00001.json",
    ]
    assert [f["path"].rsplit("/", 1)[1] for f in manifest["input"]["files"]] == [
        "1790-washington.txt",
        "1801-jefferson.txt",
        "1861-lincoln.txt.gz",
        "1862-lincoln.jsonl",
    ]


def test_ids_offsets_and_text(sample_run):
    rows = pq.read_table(sample_run / "sentences").to_pylist()
    ids = {r["id"] for r in rows}
    assert len(ids) == len(rows)
    assert "1861-lincoln.txt.gz:1#0" in ids and "1790-washington.txt:1#0" in ids and "lincoln-1862-p001#0" in ids
    for row in rows[:50]:
        text = row["text"]
        assert len(row["tokens"]) == len(row["token_starts"]) == len(row["token_ends"]) > 0
        for token, start, end in zip(row["tokens"], row["token_starts"], row["token_ends"], strict=True):
            assert text[start - row["char_start"] : end - row["char_start"]] == token


def test_parquet_loads_unchanged_into_pyarrow_pandas_and_lancedb(sample_run, tmp_path):
    path = sample_run / "sentences" / "part-00000-of-00001.parquet"
    table = pq.read_table(path)
    assert table.schema.field("sentence_vector").type == pa.list_(pa.float32(), 32)
    frame = pd.read_parquet(path)
    assert frame["sentence_vector"].iloc[0].shape == (32,)
    assert len(frame) == table.num_rows
    db = lancedb.connect(tmp_path / "lance")
    lance_table = db.create_table("sentences", table)
    assert lance_table.schema.field("sentence_vector").type == pa.list_(pa.float32(), 32)
    query = frame["sentence_vector"].iloc[3]
    hits = lance_table.search(query, vector_column_name="sentence_vector").limit(1).to_pandas()
    assert hits["id"].iloc[0] == frame["id"].iloc[3]


def test_vertex_jsonl_matches_the_parquet(sample_run):
    vectors = sentence_vectors(sample_run)
    lines = (sample_run / "vertex" / "part-00000-of-00001.json").read_text().splitlines()
    assert len(lines) == len(vectors)
    for line in lines:
        point = json.loads(line)
        assert set(point) == {"id", "embedding", "restricts"}
        assert np.array_equal(np.asarray(point["embedding"], dtype=np.float32), vectors[point["id"]])
        assert [r["namespace"] for r in point["restricts"]] == ["doc_id", "source"]
        assert all(isinstance(r["allow"], list) and len(r["allow"]) == 1 for r in point["restricts"])


def test_rerun_with_same_settings_replaces_the_run_and_is_bit_identical(sample_run):
    before = sentence_vectors(sample_run)
    stale = sample_run / "sentences" / "part-00000-of-00003.parquet"
    stale.write_bytes(b"left over by an earlier run")
    again = run_job(sample_run.parent)
    assert again == sample_run  # same settings -> same run id -> replaced
    assert not stale.exists()
    after = sentence_vectors(again)
    assert after.keys() == before.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def _max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


@pytest.mark.integration
def test_other_batch_budgets_and_two_worker_processes_differ_only_by_rounding(sample_run, tmp_path):
    reference = sentence_vectors(sample_run)
    small = run_job(tmp_path / "small", "--max_batch_tokens=97", "--run_id=small")
    diff_budget = _max_diff(reference, sentence_vectors(small))
    two = run_job(tmp_path / "two", "--direct_num_workers=2", "--direct_running_mode=multi_processing", "--run_id=two")
    diff_processes = _max_diff(reference, sentence_vectors(two))
    print(f"max |diff| other batch budget: {diff_budget:.3g}; two worker processes: {diff_processes:.3g}")
    assert diff_budget <= 1e-4
    assert diff_processes <= 1e-4
    assert json.loads((two / "manifest.json").read_text())["counts"]["documents_read"] == SAMPLE_DOCUMENTS


def test_all_layers_token_vectors_float16_in_several_shards(tmp_path):
    run_dir = run_job(
        tmp_path,
        "--layers=all",
        "--dtype=float16",
        "--token_vectors",
        "--num_shards=2",
        "--max_window_tokens=16",
        "--window_overlap=4",
        input_glob=str(Path(SAMPLE_GLOB).parent / "1790-washington.txt"),
    )
    files = sorted((run_dir / "sentences").glob("*.parquet"))
    assert [f.name for f in files] == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    table = pa.concat_tables(pq.read_table(f) for f in files)
    token_type = table.schema.field("token_vectors").type
    assert token_type == pa.list_(pa.list_(pa.list_(pa.float16(), 32), 3))
    row = table.slice(0, 1).to_pylist()[0]
    assert np.asarray(row["token_vectors"]).shape == (len(row["tokens"]), 3, 32)
    assert max(table.column("n_windows").to_pylist()) > 1  # long sentences were windowed
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["counts"]["documents_embedded"] == 37 and manifest["reconciled"]
    assert pd.read_parquet(files[0])["dtype"].eq("float16").all()
    lancedb.connect(tmp_path / "lance").create_table("t", table)  # nested fixed-size float16 lists load too


def test_one_file_per_bundle_holds_the_same_records_as_one_fixed_file(sample_run, tmp_path):
    """``--num_shards=0`` (the default on distributed runners): Beam writes a file per bundle, no record grouping;
    two worker processes make several bundles, and the files hold exactly the one-file run's records."""
    run_dir = run_job(
        tmp_path, "--num_shards=0", "--direct_num_workers=2", "--direct_running_mode=multi_processing", "--run_id=b"
    )
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["num_shards"] == 0 and manifest["reconciled"]
    files = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.glob("*/part-*"))
    assert files == sorted(manifest["outputs"])
    parquet = [f for f in files if f.startswith("sentences/")]
    assert len(parquet) > 1 and all(f.endswith(f"-of-{len(parquet):05d}.parquet") for f in parquet)
    got, want = sentence_vectors(run_dir), sentence_vectors(sample_run)
    assert got.keys() == want.keys()
    assert max(float(np.abs(got[k] - want[k]).max()) for k in want) <= 1e-4


@pytest.mark.integration
def test_model_shared_across_processes_gives_the_same_vectors(sample_run, tmp_path):
    """--large_model: RunInference serves one model from a separate process (the GPU-worker set-up), same output."""
    shard = str(Path(SAMPLE_GLOB).parent / "1790-washington.txt")
    shared = run_job(tmp_path / "shared", "--large_model", input_glob=shard)
    alone = run_job(tmp_path / "alone", input_glob=shard)
    a, b = sentence_vectors(shared), sentence_vectors(alone)
    assert a.keys() == b.keys() and len(a) == 68
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) <= 1e-4


@pytest.mark.integration
def test_batch_invariant_mode_is_bit_identical_across_budgets_and_processes(tmp_path):
    shard = str(Path(SAMPLE_GLOB).parent / "1790-washington.txt")
    small = run_job(tmp_path / "a", "--batch_invariant", "--max_batch_tokens=97", input_glob=shard)
    two = run_job(
        tmp_path / "b",
        "--batch_invariant",
        "--direct_num_workers=2",
        "--direct_running_mode=multi_processing",
        input_glob=shard,
    )
    a, b = sentence_vectors(small), sentence_vectors(two)
    assert a.keys() == b.keys() and len(a) == 68
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.integration
def test_run_pipeline_sh_logs_no_warning(tmp_path):
    """``./run_pipeline.sh`` on the sample prints its summary and not one WARNING line (Beam 2.62 warned about our
    batching DoFn, Beam 2.77 about the ``resource`` module at every model load: transforms/beam_fixes.py)."""
    proc = run_pipeline_sh(f"--model={TINY_MODEL}", f"--output={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "documents: 221 read = 221 embedded + 0 failed" in proc.stdout
    warnings = [line for line in (proc.stdout + proc.stderr).splitlines() if "WARNING" in line or "Warning" in line]
    assert not warnings, "\n".join(warnings)
