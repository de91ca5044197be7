"""Helpers shared by the pipeline's tests: a network-free TestPipeline and the built-in model's location."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from pipeline.run import LOCAL_RUNNER, run
from tests.model_files import TINY_MODEL
from tests.nightly_data import SAMPLE_DIR

REPO = Path(__file__).resolve().parent.parent
SAMPLE_GLOB = str(SAMPLE_DIR / "*")
SAMPLE_DOCUMENTS = 221  # non-blank lines of the four sample shards
FLINK_SCRIPT = REPO / "scripts" / "flink_local.sh"


def local_pipeline(**options) -> BeamTestPipeline:
    """A TestPipeline on the in-process runner."""
    return BeamTestPipeline(runner=LOCAL_RUNNER, **options)


@pytest.fixture(autouse=True, scope="module")
def restore_torch_threads():
    """Autouse where imported: the in-process runner's model handler sets torch's thread count for the whole
    process (``--torch_threads``); put it back so that other test modules run as they would alone."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_job(output: Path, *flags: str, input_glob: str = SAMPLE_GLOB) -> Path:
    """Runs the job through ``pipeline.run.run`` on a local TestPipeline; returns the run directory."""
    return Path(run_job_summary(output, *flags, input_glob=input_glob)["run_dir"])


def run_job_summary(output: Path, *flags: str, input_glob: str = SAMPLE_GLOB) -> dict:
    """Like ``run_job``, returning the run's summary (run_dir, counts, counters, tokens_per_s, padding_ratio).

    The tiny test model is used unless ``flags`` name another (the job's default is the trained English model).
    """
    model = [] if any(f.startswith("--model") for f in flags) else [f"--model={TINY_MODEL}"]
    argv = [f"--input={input_glob}", f"--output={output}", *model, *flags]
    result = run(argv, test_pipeline=local_pipeline(options=PipelineOptions([f"--runner={LOCAL_RUNNER}", *flags])))
    return result.summary


def sentence_vectors(run_dir: Path) -> dict[str, np.ndarray]:
    """id -> sentence vector, from every Parquet shard of a run."""
    table = pa.concat_tables(pq.read_table(f) for f in sorted((run_dir / "sentences").glob("*.parquet")))
    vectors = np.asarray(table.column("sentence_vector").combine_chunks().flatten()).reshape(table.num_rows, -1)
    return dict(zip(table.column("id").to_pylist(), vectors, strict=True))


def run_pipeline_sh(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``./run_pipeline.sh ARGS`` from the repository root, output captured (text), never raising on failure."""
    return subprocess.run(
        ["./run_pipeline.sh", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def source_runner_script(mode: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Sources ``scripts/runner_<mode>.sh ARGS`` as run_pipeline.sh does (after scripts/runner_common.sh);
    its stdout is the ``runner_flags`` it appended, one per line."""
    script = (
        f'source scripts/runner_common.sh; runner_flags=(); source scripts/runner_{mode}.sh "$@"; '
        'printf "%s\\n" "${runner_flags[@]}"'
    )
    return subprocess.run(
        ["bash", "-c", script, f"runner_{mode}", *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
