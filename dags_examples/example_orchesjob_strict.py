"""Once ever: a daily import keyed by its date. With idempotency="strict" the key never runs twice, not even after
a failure, a cleared task or a backfill; a person decides with `orchesjob unlock --run-key daily-import-DATE`.
"""

import pendulum

from _settings import ORCHESJOB_BIN, ORCHESJOB_HOME, SSH_CONN_ID, WORKDIR
from orchesjob_provider.operators.orchesjob import OrchesjobOperator

# Imported here rather than from _settings: Airflow only parses files that mention both "airflow" and "dag".
try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

with DAG(
    dag_id="example_orchesjob_strict",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["orchesjob", "example"],
):
    OrchesjobOperator(
        task_id="daily_import",
        ssh_conn_id=SSH_CONN_ID,
        orchesjob_bin=ORCHESJOB_BIN,
        orchesjob_home=ORCHESJOB_HOME,
        run_key="daily-import-{{ ds }}",
        idempotency="strict",
        command=[
            "sh",
            "-c",
            f'mkdir -p {WORKDIR} && echo "import {{{{ ds }}}}" >> {WORKDIR}/strict.runs; echo imported',
        ],
    )
