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
    "airflow_version",
    "default_deferrable",
    "event_of_an_earlier_try",
    "in_a_triggerer",
    "let_thread_reach_event_loop",
    "mask_secret",
    "task_instance_state",
    "triggerer_calls_on_kill",
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
    return airflow_version()[0]


def airflow_version() -> tuple[int, int, int]:
    """The installed Airflow's version as numbers (``(3, 0, 6)``); a pre-release counts as its release."""
    import re

    from airflow import __version__

    parts = [int(p) for p in re.findall(r"\d+", str(__version__))[:3]]
    parts += [0] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def triggerer_calls_on_kill() -> bool:
    """Whether this Airflow's triggerer calls a trigger's ``on_kill`` when the task instance is marked or cleared.

    Only Airflow 3.3 and later do (they cancel such a trigger "by user action" and await its ``on_kill``). Airflow 2
    and 3.0-3.2 cancel the trigger and call only its ``cleanup()``, the same as on a triggerer shutdown or when the
    trigger moves to another triggerer, so there the trigger must tell a kill from the rest itself
    (``OrchesjobTrigger.cleanup``).
    """
    return airflow_version() >= (3, 3, 0)


def let_thread_reach_event_loop(loop: Any) -> None:
    """Let the Task SDK's calls from the current (non-event-loop) thread reach the supervisor through ``loop``.

    In a triggerer, Airflow 3.0 and 3.1 send the Task SDK's requests with asgiref's ``async_to_sync`` over a stream
    that belongs to the triggerer's event loop. ``async_to_sync`` finds that loop only from a thread that asgiref's
    own ``sync_to_async`` started; from any other thread it runs the request in a new loop of its own, where the
    stream cannot be used, and the request fails. So a thread of ours that asks Airflow first tells asgiref which
    loop is the main one, as ``sync_to_async`` does for its threads. (Airflow 3.2 and later hand the request to the
    loop themselves and ignore this.) A thread of our own, rather than ``sync_to_async``: a lookup that never
    returns must not keep the triggerer from exiting, and asgiref waits for its threads.
    """
    import os

    try:
        from asgiref.sync import SyncToAsync
    except ImportError:  # pragma: no cover - asgiref comes with every Airflow we support
        return
    SyncToAsync.threadlocal.main_event_loop = loop
    SyncToAsync.threadlocal.main_event_loop_pid = os.getpid()


def in_a_triggerer() -> bool:
    """Whether this process is an Airflow 3 triggerer's trigger runner (the Task SDK's requests go through the
    triggerer's supervisor), as opposed to ``airflow dags test`` running triggers in its own process or a test."""
    import sys

    task_runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    return type(comms).__name__ == "TriggerCommsDecoder"


def event_of_an_earlier_try(event: Any, context: Any) -> int | None:
    """The try number of a trigger event handed to a later try of its task instance, or None when the event is the
    running try's own (or no try number can be told).

    Airflow 3.0.x's ``airflow dags test`` does not clear a task instance's ``next_method``/``next_kwargs`` when a
    deferred try ends, so the retry does not start with ``execute``: it resumes with the earlier try's trigger event
    (it reads "the job of attempt 1 FAILED" and fails the same way, starting nothing). A live 3.0.6 deployment starts
    the retry afresh, and so do later versions, but an event that reaches a newer try by any path must not be taken
    for that try's own. The event names the try that deferred
    (``try_number``, or the ``:try<N>:`` of its request id); a number below the running try's means the event is
    stale, and the task should decide as a fresh try does. Equal numbers (``airflow dags test`` and ``tasks test``
    reuse them) and unknown ones are the running try's.
    """
    import re

    if not isinstance(event, dict) and not hasattr(event, "get"):
        return None
    ti = context.get("ti") if hasattr(context, "get") else None
    current = getattr(ti, "try_number", None)
    if current is None:
        return None
    of_event = event.get("try_number")
    if of_event is None:
        match = re.search(r":try(\d+):", str(event.get("request_id") or ""))
        of_event = match.group(1) if match else None
    try:
        earlier, now = int(of_event), int(current)
    except (TypeError, ValueError):
        return None
    return earlier if earlier < now else None


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
