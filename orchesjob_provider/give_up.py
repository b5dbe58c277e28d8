"""Whether killing a task means "stop its job": the rule, and the question put to Airflow, in one place.

Airflow calls a task's (or its trigger's) ``on_kill`` in situations a user does not mean as "stop the job": clearing
a deferred task (the new try reattaches to the same job a moment later), cancelling a trigger on a triggerer that
stalled while another one took the trigger over, or killing a worker that stalled past the heartbeat timeout and
whose task instance the scheduler has meanwhile marked ``up_for_retry`` (the retry reattaches to the job). Aborting
then kills a healthy job that the task still wants, and the retry runs it a second time. So before aborting, the
kill path asks Airflow about the task instance and aborts only when the try that started (or reattached to) the job
really gave it up: its try number is unchanged (where Airflow tells it) and its state says the task instance is
over for good. A state that means "Airflow will run this task again" leaves the job to that run. When Airflow cannot
say, the job is left running and the log says how a person would abort it.

``abort --if-owner`` stays the second lock: even when this rule answers yes, the host refuses an abort from a try
that a newer try replaced as the job's owner.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import queue
import shlex
import threading
from collections.abc import Callable, Mapping
from typing import Any

from orchesjob_provider import command as cmd

# States in which the task instance still waits for its job, or will run again and reattach to it (same run key):
# running in a worker, deferred to a triggerer, queued or scheduled for a run, no state at all (just cleared),
# restarting (a running task that was cleared), up_for_retry (the try failed, a retry is coming: a worker that
# stalled past the heartbeat timeout is marked so while its job is healthy), up_for_reschedule (the same try comes
# back later) and awaiting_input (Airflow 3's human-in-the-loop wait).
STILL_WANTED: frozenset[str | None] = frozenset(
    {
        None,
        "none",
        "running",
        "deferred",
        "queued",
        "scheduled",
        "restarting",
        "up_for_retry",
        "up_for_reschedule",
        "awaiting_input",
    }
)
# States in which the task instance is over for good and nothing of Airflow will run it again: a user marked it
# failed or success, it failed with no retry left, or it will not run (skipped, upstream_failed, removed from the
# DAG). (An execution_timeout never needs this rule: the task aborts its job itself before it fails.)
GAVE_UP: frozenset[str] = frozenset({"success", "failed", "skipped", "upstream_failed", "removed"})
# States this rule gives no answer for (so nothing is aborted, and a WARNING says how to abort by hand): Airflow 2's
# deprecated "shutdown", which nothing sets any more and which could be followed by a retry or by nothing. Any state
# in neither set above (a newer Airflow's) is no answer too.
NO_ANSWER: frozenset[str] = frozenset({"shutdown"})


def _state_name(state: Any) -> str | None:
    """A state as its lower-case value: Airflow hands out enums on some paths and plain strings on others."""
    if state is None:
        return None
    return str(getattr(state, "value", state)).lower()


def gave_up(state: Any, try_number_now: int | None, try_number_of_job: int | None) -> bool | None:
    """True when the try that owns the job gave it up, False when the task instance still wants it (or will run
    again and reattach to it), None when this rule cannot tell (then nobody should abort).

    A try number that moved on means a newer try exists: it reattaches to the job (or already did), so the old try
    never gave it up on its behalf, whatever the newer try's state. A try number *behind* the job's is no state
    Airflow leaves (a restored database, a renumbered task instance): unknown. Try numbers are compared only when
    both are known: Airflow 3's Task SDK reports a task instance's state but not its try number, and there the
    state is the newest try's (a newer try running reads ``running``) and the host's owner check
    (``abort --if-owner``) is what tells a stale try from the current one.
    """
    if try_number_now is not None and try_number_of_job is not None:
        if int(try_number_now) > int(try_number_of_job):
            return False
        if int(try_number_now) < int(try_number_of_job):
            return None
    name = _state_name(state)
    if name in STILL_WANTED:
        return False
    if name in GAVE_UP:
        return True
    return None


@dataclasses.dataclass(frozen=True)
class TryIdentity:
    """One try of one task instance: what the kill path needs to ask Airflow about it later, from another process
    (the triggerer) or after the task's own state has moved on."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1
    try_number: int | None = None

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> TryIdentity:
        ti = context["ti"]
        try_number = getattr(ti, "try_number", None)
        map_index = getattr(ti, "map_index", -1)
        return cls(
            dag_id=str(ti.dag_id),
            task_id=str(ti.task_id),
            run_id=str(ti.run_id),
            map_index=-1 if map_index is None else int(map_index),
            try_number=None if try_number is None else int(try_number),
        )

    def to_kwargs(self) -> dict[str, Any]:
        """Plain JSON values, for a trigger's serialized kwargs."""
        return dataclasses.asdict(self)

    @classmethod
    def from_kwargs(cls, data: Mapping[str, Any] | None) -> TryIdentity | None:
        """Back from :meth:`to_kwargs`; None for kwargs saved before the identity was recorded, or damaged ones."""
        if not isinstance(data, Mapping):
            return None
        try:
            try_number = data.get("try_number")
            return cls(
                dag_id=str(data["dag_id"]),
                task_id=str(data["task_id"]),
                run_id=str(data["run_id"]),
                map_index=int(data.get("map_index", -1)),
                try_number=None if try_number is None else int(try_number),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def describe(self) -> str:
        where = f"{self.dag_id}.{self.task_id} run {self.run_id}"
        if self.map_index >= 0:
            where += f" map index {self.map_index}"
        return f"{where} try {self.try_number if self.try_number is not None else '?'}"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The answer of :func:`decide`: abort or not, and the line that says why (for the task's or trigger's log)."""

    abort: bool
    reason: str
    unknown: bool = False


def decide(identity: TryIdentity | None, lookup: Any) -> Verdict:
    """Turn what Airflow said (``lookup``: a ``(state, try_number)`` pair, or the exception the lookup raised) into
    a verdict. Unknown in any way means "do not abort"."""
    if identity is None:
        return Verdict(
            False, "the try that started the job is not known (a trigger saved by an older provider)", unknown=True
        )
    if isinstance(lookup, BaseException):
        return Verdict(False, f"Airflow could not say what became of {identity.describe()}: {lookup!r}", unknown=True)
    state, try_now = lookup
    answer = gave_up(state, try_now, identity.try_number)
    shown = f"state {_state_name(state)}, try {try_now if try_now is not None else '?'}"
    if answer is None:
        return Verdict(
            False, f"{identity.describe()} is in a state this provider does not know ({shown})", unknown=True
        )
    if answer:
        return Verdict(True, f"{identity.describe()} gave the job up ({shown})")
    return Verdict(False, f"{identity.describe()} still wants the job ({shown}): it was not killed for good")


# How long the kill path waits for Airflow's answer before calling it unknown. A trigger's on_kill may take 30 s
# ([triggerer] on_kill_timeout); a worker's has Airflow's 5 s between SIGTERM and SIGKILL for the answer *and* the
# abort, so it asks more briefly.
ASK_TIMEOUT = 10.0
WORKER_ASK_TIMEOUT = 3.0


def _lookup(identity: TryIdentity) -> tuple[Any, int | None]:
    from orchesjob_provider.compat import task_instance_state

    return task_instance_state(identity.dag_id, identity.task_id, identity.run_id, identity.map_index)


def _lookup_in_thread(identity: TryIdentity, deliver: Callable[[Any], None], loop: Any = None) -> None:
    """Run the lookup in a daemon thread and hand its result (or exception) to ``deliver``: a lookup that never
    returns must neither block the caller nor keep the process from exiting. ``loop``: the triggerer's event loop,
    through which the Task SDK's request travels there (see ``compat.let_thread_reach_event_loop``)."""

    def run() -> None:
        try:
            if loop is not None:
                from orchesjob_provider.compat import let_thread_reach_event_loop

                let_thread_reach_event_loop(loop)
            result: Any = _lookup(identity)
        except BaseException as exc:  # noqa: BLE001 - any failure means "Airflow cannot say"
            result = exc
        try:
            deliver(result)
        except RuntimeError:
            pass  # the caller stopped waiting and its event loop is gone

    threading.Thread(target=run, name="orchesjob-ask-airflow", daemon=True).start()


def ask(identity: TryIdentity | None, timeout: float = ASK_TIMEOUT) -> Verdict:
    """Ask Airflow, from a worker, whether ``identity`` gave its job up.

    The lookup runs in a thread of its own with a time limit: ``on_kill`` may run in a signal handler that
    interrupted the task while it was itself talking to its supervisor, and a lookup that waited for that
    conversation would wait forever. Past the limit the answer is "unknown".
    """
    if identity is None:
        return decide(None, None)
    box: queue.Queue[Any] = queue.Queue()
    _lookup_in_thread(identity, box.put)
    try:
        return decide(identity, box.get(timeout=timeout))
    except queue.Empty:
        return decide(identity, TimeoutError(f"no answer within {timeout:g}s"))


async def aask(identity: TryIdentity | None, timeout: float = ASK_TIMEOUT) -> Verdict:
    """:func:`ask` for a trigger: the blocking lookup runs in a thread, so the triggerer's event loop (which
    relays the Task SDK's requests to its supervisor) keeps turning."""
    if identity is None:
        return decide(None, None)
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any) -> None:
        if not answer.done():  # the wait may have timed out already
            answer.set_result(result)

    def deliver(result: Any) -> None:
        loop.call_soon_threadsafe(settle, result)

    _lookup_in_thread(identity, deliver, loop)
    try:
        return decide(identity, await asyncio.wait_for(answer, timeout))
    except asyncio.TimeoutError:
        return decide(identity, TimeoutError(f"no answer within {timeout:g}s"))


# The background question of :func:`warm_up`, held here (the event loop keeps only weak references to tasks).
_warm_up: asyncio.Future[Verdict] | None = None


def warm_up(identity: TryIdentity | None) -> None:
    """Put the kill path's question to Airflow once per process, early, in the background, and ignore the answer.

    An Airflow 3 triggerer answers its triggers' Task SDK requests from its supervisor process, through an
    execution API app that the supervisor builds at the first request it gets (``TriggerRunnerSupervisor.client``:
    importing and assembling the API takes seconds, 2-4 s on a quiet two-core machine, more under load, during which
    the supervisor serves nothing else). A trigger that needs no connection or variable from Airflow makes no such
    request before a kill, so the first kill in each triggerer paid for the build inside its question, and on a busy
    machine ran past ``ASK_TIMEOUT`` and left the job running. Asking once when the first trigger starts moves that
    cost to a moment when nobody waits. Nothing is decided from this answer.
    """
    global _warm_up
    if _warm_up is not None or identity is None:
        return
    _warm_up = asyncio.ensure_future(aask(identity, timeout=300))


def manual_abort_command(job_id: str, orchesjob_bin: cmd.Binary, orchesjob_home: str | None) -> str:
    """The shell command a person runs on the host to abort the job, for log lines that leave the job running."""
    words = [orchesjob_bin] if isinstance(orchesjob_bin, str) else list(orchesjob_bin)
    line = cmd.shell_line([*words, *cmd.define.abort(job_id=job_id).args])
    return f"ORCHESJOB_HOME={shlex.quote(orchesjob_home)} {line}" if orchesjob_home else line


def log_left_running(
    log: logging.Logger | Any,
    job_id: str | None,
    verdict: Verdict,
    orchesjob_bin: cmd.Binary,
    orchesjob_home: str | None,
) -> None:
    """Say that the job was left running: at WARNING when Airflow could not tell (a person may have to act), with
    the command that aborts it; at INFO when the task instance plainly still wants the job."""
    if not job_id:
        return
    if verdict.unknown:
        log.warning(
            "Not aborting job %s: %s. If the job must stop, abort it on the host: %s",
            job_id,
            verdict.reason,
            manual_abort_command(job_id, orchesjob_bin, orchesjob_home),
        )
    else:
        log.info("Not aborting job %s: %s.", job_id, verdict.reason)
