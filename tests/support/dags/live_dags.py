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
SHAPE: dict[str, Any] = {
    "schedule": None,
    "start_date": pendulum.datetime(2026, 1, 1, tz="UTC"),
    "catchup": False,
}
TAGS = ("orchesjob", "test")


def one_job(dag_id: str, default_args: dict[str, Any], **operator: Any) -> DAG:
    """A DAG of one operator task ``job`` that runs the run's ``script`` (``operator``: what differs from COMMON)."""
    with DAG(dag_id=dag_id, default_args=dict(default_args), tags=list(TAGS), **SHAPE) as dag:
        OrchesjobOperator(task_id="job", **{**COMMON, **operator})
    return dag


NO_RETRY = {"retries": 0}
live = one_job("orchesjob_live", NO_RETRY)
live_timeout = one_job("orchesjob_live_timeout", NO_RETRY, execution_timeout=timedelta(seconds=25))
live_deferred_retry = one_job("orchesjob_live_deferred_retry", {"retries": 1, "retry_delay": timedelta(seconds=1)})
live_polling = one_job("orchesjob_live_polling", NO_RETRY, deferrable=False)
# one retry, late enough that a test sees the task instance up_for_retry before the retry runs
live_retry = one_job("orchesjob_live_retry", {"retries": 1, "retry_delay": timedelta(seconds=20)}, deferrable=False)


@task
def jobs(**context: Any) -> list[dict[str, str]]:
    """The run's jobs, one ``{"ssh_conn_id": ..., "command": ...}`` each (a host and a script)."""
    return [dict(job) for job in context["dag_run"].conf["jobs"]]


with DAG(dag_id="orchesjob_live_hosts", default_args=dict(NO_RETRY), max_active_tasks=200, tags=list(TAGS), **SHAPE):
    # many deferred jobs spread over hosts (the connections orchesjob_live, orchesjob_live_2, orchesjob_live_3)
    OrchesjobOperator.partial(task_id="job", poll_interval=5, abort_grace_seconds=1, deferrable=True).expand_kwargs(
        jobs()
    )
