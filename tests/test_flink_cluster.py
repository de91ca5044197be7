"""The job on a real Flink standalone cluster on 127.0.0.1 (issue 6), from a clean clone.

``scripts/flink_local.sh`` fetches Flink 1.19.3 (PyPI archives, unpacked, not installed) and builds Beam's Flink
job-server jar with Maven (cached in build/ and ~/.m2), starts a JobManager and a TaskManager with 2 slots and a
Beam EXTERNAL worker pool for the Python SDK workers; the job runs through ``FlinkRunner --flink_master`` with
parallelism 2, with the flags ``scripts/runner_flink.sh`` gives ``run_pipeline.sh flink``. Its outputs must equal
the local FnApiRunner's. Java and Maven are required: without them this test fails (it does not skip).
See docs/flink.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.beam_testing import (
    FLINK_SCRIPT,
    REPO,
    SAMPLE_DOCUMENTS,
    SAMPLE_GLOB,
    TINY_MODEL,
    restore_torch_threads,  # noqa: F401  (autouse fixture)
    run_job,
    sentence_vectors,
    source_runner_script,
)
from tests.flink_testing import RUN_JOB, flink_logs, flink_script, rest, runner_flags
from tests.storage_servers import free_port

PARALLELISM = 2


def _timed(label: str, timings: dict, fn):
    started = time.monotonic()
    try:
        return fn()
    finally:
        timings[label] = round(time.monotonic() - started, 1)
        print(f"[flink test] {label}: {timings[label]} s", flush=True)


@pytest.fixture(scope="module")
def cluster():
    """Fetches, starts and finally stops a JobManager, a TaskManager (2 slots) and the Python worker pool."""
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found on PATH: the Flink integration test needs a JDK 11/17 (java) and "
            "Maven 3 (mvn) to run Flink and build Beam's job-server jar (apt-get install openjdk-17-jdk-headless "
            "maven); see docs/flink.md"
        )
    rest_port, rpc_port, pool_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "FLINK_REST_PORT": str(rest_port),
        "FLINK_RPC_PORT": str(rpc_port),
        "FLINK_WORKER_POOL_PORT": str(pool_port),
        "ELMO_PYTHON": sys.executable,
        "NO_GCE_CHECK": "true",
    }
    timings: dict[str, float] = {}
    _timed(
        "fetch (Flink archives + job-server jar, cached after the first run)",
        timings,
        lambda: flink_script(env, "fetch", timeout=1800),
    )
    try:
        _timed(
            "start cluster", timings, lambda: flink_script(env, "start", "--taskmanagers=1", "--slots=2", timeout=300)
        )
        _timed("start worker pool", timings, lambda: flink_script(env, "worker-pool", "start", timeout=120))
        yield {"env": env, "rest_port": rest_port, "pool_port": pool_port, "timings": timings}
    except BaseException:
        print(flink_logs())
        raise
    finally:
        subprocess.run([str(FLINK_SCRIPT), "worker-pool", "stop"], cwd=REPO, env=env, timeout=60, check=False)
        subprocess.run([str(FLINK_SCRIPT), "stop"], cwd=REPO, env=env, timeout=120, check=False)


def _run_on_flink(cluster: dict, *job_flags: str) -> dict:
    """The job (tiny model, ``job_flags``) with the flags ``run_pipeline.sh flink`` adds, on the cluster; returns
    its final state and summary, or fails the test with the job's output and the Flink logs."""
    user_flags = [
        f"--flink_master=127.0.0.1:{cluster['rest_port']}",
        "--environment_type=EXTERNAL",
        f"--environment_config=127.0.0.1:{cluster['pool_port']}",
    ]
    added = runner_flags(*user_flags)
    assert "--runner=FlinkRunner" in added and f"--parallelism={PARALLELISM}" in added
    argv = [f"--model={TINY_MODEL}", *job_flags, *added, *user_flags]
    proc = subprocess.run(
        [sys.executable, "-c", RUN_JOB, *argv],
        cwd=REPO,
        env=cluster["env"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"the job failed on Flink ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}\n"
            + flink_logs()
        )
    print(proc.stdout)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("FLINK_TEST_RESULT "))
    return json.loads(line.split(" ", 1)[1])


@pytest.fixture(scope="module")
def flink_run(cluster, tmp_path_factory) -> dict:
    """The sample through FlinkRunner on the cluster; returns the final state, the run summary and timings."""
    output = tmp_path_factory.mktemp("flink")
    result = _timed(
        "job on Flink (launch + job server + run)",
        cluster["timings"],
        lambda: _run_on_flink(cluster, f"--input={SAMPLE_GLOB}", f"--output={output}"),
    )
    return {**result, "run_dir": Path(result["summary"]["run_dir"])}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    """The same job on the local FnApiRunner, the reference."""
    started = time.monotonic()
    run_dir = run_job(tmp_path_factory.mktemp("local"))
    print(f"[flink test] local FnApiRunner reference: {time.monotonic() - started:.1f} s", flush=True)
    return run_dir


@pytest.mark.integration
def test_the_job_is_done_and_its_counts_reconcile(flink_run):
    assert flink_run["state"] == "DONE"
    run_dir = flink_run["run_dir"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    counts = manifest["counts"]
    assert (run_dir / "_SUCCESS").exists()
    assert counts["documents_read"] == SAMPLE_DOCUMENTS
    assert counts["documents_read"] == counts["documents_embedded"] + counts["documents_failed"]
    assert manifest["reconciled"] is True
    assert manifest["runner"] == "FlinkRunner"
    table = pq.read_table(run_dir / "sentences")
    assert table.num_rows == counts["sentences"]
    assert sum(len(t) for t in table.column("tokens").to_pylist()) == counts["tokens"]
    counters = flink_run["summary"]["counters"]  # Beam's counters, as the Flink job server reports them
    assert counters["documents_read"] == counts["documents_read"]
    assert counters["documents_embedded"] == counts["documents_embedded"]


@pytest.mark.integration
def test_outputs_equal_the_local_runner(flink_run, local_run, cluster):
    flink_dir = flink_run["run_dir"]
    local_counts = json.loads((local_run / "manifest.json").read_text())["counts"]
    assert json.loads((flink_dir / "manifest.json").read_text())["counts"] == local_counts
    flink_vectors, local_vectors = sentence_vectors(flink_dir), sentence_vectors(local_run)
    assert sorted(flink_vectors) == sorted(local_vectors)
    worst = max(float(np.max(np.abs(flink_vectors[k] - local_vectors[k]))) for k in local_vectors)
    print(f"[flink test] max |diff| Flink vs local over {len(local_vectors)} sentence vectors: {worst:.2e}")
    assert worst <= 1e-4

    def rows(run_dir: Path, kind: str) -> dict:
        records = [json.loads(x) for f in sorted((run_dir / kind).glob("part-*")) for x in f.read_text().splitlines()]
        return {r["id"]: r for r in records}

    flink_vertex, local_vertex = rows(flink_dir, "vertex"), rows(local_run, "vertex")
    assert sorted(flink_vertex) == sorted(local_vertex)
    for key, record in local_vertex.items():
        assert flink_vertex[key]["restricts"] == record["restricts"]
        np.testing.assert_allclose(flink_vertex[key]["embedding"], record["embedding"], atol=1e-4)
    assert rows(flink_dir, "errors") == rows(local_run, "errors") == {}

    def text_columns(run_dir: Path) -> dict:
        table = pq.read_table(run_dir / "sentences", columns=["id", "doc_id", "text", "tokens", "token_starts"])
        return {r["id"]: r for r in table.to_pylist()}

    assert text_columns(flink_dir) == text_columns(local_run)
    print(f"[flink test] timings: {cluster['timings']}")


@pytest.mark.integration
def test_the_flink_rest_api_shows_the_job_ran_on_the_cluster_in_parallel(flink_run, cluster):
    port = cluster["rest_port"]
    jobs = [j for j in rest(port, "/jobs/overview")["jobs"] if j["name"].startswith("BeamApp")]
    assert [j["state"] for j in jobs] == ["FINISHED"]
    job = rest(port, f"/jobs/{jobs[0]['jid']}")
    print(
        f"[flink test] Flink job {job['jid']}: {job['state']} in {job['duration'] / 1000:.1f} s, "
        f"{len(job['vertices'])} vertices"
    )
    assert job["state"] == "FINISHED"
    assert all(v["parallelism"] >= PARALLELISM for v in job["vertices"])
    assert all(v["tasks"].get("FINISHED", 0) == v["parallelism"] for v in job["vertices"])
    # every subtask of the embedding stage ran on a TaskManager of this cluster
    embed = next(v for v in job["vertices"] if "EmbedWindows" in v["name"])
    subtasks = rest(port, f"/jobs/{job['jid']}/vertices/{embed['id']}")["subtasks"]
    assert len(subtasks) == PARALLELISM and all(s["status"] == "FINISHED" for s in subtasks)
    records = [s["metrics"]["read-records"] for s in subtasks]
    print(f"[flink test] records read by each subtask of the embedding stage: {records}")
    assert all(n > 0 for n in records)  # the data really was split between the two subtasks
    taskmanagers = {tm["id"] for tm in rest(port, "/taskmanagers")["taskmanagers"]}
    assert {s["taskmanager-id"] for s in subtasks} <= taskmanagers


def test_run_pipeline_flink_starts_nothing_without_a_master():
    """The runner script run_pipeline.sh sources for ``flink`` stops with status 2 and the reason, adding no flag
    (run_pipeline.sh itself, venv included, is run end to end by the integration tests)."""
    proc = source_runner_script("flink", "--environment_type=EXTERNAL")
    assert proc.returncode == 2 and "--flink_master=HOST:PORT is required" in proc.stderr and not proc.stdout
    proc = source_runner_script("flink", "--flink_master=127.0.0.1:1")
    assert proc.returncode == 2 and "--environment_type is required" in proc.stderr and not proc.stdout
    proc = source_runner_script("flink", "--flink_master=127.0.0.1:1", "--environment_type=EXTERNAL")
    assert proc.returncode == 2 and "needs --environment_config" in proc.stderr and not proc.stdout


@pytest.mark.integration
def test_a_nightly_day2_on_flink_carries_the_local_day1(cluster, local_run, tmp_path):
    """Issue 13 on Flink: day 1 is the local reference run; day 2 (every 10th document edited, a line inserted on
    top) runs on the cluster with --previous_run and must equal a full local day-2 run."""
    day2 = tmp_path / "day2"
    shutil.copytree(Path(SAMPLE_GLOB).parent, day2)
    lines = (day2 / "1790-washington.txt").read_text().splitlines()
    edited = [line + " The committee met on a Tuesday." if i % 10 == 3 else line for i, line in enumerate(lines)]
    (day2 / "1790-washington.txt").write_text("\n".join(["A new first line about canals.", *edited]) + "\n")
    summary = _run_on_flink(
        cluster, f"--input={day2}/*", f"--output={tmp_path / 'flink'}", f"--previous_run={local_run}"
    )["summary"]
    counts = summary["counts"]
    assert summary["previous_run"]["mode"] == "incremental" and summary["reconciled"]
    assert 0 < counts["sentences_embedded"] < counts["sentences"] / 4 and counts["sentences_carried"] > 0
    full = run_job(tmp_path / "full", input_glob=f"{day2}/*")
    got, want = sentence_vectors(Path(summary["run_dir"])), sentence_vectors(full)
    assert sorted(got) == sorted(want)
    assert max(float(np.max(np.abs(got[k] - want[k]))) for k in want) <= 1e-4
