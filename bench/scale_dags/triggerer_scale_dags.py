"""DAGs for bench/triggerer_scale.py: N jobs on one host, deferred at once, watched three ways.

Each DAG maps one task over the commands in its run's conf (one per job), so a single run puts N task instances
into the one triggerer: ``scale_shared`` (the provider's default, one shared watcher per host),
``scale_per_trigger`` (``shared_watcher=False``: a connection and a host process per job) and ``scale_sshremotejob``
(the Airflow SSH provider's ``SSHRemoteJobOperator`` and its trigger, each polling on a connection of its own).
"""

import os
from typing import Any

import pendulum
from airflow.providers.ssh.operators.ssh_remote_job import SSHRemoteJobOperator
from airflow.sdk import DAG, task

from orchesjob_provider.operators.orchesjob import OrchesjobOperator

CONN_ID = "orchesjob_live"
ARGS: dict[str, Any] = {
    "schedule": None,
    "start_date": pendulum.datetime(2026, 1, 1, tz="UTC"),
    "catchup": False,
    "default_args": {"retries": 0},
    "max_active_tasks": 1000,
}


@task
def commands(**context: Any) -> list[str]:
    return list(context["dag_run"].conf["commands"])


with DAG(dag_id="scale_shared", **ARGS):
    OrchesjobOperator.partial(task_id="job", ssh_conn_id=CONN_ID, deferrable=True).expand(command=commands())

with DAG(dag_id="scale_per_trigger", **ARGS):
    OrchesjobOperator.partial(task_id="job", ssh_conn_id=CONN_ID, deferrable=True, shared_watcher=False).expand(
        command=commands()
    )

with DAG(dag_id="scale_sshremotejob", **ARGS):
    SSHRemoteJobOperator.partial(
        task_id="job", ssh_conn_id=CONN_ID, remote_os="posix", remote_base_dir=os.environ["BENCH_SCALE_REMOTE_DIR"]
    ).expand(command=commands())
