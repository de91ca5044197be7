"""Helpers of the Flink tests (tests/test_flink_cluster.py, tests/test_flink_multi_taskmanager.py): the local
cluster script, its REST API and logs, and the flags ``run_pipeline.sh flink`` adds."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest

from tests.beam_testing import FLINK_SCRIPT, REPO, source_runner_script

# the job as run_pipeline.sh runs it, reporting the final state too
RUN_JOB = """
import json, sys
from pipeline.run import run
result = run(sys.argv[1:])
print("FLINK_TEST_RESULT " + json.dumps({"state": str(result.state), "summary": result.summary}, default=str))
"""


def flink_script(env: dict, *args: str, timeout: float) -> str:
    """``scripts/flink_local.sh ARGS``; its stdout, or the test fails with its stderr."""
    proc = subprocess.run(
        [str(FLINK_SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/flink_local.sh {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


def rest(port: int, path: str) -> dict:
    """GET ``path`` of the Flink REST API on 127.0.0.1:``port``, as JSON."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.load(response)


def flink_logs(lines: int = 40) -> str:
    """The last lines of the JobManager, TaskManager and worker pool logs, for failure messages."""
    logs = sorted((REPO / "build" / "flink-run" / "log").glob("*.log"))
    return "\n".join(
        f"--- {log} (last {lines} lines)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        for log in logs
    )


def runner_flags(*args: str) -> list[str]:
    """The flags ``run_pipeline.sh flink ARGS`` adds (scripts/runner_flink.sh)."""
    proc = source_runner_script("flink", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()
