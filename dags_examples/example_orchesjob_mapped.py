"""Dynamic task mapping: one remote job per partition, each with its own run key, each retried on its own."""

import pendulum

from _settings import ORCHESJOB_BIN, ORCHESJOB_HOME, SSH_CONN_ID, WORKDIR
from orchesjob_provider.operators.orchesjob import OrchesjobOperator

# Imported here rather than from _settings: Airflow only parses files that mention both "airflow" and "dag".
try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

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
