"""DAGs for the live deployment tests (tests/live): one operator task whose job script comes from the run's conf
(deferred; deferred with an execution_timeout; deferred with one retry; waiting in the worker; waiting in the worker
with one retry), and one task mapped over many jobs on several hosts (deferred).

The script is a ``dag_run.conf`` value, so every test triggers its own run (its own run id, hence its own run key)
with the job it needs, and the deployment parses this file once. The SSH connection ``orchesjob_live`` carries the
CLI's path and state directory in its extras (``orchesjob_bin``, ``orchesjob_home``).
"""

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, task

from orchesjob_provider.operators.orchesjob import OrchesjobOperator

CONN_ID = "orchesjob_live"
COMMON: dict[str, Any] = {
    "ssh_conn_id": CONN_ID,
    "command": "{{ dag_run.conf['script'] }}",
    "poll_interval": 5,
    "abort_grace_seconds": 1,
    "deferrable": True,
}

with DAG(
    dag_id="orchesjob_live",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 0},
    tags=["orchesjob", "test"],
):
    OrchesjobOperator(task_id="job", **COMMON)

with DAG(
    dag_id="orchesjob_live_timeout",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 0},
    tags=["orchesjob", "test"],
):
    OrchesjobOperator(task_id="job", execution_timeout=timedelta(seconds=25), **COMMON)

with DAG(
    dag_id="orchesjob_live_deferred_retry",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
    tags=["orchesjob", "test"],
):
    OrchesjobOperator(task_id="job", **COMMON)

with DAG(
    dag_id="orchesjob_live_polling",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 0},
    tags=["orchesjob", "test"],
):
    OrchesjobOperator(task_id="job", **{**COMMON, "deferrable": False})

with DAG(
    dag_id="orchesjob_live_retry",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    # one retry, late enough that a test sees the task instance up_for_retry before the retry runs
    default_args={"retries": 1, "retry_delay": timedelta(seconds=20)},
    tags=["orchesjob", "test"],
):
    OrchesjobOperator(task_id="job", **{**COMMON, "deferrable": False})


@task
def jobs(**context: Any) -> list[dict[str, str]]:
    """The run's jobs, one ``{"ssh_conn_id": ..., "command": ...}`` each (a host and a script)."""
    return [dict(job) for job in context["dag_run"].conf["jobs"]]


with DAG(
    dag_id="orchesjob_live_hosts",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 0},
    max_active_tasks=200,
    tags=["orchesjob", "test"],
):
    # many deferred jobs spread over hosts (the connections orchesjob_live, orchesjob_live_2, orchesjob_live_3)
    OrchesjobOperator.partial(task_id="job", poll_interval=5, abort_grace_seconds=1, deferrable=True).expand_kwargs(
        jobs()
    )
