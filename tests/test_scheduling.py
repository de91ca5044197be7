"""The scheduling recipes of docs/scheduling.md, checked: the Airflow DAG loads into Airflow's ``DagBag`` and its
rendered command runs the job with the date; ``scripts/nightly.sh`` and the documented crontab line keep the exit
status and refuse a second run of one output while the first holds the lock; the Cloud Workflows snippet and the
Flex Template parameters match the job's flags.

Airflow conflicts with the project's pins, so it lives in its own virtual environment, ``build/airflow-venv``,
made on first use (about a minute with a warm pip cache) and reused while its stamp (the pins below and the Python
version) matches; ``python -m tests.test_scheduling --install`` makes it ahead of time (a CI step that installs
once). If it cannot be installed the Airflow tests fail; they never skip. Nothing here starts the real job: a
stand-in ``run_pipeline.sh`` records its arguments.
"""

from __future__ import annotations

import ast
import datetime
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DAG_FILE = REPO / "dags" / "elmo_nightly.py"
NIGHTLY = REPO / "scripts" / "nightly.sh"
DOC = REPO / "docs" / "scheduling.md"
METADATA = json.loads((REPO / "dataflow" / "metadata.json").read_text())

# Airflow's constraint files are on GitHub (not reachable from every machine), so the install pins Airflow's own
# packages and the dependencies most likely to break it; the rest resolves freely.
AIRFLOW_VERSION = "3.3.2"
AIRFLOW_PINS = (
    f"apache-airflow=={AIRFLOW_VERSION}",
    f"apache-airflow-core=={AIRFLOW_VERSION}",
    "apache-airflow-task-sdk==1.3.2",
    "apache-airflow-providers-standard==1.21.0",
    "sqlalchemy==2.1.9",
    "alembic==1.20.1",
    "pydantic==2.14.4",
    "fastapi==0.136.3",
    "pendulum==3.3.0",
    "structlog==26.1.0",
)
AIRFLOW_VENV = Path(os.environ.get("ELMO_AIRFLOW_VENV", REPO / "build" / "airflow-venv"))
INSTALL_TIMEOUT_S = 1200
RUN_DATE = "2026-03-14"

FAKE_RUN_PIPELINE = """#!/usr/bin/env bash
# Stand-in for run_pipeline.sh: records where it ran and its arguments, then sleeps and exits as told.
python3 - "$@" <<'EOF' >>"${FAKE_RECORD:?}"
import json, os, sys
print(json.dumps({"cwd": os.getcwd(), "argv": sys.argv[1:]}))
EOF
touch "${FAKE_RECORD}.started"
sleep "${FAKE_SLEEP:-0}"
exit "${FAKE_STATUS:-0}"
"""


# --- the Airflow virtual environment ----------------------------------------------------------------------


def _venv_stamp() -> Path:
    key = hashlib.sha256("\n".join([*AIRFLOW_PINS, sys.version.split()[0]]).encode()).hexdigest()[:16]
    return AIRFLOW_VENV / f".installed-airflow-{AIRFLOW_VERSION}-{key}"


def ensure_airflow_venv() -> Path:
    """The Python of ``build/airflow-venv``, made (or remade, when the pins changed) under a file lock, so that
    concurrent test runs install once. Raises ``RuntimeError`` with pip's output when the install fails."""
    python = AIRFLOW_VENV / "bin" / "python"
    AIRFLOW_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(AIRFLOW_VENV.parent / f"{AIRFLOW_VENV.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _venv_stamp().is_file() and python.is_file():
            return python
        shutil.rmtree(AIRFLOW_VENV, ignore_errors=True)
        start = time.monotonic()
        steps = [
            [sys.executable, "-m", "venv", str(AIRFLOW_VENV)],
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *AIRFLOW_PINS],
        ]
        for step in steps:
            proc = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
            if proc.returncode != 0:
                raise RuntimeError(
                    f"installing Airflow into {AIRFLOW_VENV} failed ({proc.returncode}): {' '.join(step)}\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
                )
        _venv_stamp().write_text(f"installed in {time.monotonic() - start:.0f} s\n")
        print(f"installed {' '.join(AIRFLOW_PINS)} into {AIRFLOW_VENV} in {time.monotonic() - start:.0f} s")
    return python


@pytest.fixture(scope="session")
def airflow_python() -> Path:
    try:
        return ensure_airflow_venv()
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"Airflow could not be installed, so the DAG cannot be checked:\n{e}")


# Runs inside the Airflow venv: loads the DAG file into a DagBag once per case (environment overrides) and prints
# what the tests check. The DagBag imports the file afresh each time, so each case sees its own environment.
LOADER = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    try:
        from airflow.dag_processing.dagbag import DagBag  # Airflow 3
    except ImportError:
        from airflow.models.dagbag import DagBag  # Airflow 2
    try:
        from airflow.serialization.serialized_objects import DagSerialization as Serializer
    except ImportError:
        from airflow.serialization.serialized_objects import SerializedDAG as Serializer
    import airflow

    dag_file, ds, cases = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    results = []
    for overrides in cases:
        os.environ.update(overrides)
        bag = DagBag(dag_folder=dag_file)
        result = {"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dag_ids": sorted(bag.dags)}
        dag = bag.dags.get("elmo_nightly")
        if dag is not None:
            task = dag.get_task("embed")
            back = Serializer.from_dict(Serializer.to_dict(dag))
            result.update(
                schedule=str(getattr(dag, "schedule", None) or dag.schedule_interval),
                timetable=type(dag.timetable).__name__,
                max_active_runs=dag.max_active_runs,
                catchup=dag.catchup,
                doc_md=dag.doc_md,
                retries=task.retries,
                retry_delay_s=task.retry_delay.total_seconds(),
                task_type=type(task).__name__,
                rendered=task.render_template(task.bash_command, {"ds": ds}),
                serialized_command=back.get_task("embed").bash_command,
            )
        results.append(result)
        for key in overrides:
            del os.environ[key]
    home = Path(os.environ["AIRFLOW_HOME"])
    print(json.dumps({"airflow": airflow.__version__, "results": results,
                      "home_files": sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())}))
    """
)


def _clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without this project's virtualenv and without ELMO_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ELMO_", "AIRFLOW", "VIRTUAL_ENV", "PYTHON"))}
    env.update(extra)
    return env


def _fake_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    script = path / "run_pipeline.sh"
    script.write_text(FAKE_RUN_PIPELINE)
    script.chmod(0o755)
    return path


def _records(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


@pytest.fixture(scope="module")
def loaded(airflow_python, tmp_path_factory):
    """Both DagBag loads (defaults; every setting overridden) in one Airflow process, with the measured time."""
    tmp = tmp_path_factory.mktemp("airflow")
    home = tmp / "airflow-home"
    home.mkdir()
    fake = _fake_repo(tmp / "fake repo")  # a space in every path
    custom = {
        "ELMO_REPO": str(fake),
        "ELMO_RUNNER": "dataflow",
        "ELMO_INPUT": str(tmp / "in dir" / "*.jsonl"),
        "ELMO_OUTPUT": str(tmp / "out dir"),
        "ELMO_EXTRA_ARGS": "--project=p --region=us-central1",
        "ELMO_SCHEDULE": "@daily",
        "ELMO_RETRIES": "3",
    }
    env = _clean_env(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    start = time.monotonic()
    proc = subprocess.run(
        [str(airflow_python), "-c", LOADER, str(DAG_FILE), RUN_DATE, json.dumps([{}, custom])],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=300,
    )
    seconds = time.monotonic() - start
    assert proc.returncode == 0, f"loading the DAG in Airflow failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"Airflow {out['airflow']}: two DagBag loads in {seconds:.1f} s")
    return {**out, "tmp": tmp, "fake": fake, "custom": custom, "seconds": seconds}


@pytest.mark.integration
@pytest.mark.slow
def test_dag_loads_into_the_dagbag_without_errors(loaded):
    assert loaded["airflow"] == AIRFLOW_VERSION
    default = loaded["results"][0]
    assert default["import_errors"] == {} and default["dag_ids"] == ["elmo_nightly"]
    assert default["schedule"] == "0 2 * * *" and default["timetable"] in (
        "CronTriggerTimetable",
        "CronDataIntervalTimetable",
    )
    assert default["max_active_runs"] == 1 and default["catchup"] is False
    assert default["retries"] == 2 and default["retry_delay_s"] == 15 * 60
    assert default["task_type"] == "BashOperator" and "--previous_run=latest" in default["doc_md"]
    assert default["serialized_command"].endswith("--run_date={{ ds }} --previous_run=latest")
    rendered = default["rendered"]
    assert f"--run_date={RUN_DATE}" in rendered and "--previous_run=latest" in rendered
    assert rendered.startswith(f"cd {REPO} && ./run_pipeline.sh local --input=") and "{{" not in rendered
    assert "airflow.db" not in loaded["home_files"], loaded["home_files"]  # no metadata database was needed


@pytest.mark.integration
@pytest.mark.slow
def test_the_rendered_dag_command_runs_the_job_with_the_date(loaded):
    custom = loaded["results"][1]
    assert custom["import_errors"] == {} and custom["schedule"] == "@daily" and custom["retries"] == 3
    record = loaded["tmp"] / "record.jsonl"
    proc = subprocess.run(
        ["bash", "-c", custom["rendered"]],
        env=_clean_env(FAKE_RECORD=str(record)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    [call] = _records(record)
    settings = loaded["custom"]
    assert call["cwd"] == str(loaded["fake"])
    assert call["argv"] == [
        "dataflow",
        f"--input={settings['ELMO_INPUT']}",  # the glob reaches the job unexpanded
        f"--output={settings['ELMO_OUTPUT']}",
        "--project=p",
        "--region=us-central1",
        f"--run_date={RUN_DATE}",
        "--previous_run=latest",
    ]


def test_the_dag_file_imports_only_airflow_and_the_standard_library():
    tree = ast.parse(DAG_FILE.read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots = {m.split(".")[0] for m in modules}
    assert roots <= {"__future__", "airflow", "datetime", "os", "shlex"}, roots


# --- cron: scripts/nightly.sh and the documented crontab line --------------------------------------------


@pytest.fixture
def fake(tmp_path):
    """A stand-in run_pipeline.sh and the environment the wrappers run it with."""
    repo = _fake_repo(tmp_path / "repo")
    record = tmp_path / "record.jsonl"
    env = _clean_env(
        ELMO_NIGHTLY_COMMAND=str(repo / "run_pipeline.sh"),
        FAKE_RECORD=str(record),
        XDG_RUNTIME_DIR=str(tmp_path),  # default lock folder
        HOME=str(tmp_path),
        ELMO_LOG=str(tmp_path / "nightly.log"),
    )
    return {"repo": repo, "record": record, "env": env, "tmp": tmp_path}


def _nightly(fake, *args: str, cwd=None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(NIGHTLY), *args],
        env={**fake["env"], **env},
        cwd=cwd or fake["tmp"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _start_holder(command: list[str], env: dict[str, str], cwd: Path, started: Path) -> subprocess.Popen:
    """Starts a run that holds the lock (the stand-in sleeps) and waits until the stand-in has started."""
    proc = subprocess.Popen(command, env=env, cwd=cwd, start_new_session=True, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not started.exists():
        assert proc.poll() is None, f"the first run ended early ({proc.returncode})"
        assert time.monotonic() < deadline, "the first run did not start"
        time.sleep(0.05)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the session this test started, and nothing else
    proc.communicate(timeout=30)


def _today_or_after(before: str, value: str) -> bool:
    return before <= value <= datetime.date.today().isoformat()


def test_nightly_adds_the_date_and_latest_and_is_silent_on_success(fake):
    before = datetime.date.today().isoformat()
    proc = _nightly(fake, "local", "--input=/data/*.txt", "--output=out")
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == ""
    [call] = _records(fake["record"])
    *given, run_date, previous = call["argv"]
    assert given == ["local", "--input=/data/*.txt", "--output=out"] and previous == "--previous_run=latest"
    assert run_date.startswith("--run_date=") and _today_or_after(before, run_date.removeprefix("--run_date="))
    log = (fake["tmp"] / "nightly.log").read_text()
    assert "nightly.sh start" in log and "exit status 0" in log
    # a date and a previous run given on the command line or in ELMO_RUN_DATE are kept
    _nightly(fake, "--output=out", "--run_date=2026-01-02", "--previous_run=gs://b/emb/2026-01-01")
    _nightly(fake, "--output", "out", ELMO_RUN_DATE="2026-01-05")
    calls = _records(fake["record"])
    assert calls[1]["argv"] == ["--output=out", "--run_date=2026-01-02", "--previous_run=gs://b/emb/2026-01-01"]
    assert calls[2]["argv"] == ["--output", "out", "--run_date=2026-01-05", "--previous_run=latest"]


@pytest.mark.parametrize("status", [1, 2, 3])
def test_nightly_keeps_the_jobs_exit_status_and_says_so(fake, status):
    proc = _nightly(fake, "--output=out", FAKE_STATUS=str(status))
    assert proc.returncode == status
    assert f"failed with exit status {status}" in proc.stderr and "last lines of" in proc.stderr
    assert f"exit status {status}" in (fake["tmp"] / "nightly.log").read_text()


def test_nightly_needs_an_output(fake):
    proc = _nightly(fake, "--input=x")
    assert proc.returncode == 2 and "--output PREFIX is required" in proc.stderr
    assert not fake["record"].exists()


def test_nightly_refuses_a_second_run_of_one_output_while_the_first_holds_the_lock(fake):
    tmp = fake["tmp"]
    first = _start_holder(
        [str(NIGHTLY), f"--output={tmp / 'emb'}"],
        {**fake["env"], "FAKE_SLEEP": "60"},
        tmp,
        Path(f"{fake['record']}.started"),
    )
    try:
        start = time.monotonic()
        second = _nightly(fake, "--output=./emb")  # the same output, written another way
        assert time.monotonic() - start < 10
        assert second.returncode == 75
        assert "another run of --output=./emb holds" in second.stderr and "not starting" in second.stderr
        assert len(_records(fake["record"])) == 1  # the second never started the job
        other = _nightly(fake, "--output=gs://bucket/other")  # another output is not blocked
        assert other.returncode == 0
    finally:
        _stop(first)
    assert _nightly(fake, "--output=emb").returncode == 0  # released when the first run ended


def _doc_cron_lines() -> list[str]:
    lines = [line for line in DOC.read_text().splitlines() if line.startswith("0 2 * * * ")]
    assert len(lines) == 2, lines
    return lines


def _as_cron_runs_it(line: str, repo: Path) -> str:
    """The command cron hands to /bin/sh: the schedule fields dropped, ``\\%`` unescaped, the checkout replaced."""
    command = line.split(" ", 5)[5]
    assert "%" not in command.replace("\\%", "")  # a bare % would end the command in a crontab
    return command.replace("\\%", "%").replace("/srv/elmo-beam", str(repo))


def test_the_documented_crontab_line_with_flock(fake):
    [line] = [line for line in _doc_cron_lines() if "flock -n" in line]
    command = _as_cron_runs_it(line, fake["repo"])
    env, tmp, before = fake["env"], fake["tmp"], datetime.date.today().isoformat()
    ok = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout == "" and ok.stderr == ""  # nothing for cron to mail
    [call] = _records(fake["record"])
    assert call["cwd"] == str(fake["repo"])
    assert call["argv"][:3] == ["local", "--input=/data/text/*.jsonl.gz", "--output=/data/emb"]
    assert call["argv"][4] == "--previous_run=latest"
    assert _today_or_after(before, call["argv"][3].removeprefix("--run_date="))
    failed = subprocess.run(
        ["/bin/sh", "-c", command], env={**env, "FAKE_STATUS": "3"}, capture_output=True, text=True, timeout=60
    )
    assert failed.returncode == 3 and "exit status 3" in failed.stdout
    Path(f"{fake['record']}.started").unlink()
    first = _start_holder(
        ["/bin/sh", "-c", command], {**env, "FAKE_SLEEP": "60"}, tmp, Path(f"{fake['record']}.started")
    )
    try:
        start = time.monotonic()
        second = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=60)
        assert time.monotonic() - start < 10
        assert second.returncode == 75 and "another run holds the lock" in second.stdout
    finally:
        _stop(first)
    assert (tmp / "elmo-nightly.log").is_file()  # the job's output went to the log, not to cron's mail


def test_the_documented_crontab_line_with_the_wrapper(fake):
    [line] = [line for line in _doc_cron_lines() if "scripts/nightly.sh" in line]
    command = line.split(" ", 5)[5].replace("/srv/elmo-beam", str(REPO))
    proc = subprocess.run(["/bin/sh", "-c", command], env=fake["env"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""
    [call] = _records(fake["record"])
    assert call["argv"][:3] == ["local", "--input=/data/text/*.jsonl.gz", "--output=/data/emb"]
    assert call["argv"][4] == "--previous_run=latest"


# --- Cloud Scheduler: the Workflows snippet and the Flex Template parameters --------------------------------


def _doc_workflow() -> dict:
    import yaml

    blocks = re.findall(r"^```yaml\n(.*?)^```", DOC.read_text(), flags=re.M | re.S)
    assert len(blocks) == 1
    return yaml.safe_load(blocks[0])


def test_the_documented_workflow_launches_the_flex_template_with_the_date():
    steps = {name: body for step in _doc_workflow()["main"]["steps"] for name, body in step.items()}
    launch = steps["launch"]
    assert launch["call"] == "http.post" and launch["args"]["url"].rstrip("}").endswith('"/flexTemplates:launch"')
    assert launch["args"]["auth"]["type"] == "OAuth2"
    parameters = launch["args"]["body"]["launchParameter"]["parameters"]
    declared = {p["name"] for p in METADATA["parameters"]}
    assert set(parameters) <= declared, set(parameters) - declared
    assert {"input", "output", "model", "run_date", "previous_run"} <= set(parameters)
    assert parameters["run_date"] == "${run_date}" and parameters["previous_run"] == "latest"
    run_date = next(a["run_date"] for a in steps["init"]["assign"] if "run_date" in a)
    assert "sys.now()" in run_date and "0, 10" in run_date  # YYYY-MM-DD of the execution time
    assert steps["poll"]["call"] == "http.get" and "raise" in str(steps["done"]) and steps["done"]["next"] == "wait"


NEW_PARAMETERS = {  # parameter -> (accepted values, refused values)
    "run_date": (["2026-11-25", "2024-02-29"], ["2026-13-01", "2026-1-5", "20261125", "", "latest"]),
    "previous_run": (["latest", "gs://my-bucket/emb/2026-11-24"], ["LATEST", "/data/emb", "gs://", ""]),
    "full": (["true", "false"], ["yes", "1"]),
}


def test_the_flex_template_takes_the_nightly_parameters():
    by_name = {p["name"]: p for p in METADATA["parameters"]}
    for name, (good, bad) in NEW_PARAMETERS.items():
        assert by_name[name]["isOptional"] is True and by_name[name]["helpText"]
        regexes = [re.compile(r) for r in by_name[name]["regexes"]]
        for value in good:
            assert all(r.fullmatch(value) for r in regexes), (name, value)
        for value in bad:
            assert not all(r.fullmatch(value) for r in regexes), (name, value)


def test_the_launcher_parses_the_nightly_parameters():
    from pipeline.dataflow import flex_argv
    from pipeline.options import job_parser

    base = ["--input=gs://b/t/*", "--output=gs://b/emb", "--model=gs://b/m"]
    args, _ = job_parser().parse_known_args(
        flex_argv([*base, "--run_date=2026-11-25", "--previous_run=latest", "--full=true"])
    )
    assert (args.run_date, args.previous_run, args.full) == ("2026-11-25", "latest", True)
    args, _ = job_parser().parse_known_args(flex_argv([*base, "--run_date=2026-11-25", "--full=false"]))
    assert args.full is False and args.previous_run is None


if __name__ == "__main__":  # python -m tests.test_scheduling --install: make build/airflow-venv ahead of the tests
    if sys.argv[1:] != ["--install"]:
        sys.exit("usage: python -m tests.test_scheduling --install")
    print(ensure_airflow_venv())
