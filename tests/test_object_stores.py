"""gs:// and s3:// end to end against real servers (tests/storage_servers.py): the pipeline, the model cache,
the commit protocol, transient and persistent storage failures, and the ``elmo`` API/CLI through fsspec."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from tests.beam_testing import (
    BUILTIN_MODEL,
    SAMPLE_GLOB,
    restore_torch_threads,  # noqa: F401  (autouse fixture)
    run_job_summary,
    sentence_vectors,
)
from tests.storage_servers import GCS_BUCKET, S3_BUCKET, download_tree, storage_servers, upload_tree  # noqa: F401

SAMPLE = Path(SAMPLE_GLOB).parent
INPUT_FILES = ["1790-washington.txt", "1861-lincoln.txt.gz"]  # plain text and gzip, 98 documents
MODEL_FILES = ["options.json", "weights.hdf5", "tokenizer.json"]
BUCKETS = {"gs": GCS_BUCKET, "s3": S3_BUCKET}


@pytest.fixture(scope="module")
def stores(storage_servers, tmp_path_factory):  # noqa: F811
    """Per scheme: the sample inputs and the tiny model uploaded to the store; plus the local reference run."""
    local_in = tmp_path_factory.mktemp("in")
    for name in INPUT_FILES:
        shutil.copy(SAMPLE / name, local_in / name)
    for scheme, bucket in BUCKETS.items():
        upload_tree(local_in, f"{scheme}://{bucket}/in")
        upload_tree(BUILTIN_MODEL, f"{scheme}://{bucket}/models/tiny", MODEL_FILES)
    reference = run_job_summary(tmp_path_factory.mktemp("local-out"), "--run_id=local", input_glob=f"{local_in}/*")
    return {"servers": storage_servers, "reference": reference}


def _run_remote(scheme: str, run_id: str, *flags: str) -> dict:
    bucket = BUCKETS[scheme]
    return run_job_summary(
        f"{scheme}://{bucket}/out",
        f"--model={scheme}://{bucket}/models/tiny",
        f"--run_id={run_id}",
        *flags,
        input_glob=f"{scheme}://{bucket}/in/*",
    )


def _same_as_reference(summary: dict, reference: dict, tmp_path: Path) -> list[str]:
    """Downloads the remote run, checks it against the local reference run; returns the files it holds."""
    local = tmp_path / "downloaded"
    names = download_tree(summary["run_dir"], local)
    assert summary["counts"] == reference["counts"] and summary["reconciled"]
    manifest = json.loads((local / "manifest.json").read_text())
    assert manifest["reconciled"] and manifest["counts"] == reference["counts"]
    assert sorted(names) == sorted([*manifest["outputs"], "manifest.json", "_SUCCESS"])
    got, want = sentence_vectors(local), sentence_vectors(Path(reference["run_dir"]))
    assert got.keys() == want.keys()
    assert all(np.array_equal(got[k], want[k]) for k in want)
    return names


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_pipeline_reads_model_and_inputs_and_writes_outputs_on_the_store(stores, scheme, tmp_path):
    started = time.monotonic()
    summary = _run_remote(scheme, "e2e")
    print(f"{scheme}: {time.monotonic() - started:.1f} s")
    _same_as_reference(summary, stores["reference"], tmp_path)
