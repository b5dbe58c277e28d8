"""A DAG built from the JSON in ``ORCHESJOB_TEST_SPEC``, so a test can run any operator/sensor setup through
``airflow dags test`` / ``airflow tasks test`` without writing a DAG file of its own.

The spec::

    {"dag_id": "...", "default_args": {...}, "tasks": [
        {"task_id": "...", "kind": "operator" | "sensor", "kwargs": {...}, "upstream": ["..."]}, ...]}

``kwargs`` go to ``OrchesjobOperator`` / ``OrchesjobSensor`` as they are, except that ``execution_timeout`` and
``retry_delay`` are seconds; ``ssh_conn_id``, ``orchesjob_bin`` and ``orchesjob_home`` default to the example DAGs'
settings (the same environment variables, read here: this file imports nothing from its dags folder). ``expand``
(a list of kwargs dicts) maps the task over them.
Without the variable (any other Airflow command) this file defines no DAG.
"""

import json
import os
from datetime import timedelta
from typing import Any, Union

import pendulum

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

SSH_CONN_ID = os.environ.get("ORCHESJOB_SSH_CONN_ID", "orchesjob_ssh")
ORCHESJOB_BIN = os.environ.get("ORCHESJOB_REMOTE_BIN") or None
ORCHESJOB_HOME = os.environ.get("ORCHESJOB_REMOTE_HOME") or None

SECONDS = ("execution_timeout", "retry_delay")


def _kwargs(raw: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(raw)
    for key in SECONDS:
        if kwargs.get(key) is not None:
            kwargs[key] = timedelta(seconds=float(kwargs[key]))
    return kwargs


def build(spec: dict[str, Any]) -> Any:
    from orchesjob_provider.operators.orchesjob import OrchesjobOperator
    from orchesjob_provider.sensors.orchesjob import OrchesjobSensor

    classes: dict[str, Union[type[OrchesjobOperator], type[OrchesjobSensor]]] = {
        "operator": OrchesjobOperator,
        "sensor": OrchesjobSensor,
    }
    with DAG(
        dag_id=spec["dag_id"],
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        default_args=_kwargs(spec.get("default_args", {})),
        tags=["orchesjob", "test"],
    ) as dag:
        tasks: dict[str, Any] = {}
        for item in spec["tasks"]:
            cls = classes[item.get("kind", "operator")]
            kwargs: dict[str, Any] = {
                "ssh_conn_id": SSH_CONN_ID,
                "orchesjob_bin": ORCHESJOB_BIN,
                "orchesjob_home": ORCHESJOB_HOME,
            }
            kwargs.update(_kwargs(item.get("kwargs", {})))
            if item.get("expand") is not None:
                tasks[item["task_id"]] = cls.partial(task_id=item["task_id"], **kwargs).expand_kwargs(item["expand"])
            else:
                tasks[item["task_id"]] = cls(task_id=item["task_id"], **kwargs)
        for item in spec["tasks"]:
            for upstream in item.get("upstream", []):
                tasks[upstream] >> tasks[item["task_id"]]
    return dag


_SPEC = os.environ.get("ORCHESJOB_TEST_SPEC")
if _SPEC:
    globals()["spec_dag"] = build(json.loads(_SPEC))
