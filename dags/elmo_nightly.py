"""Airflow DAG: the nightly incremental ELMo re-embedding (issue 13), one ``run_pipeline.sh`` call per night.

Copy or symlink this file into the Airflow ``dags/`` folder. It only shells out, so the worker needs a checkout of
this repository (``run_pipeline.sh`` creates its ``.venv`` on first use), not the project installed into Airflow's
own environment. Settings are read from the environment of the process that parses the file (the DAG processor
and, in Airflow 3, the worker too), so set them for both; docs/scheduling.md has the recipe and what a run
reads and writes.
"""

from __future__ import annotations

import os
import shlex
from datetime import datetime, timedelta

try:  # Airflow 3: the task SDK and the standard provider
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.operators.bash import BashOperator

REPO = os.environ.get("ELMO_REPO", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNNER = os.environ.get("ELMO_RUNNER", "local")  # local | flink | portable | dataflow
INPUT = os.environ.get("ELMO_INPUT", os.path.join(REPO, "sample_data", "sotu", "*"))
OUTPUT = os.environ.get("ELMO_OUTPUT", os.path.join(REPO, "output", "nightly"))
EXTRA_ARGS = os.environ.get("ELMO_EXTRA_ARGS", "")  # e.g. "--model=gs://b/models/en --project=p --region=r"
SCHEDULE = os.environ.get("ELMO_SCHEDULE", "0 2 * * *")  # cron expression or a preset such as @daily
RETRIES = int(os.environ.get("ELMO_RETRIES", "2"))

# {{ ds }} is the run's logical date. Airflow 3 (cron schedules become CronTriggerTimetable): the day the run fires,
# like cron's $(date +%F). Airflow 2 (data intervals): the start of the interval, so the run firing at 02:00 on the
# 16th has ds = the 15th. Retries and clears keep their ds, so they re-run the same dated folder and take it over.
BASH_COMMAND = " ".join(
    part
    for part in [
        f"cd {shlex.quote(REPO)} &&",
        f"./run_pipeline.sh {shlex.quote(RUNNER)}",
        f"--input={shlex.quote(INPUT)}",
        f"--output={shlex.quote(OUTPUT)}",
        EXTRA_ARGS,
        "--run_date={{ ds }}",
        "--previous_run=latest",
    ]
    if part
)

with DAG(
    dag_id="elmo_nightly",
    description="Nightly incremental ELMo re-embedding: run_pipeline.sh --run_date={{ ds }} --previous_run=latest",
    schedule=SCHEDULE,
    start_date=datetime(2025, 1, 1),
    catchup=False,  # one run for the latest interval; missed nights are not replayed one by one
    max_active_runs=1,  # never two nights at once (the job also claims each run folder with _OWNER)
    default_args={
        "owner": "elmo-beam",
        "retries": RETRIES,
        "retry_delay": timedelta(minutes=15),
        "execution_timeout": timedelta(hours=20),
    },
    tags=["elmo", "embeddings"],
    doc_md="""
### ELMo nightly re-embedding

Runs `run_pipeline.sh RUNNER --input=GLOB --output=PREFIX --run_date={{ ds }} --previous_run=latest` from the
repository (`ELMO_REPO`): sentences that the previous committed run already holds are copied, the rest are
embedded, and `<output>/LATEST` moves to `<output>/<ds>/` only after `_SUCCESS` (and only forward in date).
A failed attempt exits non-zero, leaves `LATEST` where it was, and its retry takes over the same dated folder.
Settings: environment variables `ELMO_REPO`, `ELMO_RUNNER`, `ELMO_INPUT`, `ELMO_OUTPUT`, `ELMO_EXTRA_ARGS`,
`ELMO_SCHEDULE`, `ELMO_RETRIES` (docs/scheduling.md).
""",
) as dag:
    BashOperator(task_id="embed", bash_command=BASH_COMMAND)
