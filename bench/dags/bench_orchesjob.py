"""The DAG bench/run.py measures: one remote job whose end time it knows, deferrable or polling."""

import os

import pendulum

try:
    from airflow.sdk import DAG
except ImportError:
    from airflow import DAG

from orchesjob_provider.operators.orchesjob import OrchesjobOperator

with DAG(dag_id="bench_orchesjob", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):
    OrchesjobOperator(
        task_id="job",
        ssh_conn_id="bench_ssh",
        orchesjob_bin=os.environ["ORCHESJOB_REMOTE_BIN"],
        orchesjob_home=os.environ["ORCHESJOB_REMOTE_HOME"],
        run_key="bench-{{ run_id }}-" + os.environ.get("BENCH_LABEL", "x"),
        # The job's last act is to write the time it ends; the bench compares it with the task's end.
        command=[
            "python3",
            "-c",
            "import time; time.sleep(float(%s)); print(repr(time.time()))" % os.environ.get("BENCH_JOB_SECONDS", "5"),
        ],
        deferrable=os.environ.get("BENCH_DEFERRABLE", "1") == "1",
        poll_interval=float(os.environ.get("BENCH_POLL_INTERVAL", "30")),
    )
