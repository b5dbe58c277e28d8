"""Retries that reattach. Kill the worker (or the whole Airflow) while `import` runs and let the task retry: the
retry finds the running job by its run key and waits for it; a retry after it SUCCEEDED adopts its result. The
job runs once. Only a job that FAILED is started again (attempt 2).
"""

import os
from datetime import timedelta

import pendulum

from orchesjob_provider.operators.orchesjob import OrchesjobOperator

# Imported in each DAG file: Airflow only parses files that mention both "airflow" and "dag".
try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

# Where the host is: the Airflow SSH connection and the CLI on it. Change these lines, or set the environment
# variables. Each example says this itself rather than importing a shared settings module: `airflow dags test` on
# Airflow 3.0 does not put the dags folder on sys.path, so a module next to the DAG file is not importable there.
SSH_CONN_ID = os.environ.get("ORCHESJOB_SSH_CONN_ID", "orchesjob_ssh")
# None: the provider runs `orchesjob` from the host's PATH or uploads its own copy (install_cli "auto"); or give the
# CLI's absolute path (non-login SSH commands have a short PATH), here or as the connection's `orchesjob_bin` extra.
ORCHESJOB_BIN = os.environ.get("ORCHESJOB_REMOTE_BIN") or None
# ORCHESJOB_HOME on the host; None uses the host's default (/var/lib/orchesjob for root, ~/.local/state/orchesjob).
ORCHESJOB_HOME = os.environ.get("ORCHESJOB_REMOTE_HOME") or None
# Where the demo jobs write what they did, so a reader can count executions.
WORKDIR = os.environ.get("ORCHESJOB_EXAMPLE_WORKDIR", "/tmp/orchesjob-examples")

# How many one-second batches the job runs (long enough to kill Airflow in the middle of it).
STEPS = os.environ.get("ORCHESJOB_EXAMPLE_STEPS", "8")

with DAG(
    dag_id="example_orchesjob_retry",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 3, "retry_delay": timedelta(seconds=5)},
    tags=["orchesjob", "example"],
):
    OrchesjobOperator(
        task_id="import",
        ssh_conn_id=SSH_CONN_ID,
        orchesjob_bin=ORCHESJOB_BIN,
        orchesjob_home=ORCHESJOB_HOME,
        # run_key is left to its default, airflow/<dag>/<task>/<run id>: the same for every try of this task
        # instance, different for every other one.
        command=[
            "sh",
            "-c",
            (
                f'mkdir -p {WORKDIR} && echo "import $ORCHESJOB_JOB_ID" >> {WORKDIR}/retry.runs; '
                'for i in $(seq 1 ${STEPS:-8}); do echo "imported batch $i"; sleep 1; done'
            ),
        ],
        env={"STEPS": STEPS},
        poll_interval=5,
    )
