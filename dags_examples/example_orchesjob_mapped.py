"""Dynamic task mapping: one remote job per partition, each with its own run key, each retried on its own."""

import os

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

PARTITIONS = ["eu", "us", "apac"]

with DAG(
    dag_id="example_orchesjob_mapped",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["orchesjob", "example"],
):
    OrchesjobOperator.partial(
        task_id="load_partition",
        ssh_conn_id=SSH_CONN_ID,
        orchesjob_bin=ORCHESJOB_BIN,
        orchesjob_home=ORCHESJOB_HOME,
        poll_interval=5,
    ).expand_kwargs(
        [
            {
                "run_key": f"load-{p}-{{{{ ds }}}}",
                "command": ["sh", "-c", f'mkdir -p {WORKDIR} && echo "{p}" >> {WORKDIR}/mapped.runs; echo loaded {p}'],
            }
            for p in PARTITIONS
        ]
    )
