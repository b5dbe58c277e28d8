"""Every difference between the Airflow versions we support (2.10, 2.11, 3.x), resolved in one place.

Airflow 3 moved the authoring API to ``airflow.sdk`` (its own ``AirflowException``, ``BaseHook``, ``Context`` ...)
while 2.x keeps them in ``airflow.exceptions``, ``airflow.hooks.base`` and friends. The common-compat provider
already knows which is which, so we prefer it and fall back to the 2.x paths only when it is missing or too old
(a bare Airflow 2.10). The rest of the provider imports these names from here and never from Airflow directly,
so an Airflow move means one edit in this file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Type-check against the common-compat layer, which re-exports whichever Airflow is installed. The 2.x fallback
    # below names modules that Airflow 3 no longer has, so a checker running on Airflow 3 could not follow it.
    from airflow.providers.common.compat.sdk import (
        AirflowException,
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
        AirflowTaskTimeout,
        BaseHook,
        BaseOperator,
        BaseSensorOperator,
        Context,
        TaskDeferred,
    )
else:
    try:
        from airflow.providers.common.compat.sdk import (
            AirflowException,
            AirflowFailException,
            AirflowSensorTimeout,
            AirflowSkipException,
            AirflowTaskTimeout,
            BaseHook,
            BaseOperator,
            BaseSensorOperator,
            Context,
            TaskDeferred,
        )
    except ImportError:  # pragma: no cover - only without a recent apache-airflow-providers-common-compat
        from airflow.exceptions import (
            AirflowException,
            AirflowFailException,
            AirflowSensorTimeout,
            AirflowSkipException,
            AirflowTaskTimeout,
            TaskDeferred,
        )
        from airflow.hooks.base import BaseHook
        from airflow.models.baseoperator import BaseOperator
        from airflow.sensors.base import BaseSensorOperator
        from airflow.utils.context import Context

# Triggers live in core on every version we support (the triggerer is a core component).
from airflow.triggers.base import BaseTrigger, TriggerEvent

__all__ = [
    "AirflowException",
    "AirflowFailException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "AirflowTaskTimeout",
    "BaseHook",
    "BaseOperator",
    "BaseSensorOperator",
    "BaseTrigger",
    "Context",
    "TaskDeferred",
    "TriggerEvent",
    "aget_connection",
    "aget_extra_dejson",
    "airflow_major_version",
    "default_deferrable",
    "mask_secret",
    "task_instance_state",
]


def mask_secret(value: str) -> None:
    """Register a value with Airflow's secrets masker, so the task log shows ``***`` in its place (Airflow 3:
    ``airflow.sdk.log``; 2.x: ``airflow.utils.log.secrets_masker``)."""
    try:
        from airflow.sdk.log import mask_secret as _mask
    except ImportError:
        try:
            from airflow.sdk import mask_secret as _mask  # type: ignore[attr-defined,no-redef,unused-ignore]
        except ImportError:
            from airflow.utils.log.secrets_masker import (  # type: ignore[no-redef,import-not-found,unused-ignore]
                mask_secret as _mask,
            )
    _mask(value)


async def aget_connection(conn_id: str) -> Any:
    """Look up an Airflow connection from async code (the triggerer) without blocking its event loop.

    On Airflow 3 a synchronous lookup from the event loop talks to the supervisor and can deadlock; the
    common-compat helper picks the safe call for each version. Without it (old 2.x installs) the synchronous
    lookup runs in a worker thread, which is what Airflow 2's triggerer expects anyway.
    """
    try:
        from airflow.providers.common.compat.connection import get_async_connection
    except ImportError:  # pragma: no cover - old common-compat
        from asgiref.sync import sync_to_async

        return await sync_to_async(BaseHook.get_connection)(conn_id)
    return await get_async_connection(conn_id)


async def aget_extra_dejson(conn: Any) -> dict[str, Any]:
    """The connection's extras as a dict, read without blocking the event loop (same reasons as above)."""
    try:
        from airflow.providers.common.compat.connection import get_async_extra_dejson
    except ImportError:  # pragma: no cover - old common-compat
        from asgiref.sync import sync_to_async

        return dict(await sync_to_async(lambda: conn.extra_dejson)())
    return dict(await get_async_extra_dejson(conn))


def default_deferrable() -> bool:
    """Whether our operator and sensor defer when the DAG does not say: True, unless the deployment sets
    ``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE`` in the environment (MWAA's configuration options arrive that way).

    Airflow's shipped default for ``[operators] default_deferrable`` is False, so reading it with a fallback would
    never fall back. airflow.cfg cannot tell us either: Airflow 2.11 and 3.x write every default into the airflow.cfg
    they generate on first start (``default_deferrable = false`` included), so that line says nothing about what
    the user chose, and honouring it made every such deployment wait in the worker. Waiting in the triggerer is
    what frees the worker slot, so that is the default; ``deferrable=False`` on the task (or in ``default_args``)
    turns it off.
    """
    import os

    explicit = os.environ.get("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE")
    if explicit is None or not explicit.strip():
        return True
    return explicit.strip().lower() in ("true", "1", "yes", "on", "t", "y")


def airflow_major_version() -> int:
    """The installed Airflow's major version (2 or 3)."""
    from airflow import __version__

    return int(str(__version__).split(".", 1)[0])


def task_instance_state(dag_id: str, task_id: str, run_id: str, map_index: int = -1) -> tuple[Any, int | None]:
    """What Airflow says about a task instance now: ``(state, try_number)``; the try number is None where Airflow
    does not tell it. Raises (``LookupError`` or whatever the lookup raised) when Airflow cannot say.

    Airflow 3 gives task and trigger code no database: the Task SDK asks the api-server through the process's
    supervisor (a worker's task supervisor, or the triggerer's), and its ``get_task_states`` reports states only.
    Airflow 2 lets workers and triggerers read the metadata database, which also has the try number. Blocking: call
    it from a thread (see ``orchesjob_provider.give_up``).
    """
    if airflow_major_version() >= 3:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        states = RuntimeTaskInstance.get_task_states(
            dag_id=dag_id,
            task_ids=[task_id],
            run_ids=[run_id],
            map_index=map_index,
        )
        key = task_id if map_index is None or map_index < 0 else f"{task_id}_{map_index}"
        run_states = (states or {}).get(run_id) or {}
        if key not in run_states:
            raise LookupError(f"Airflow reported no task instance {dag_id}.{key} in run {run_id}")
        return run_states[key], None
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(TaskInstance.state, TaskInstance.try_number)
            .filter(
                TaskInstance.dag_id == dag_id,
                TaskInstance.task_id == task_id,
                TaskInstance.run_id == run_id,
                TaskInstance.map_index == map_index,
            )
            .one_or_none()
        )
    if row is None:
        raise LookupError(f"no task instance {dag_id}.{task_id} (map index {map_index}) in run {run_id}")
    return row[0], None if row[1] is None else int(row[1])
