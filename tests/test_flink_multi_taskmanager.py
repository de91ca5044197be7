"""The job on a Flink cluster of 2 TaskManagers x 1 slot, the layout of any multi-machine cluster (issue 12).

Before the fix the sample never finished there: both TaskManagers asked the one worker pool for SDK workers with
the same ids, and Beam's pool then killed one TaskManager's worker when the other released its own
(``pipeline/worker_pool.py``). The job runs in the background with a bounded wait: if it is not done in time the
test fails with the Flink job state and the stages that are stuck (status, records read per subtask, TaskManager),
then cancels it. It must spread over both TaskManagers and equal the local runner's output. Tiny test model and
the sample, so that CI pays ~30 s for the cluster and ~2-3 min for the job. See docs/flink.md.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
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
)
from tests.flink_testing import RUN_JOB, flink_logs, flink_script, rest, runner_flags
from tests.storage_servers import free_port

TASKMANAGERS = 2
SLOTS = 1
JOB_DEADLINE_S = float(os.environ.get("ELMO_FLINK_JOB_DEADLINE_S", "600"))  # launch to DONE; ~150-200 s here


@pytest.fixture(scope="module")
def cluster():
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found on PATH: the Flink tests need a JDK and Maven (docs/flink.md)")
    rest_port, rpc_port, pool_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "FLINK_REST_PORT": str(rest_port),
        "FLINK_RPC_PORT": str(rpc_port),
        "FLINK_WORKER_POOL_PORT": str(pool_port),
        "ELMO_PYTHON": sys.executable,
        "NO_GCE_CHECK": "true",
    }
    started = time.monotonic()
    flink_script(env, "fetch", timeout=1800)
    try:
        flink_script(env, "start", f"--taskmanagers={TASKMANAGERS}", f"--slots={SLOTS}", timeout=300)
        flink_script(env, "worker-pool", "start", timeout=120)
        print(f"[flink 2TM test] cluster + worker pool up in {time.monotonic() - started:.1f} s", flush=True)
        yield {"env": env, "rest_port": rest_port, "pool_port": pool_port}
    except BaseException:
        print(flink_logs())
        raise
    finally:
        subprocess.run([str(FLINK_SCRIPT), "worker-pool", "stop"], cwd=REPO, env=env, timeout=60, check=False)
        subprocess.run([str(FLINK_SCRIPT), "stop"], cwd=REPO, env=env, timeout=120, check=False)


def _beam_jobs(port: int) -> list[dict]:
    try:
        return [j for j in rest(port, "/jobs/overview")["jobs"] if j["name"].startswith("BeamApp")]
    except OSError:
        return []


def job_report(port: int, jid: str) -> str:
    """The job's state and every stage not FINISHED: status, records read by each subtask and on which
    TaskManager: what a hang looks like."""
    job = rest(port, f"/jobs/{jid}")
    lines = [f"Flink job {jid}: {job['state']} after {job['duration'] / 1000:.0f} s"]
    waiting = [v for v in job["vertices"] if v["status"] == "CREATED"]
    if waiting:
        lines.append(f"  {len(waiting)} stages CREATED (not scheduled yet), e.g. {waiting[-1]['name'][:100]}")
    for vertex in job["vertices"]:
        if vertex["status"] in ("FINISHED", "CREATED"):
            continue
        subtasks = rest(port, f"/jobs/{jid}/vertices/{vertex['id']}").get("subtasks", [])
        detail = ", ".join(
            f"#{s['subtask']} {s['status']} read {s['metrics']['read-records']} on {s.get('taskmanager-id', '?')}"
            for s in subtasks
        )
        lines.append(f"  {vertex['status']:9s} {vertex['name'][:140]}\n      {detail}")
    return "\n".join(lines)


def _cancel(port: int, jid: str) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/jobs/{jid}?mode=cancel", method="PATCH")
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except OSError:
        pass


def run_bounded(argv: list[str], env: dict, port: int, deadline_s: float) -> tuple[subprocess.CompletedProcess, str]:
    """Runs the job (RUN_JOB) in the background; fails the test with ``job_report`` when it is not done within
    ``deadline_s``. Returns the finished process and the Flink job id."""
    before = {j["jid"] for j in _beam_jobs(port)}
    log = Path(env.get("TMPDIR", "/tmp")) / f"flink-2tm-{os.getpid()}-{time.time_ns()}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", RUN_JOB, *argv],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: the job server it starts goes with it
        )
        started, jid = time.monotonic(), None
        while proc.poll() is None:
            if jid is None:
                jid = next((j["jid"] for j in _beam_jobs(port) if j["jid"] not in before), None)
            if time.monotonic() - started > deadline_s:
                report = job_report(port, jid) if jid else "no Flink job was submitted"
                if jid:
                    _cancel(port, jid)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                pytest.fail(
                    f"the job did not finish within {deadline_s:.0f} s on {TASKMANAGERS} TaskManagers:\n{report}\n"
                    f"--- launcher output (last lines)\n{log.read_text()[-3000:]}\n{flink_logs(20)}"
                )
            time.sleep(2)
    output = log.read_text()
    log.unlink()
    print(f"[flink 2TM test] job launch to result: {time.monotonic() - started:.1f} s", flush=True)
    if proc.returncode != 0:
        report = job_report(port, jid) if jid else ""
        pytest.fail(f"the job failed on Flink ({proc.returncode}):\n{output[-5000:]}\n{report}\n{flink_logs()}")
    jid = jid or next(j["jid"] for j in _beam_jobs(port) if j["jid"] not in before)
    return subprocess.CompletedProcess(proc.args, 0, output, ""), jid


@pytest.fixture(scope="module")
def flink_run(cluster, tmp_path_factory) -> dict:
    user_flags = [
        f"--flink_master=127.0.0.1:{cluster['rest_port']}",
        "--environment_type=EXTERNAL",
        f"--environment_config=127.0.0.1:{cluster['pool_port']}",
    ]
    argv = [
        f"--input={SAMPLE_GLOB}",
        f"--output={tmp_path_factory.mktemp('flink2tm')}",
        f"--model={TINY_MODEL}",
        *runner_flags(*user_flags),
        *user_flags,
    ]
    proc, jid = run_bounded(argv, cluster["env"], cluster["rest_port"], JOB_DEADLINE_S)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("FLINK_TEST_RESULT "))
    result = json.loads(line.split(" ", 1)[1])
    return {**result, "run_dir": Path(result["summary"]["run_dir"]), "jid": jid}


@pytest.mark.integration
def test_the_job_finishes_on_two_taskmanagers_and_equals_the_local_runner(flink_run, tmp_path):
    assert flink_run["state"] == "DONE"
    run_dir = flink_run["run_dir"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert (run_dir / "_SUCCESS").exists() and manifest["reconciled"] is True
    assert manifest["counts"]["documents_read"] == SAMPLE_DOCUMENTS == manifest["counts"]["documents_embedded"]
    local = run_job(tmp_path / "local")
    assert json.loads((local / "manifest.json").read_text())["counts"] == manifest["counts"]
    got, want = sentence_vectors(run_dir), sentence_vectors(local)
    assert sorted(got) == sorted(want)
    worst = max(float(np.max(np.abs(got[k] - want[k]))) for k in want)
    print(f"[flink 2TM test] max |diff| vs local over {len(want)} sentence vectors: {worst:.2e}")
    assert worst <= 1e-4
    for kind in ("vertex", "errors"):
        mine = sorted(x for f in (run_dir / kind).glob("part-*") for x in f.read_text().splitlines())
        theirs = sorted(x for f in (local / kind).glob("part-*") for x in f.read_text().splitlines())
        assert [json.loads(x)["id"] for x in mine] == [json.loads(x)["id"] for x in theirs]
    assert not any("beam-temp" in str(p) for p in run_dir.rglob("*"))


@pytest.mark.integration
def test_the_job_ran_on_both_taskmanagers(flink_run, cluster):
    port, jid = cluster["rest_port"], flink_run["jid"]
    taskmanagers = {tm["id"] for tm in rest(port, "/taskmanagers")["taskmanagers"]}
    assert len(taskmanagers) == TASKMANAGERS
    job = rest(port, f"/jobs/{jid}")
    assert job["state"] == "FINISHED", job_report(port, jid)
    embed = next(v for v in job["vertices"] if "EmbedWindows" in v["name"])
    subtasks = rest(port, f"/jobs/{jid}/vertices/{embed['id']}")["subtasks"]
    placement = {s["taskmanager-id"]: s["metrics"]["read-records"] for s in subtasks}
    print(f"[flink 2TM test] embedding stage, records read per TaskManager: {placement}")
    assert set(placement) == taskmanagers  # one subtask on each TaskManager
    assert all(n > 0 for n in placement.values())  # and each really embedded part of the input
