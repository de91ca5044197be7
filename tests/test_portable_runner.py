"""The portable path (issue 6): ``run_pipeline.sh portable`` against a Beam job service with an EXTERNAL
worker pool, the arrangement used in front of any portable runner. The job service here is Beam's own Python
one (``local_job_service_main``: cheap, no JVM); tests/test_flink_cluster.py runs the same job on Flink."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.beam_testing import (
    FLINK_SCRIPT,
    REPO,
    SAMPLE_GLOB,
    TINY_MODEL,
    restore_torch_threads,  # noqa: F401  (autouse fixture)
    run_job,
    run_pipeline_sh,
    sentence_vectors,
    source_runner_script,
)
from tests.storage_servers import free_port, wait_for_port

SCRIPT = FLINK_SCRIPT


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    """A Beam job service and an EXTERNAL worker pool on 127.0.0.1; both stopped at the end."""
    bindir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),  # the pool starts a bare `python`
        "ELMO_PYTHON": sys.executable,
        "FLINK_WORKER_POOL_PORT": str(free_port()),
        "NO_GCE_CHECK": "true",
    }
    job_port = free_port()
    log = (tmp_path_factory.mktemp("job-service") / "job-service.log").open("w")
    job_service = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main", f"--port={job_port}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port(job_port, timeout=60, process=job_service)
        pool = subprocess.run(
            [str(SCRIPT), "worker-pool", "start"], cwd=REPO, env=env, capture_output=True, text=True, check=False
        )
        assert pool.returncode == 0, pool.stderr
        yield {"env": env, "job_port": job_port, "pool_port": int(env["FLINK_WORKER_POOL_PORT"])}
    finally:
        subprocess.run([str(SCRIPT), "worker-pool", "stop"], cwd=REPO, env=env, timeout=60, check=False)
        job_service.terminate()
        try:
            job_service.wait(timeout=20)
        except subprocess.TimeoutExpired:
            job_service.kill()
            job_service.wait()
        log.close()


@pytest.mark.integration
def test_run_pipeline_portable_equals_the_local_runner(services, tmp_path):
    started = time.monotonic()
    proc = run_pipeline_sh(
        "portable",
        f"--job_endpoint=127.0.0.1:{services['job_port']}",
        "--environment_type=EXTERNAL",
        f"--environment_config=127.0.0.1:{services['pool_port']}",
        f"--input={SAMPLE_GLOB}",
        f"--output={tmp_path / 'portable'}",
        f"--model={TINY_MODEL}",
        env=services["env"],
        timeout=600,
    )
    print(f"[portable test] job: {time.monotonic() - started:.1f} s\n{proc.stdout}")
    assert proc.returncode == 0, proc.stderr[-6000:]
    portable_dir = next((tmp_path / "portable").glob("run-*"))
    manifest = json.loads((portable_dir / "manifest.json").read_text())
    assert (portable_dir / "_SUCCESS").exists() and manifest["reconciled"] is True
    assert manifest["runner"] == "PortableRunner"

    local_dir = run_job(tmp_path / "local")
    assert manifest["counts"] == json.loads((local_dir / "manifest.json").read_text())["counts"]
    portable, local = sentence_vectors(portable_dir), sentence_vectors(local_dir)
    assert sorted(portable) == sorted(local)
    assert max(float(np.max(np.abs(portable[k] - local[k]))) for k in local) <= 1e-4


def test_run_pipeline_portable_starts_nothing_without_an_endpoint():
    """The runner script run_pipeline.sh sources for ``portable`` stops with status 2 and the reason."""
    proc = source_runner_script("portable", "--environment_type=LOOPBACK")
    assert proc.returncode == 2 and "--job_endpoint=HOST:PORT is required" in proc.stderr and not proc.stdout
    proc = source_runner_script("portable", "--job_endpoint=127.0.0.1:1")
    assert proc.returncode == 2 and "--environment_type is required" in proc.stderr and not proc.stdout
