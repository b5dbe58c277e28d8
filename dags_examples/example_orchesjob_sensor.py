"""Wait for a job that something else started: here a producer DAG (or cron, or a person) runs
`orchesjob start --run-key export-DATE ...` on the host, and this DAG continues when that job SUCCEEDED."""

import pendulum

from _settings import ORCHESJOB_BIN, ORCHESJOB_HOME, SSH_CONN_ID, WORKDIR
from orchesjob_provider.operators.orchesjob import OrchesjobOperator
from orchesjob_provider.sensors.orchesjob import OrchesjobSensor

# Imported here rather than from _settings: Airflow only parses files that mention both "airflow" and "dag".
try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

with DAG(
    dag_id="example_orchesjob_producer",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["orchesjob", "example"],
):
    OrchesjobOperator(
        task_id="export",
        ssh_conn_id=SSH_CONN_ID,
        orchesjob_bin=ORCHESJOB_BIN,
        orchesjob_home=ORCHESJOB_HOME,
        run_key="export-{{ ds }}",
        command=["sh", "-c", f"mkdir -p {WORKDIR} && sleep 3 && echo exported > {WORKDIR}/export.done"],
        deferrable=False,
        poll_interval=5,
    )

with DAG(
    dag_id="example_orchesjob_sensor",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["orchesjob", "example"],
):
    OrchesjobSensor(
        task_id="wait_for_export",
        ssh_conn_id=SSH_CONN_ID,
        orchesjob_bin=ORCHESJOB_BIN,
        orchesjob_home=ORCHESJOB_HOME,
        run_key="export-{{ ds }}",
        poke_interval=5,
        timeout=600,
        soft_fail=False,
    )
