"""Driving the operator, sensor and trigger in-process the way Airflow does, for the fine-grained tests.

The pattern (checked on Airflow 2.11 and 3.3): ``op.execute(ctx)`` raises ``TaskDeferred``; the test runs
``exc.trigger.run()`` with asyncio until its one event; then ``op.execute_complete(ctx, event.payload)``. A fresh
operator object per try, like a new worker process.

No pytest here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shlex
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from orchesjob_provider.compat import Context


class Recorder(logging.Handler):
    """Collects (monotonic time, message) of the records of one logger."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((time.monotonic(), record.getMessage()))

    def lines(self, stream: str) -> list[str]:
        prefix = f"[{stream}] "
        return [m[len(prefix) :] for _, m in self.records if m.startswith(prefix)]

    def timed(self, stream: str) -> list[tuple[float, str]]:
        prefix = f"[{stream}] "
        return [(t, m[len(prefix) :]) for t, m in self.records if m.startswith(prefix)]

    def messages(self) -> list[str]:
        return [m for _, m in self.records]


def record_log(obj: Any) -> Recorder:
    """Give an operator, sensor or trigger a plain stdlib logger we can read (Airflow 3 hands out structlog ones)."""
    recorder = Recorder()
    logger = logging.getLogger(f"orchesjob-test-{type(obj).__name__}-{id(obj)}")
    logger.handlers = [recorder]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    obj._log = logger  # LoggingMixin (Airflow 2 operators, triggers on both)
    obj._cached_logger = logger  # Airflow 3 operators and sensors (airflow.sdk's DAG node)
    return recorder


def context(
    dag_id: str = "unit_dag",
    task_id: str = "unit_task",
    run_id: str = "manual__unit",
    map_index: int = -1,
    started: dt.datetime | None = None,
    try_number: int = 1,
) -> Context:
    """The part of an Airflow context the operator and sensor read: the task instance's identity and start (a
    stand-in task instance, so the dict is only cast to Airflow's ``Context``)."""
    ti = SimpleNamespace(
        dag_id=dag_id,
        task_id=task_id,
        run_id=run_id,
        map_index=map_index,
        try_number=try_number,
        start_date=started or dt.datetime.now(dt.timezone.utc),
    )
    return cast("Context", {"ti": ti, "task_instance": ti, "run_id": run_id})


async def _first_event(trigger: Any, timeout: float) -> Any:
    gen = trigger.run()
    try:
        return await asyncio.wait_for(gen.__anext__(), timeout)
    finally:
        await gen.aclose()


def run_trigger(trigger: Any, timeout: float = 60) -> dict[str, Any]:
    """Run a trigger until its first event (as the triggerer would) and return the event's payload."""
    event = asyncio.run(_first_event(trigger, timeout))
    return event.payload


def drive(op: Any, ctx: Context, deferred: Any, timeout: float = 60) -> Any:
    """Finish a deferred try: run its trigger, then call the method it named with the event."""
    payload = run_trigger(deferred.trigger, timeout)
    method = getattr(op, deferred.method_name)
    return method(ctx, event=payload, **(deferred.kwargs or {}))


def held_job(gate: Any, script: str, before: str = "") -> list[str]:
    """A job as an argv: ``before``, then a wait for the file ``gate`` (60 s at most, so a failed test leaves
    nothing waiting), then ``script``. The test decides when the job goes on past that point, not the machine's
    speed: still running when a task decides whether to defer, or mid-job when a trigger restarts."""
    wait = f"n=0; while [ ! -e {shlex.quote(str(gate))} ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done; "
    return ["sh", "-c", before + wait + script]


async def stop_run(task: Any, gen: Any) -> None:
    """Stop a trigger's run as a triggerer restart does: cancel its pending step (``task``, awaiting
    ``gen.__anext__()``) and close the generator."""
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, StopAsyncIteration):
        pass
    await gen.aclose()


def sh_job(script: str) -> list[str]:
    """A job as an argv: ``sh -c SCRIPT`` (no remote shell parses SCRIPT; the job's own sh does)."""
    return ["sh", "-c", script]


def airflow_answers(monkeypatch: Any, answer: Any) -> None:
    """Stand in for Airflow's task-state lookup, which needs a deployment around the process (a Task SDK
    supervisor, or the metadata database) that an in-process test does not have. ``answer`` is what Airflow says,
    ``(state, try_number)``, or an exception the lookup raises. The live tests (tests/live) ask a real Airflow."""

    def lookup(identity: Any) -> Any:
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr("orchesjob_provider.give_up._lookup", lookup)
