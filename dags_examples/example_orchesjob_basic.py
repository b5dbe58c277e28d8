"""A remote job: start it over SSH, stream its output into the task log, succeed or fail with it."""

import pendulum

from _settings import ORCHESJOB_BIN, ORCHESJOB_HOME, SSH_CONN_ID, WORKDIR
from orchesjob_provider.operators.orchesjob import OrchesjobOperator

# Imported here rather than from _settings: Airflow only parses files that mention both "airflow" and "dag".
try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

with DAG(
    dag_id="example_orchesjob_basic",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["orchesjob", "example"],
):
    OrchesjobOperator(
        task_id="backup",
        ssh_conn_id=SSH_CONN_ID,
        orchesjob_bin=ORCHESJOB_BIN,
        orchesjob_home=ORCHESJOB_HOME,
        # A string runs through /bin/sh -c on the host; a list would run as an argv.
        command=(
            f'mkdir -p {WORKDIR} && echo "backup ran for {{{{ ds }}}}" >> {WORKDIR}/basic.runs && '
            'for i in 1 2 3; do echo "copying part $i"; sleep 1; done; echo done'
        ),
        env={"BACKUP_DATE": "{{ ds }}"},
        timeout=600,  # the host aborts the job after 10 minutes, with or without Airflow
        poll_interval=10,
    )
