"""OrchesjobSensor in-process against the real sshd and CLI, in poke mode (Airflow's own sensor loop) and deferrable
mode (TaskDeferred, the trigger under asyncio, then the method it names). The example sensor DAG and the same
outcomes through ``airflow dags test`` are in test_airflow_sensor.py.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from orchesjob_provider.compat import (
    AirflowException,
    AirflowSensorTimeout,
    AirflowSkipException,
    Context,
    TaskDeferred,
)
from orchesjob_provider.hooks.orchesjob import OrchesjobHook
from orchesjob_provider.sensors.orchesjob import OrchesjobSensor
from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger
from tests.support.operator_unit import context, drive, held_job

pytestmark = [pytest.mark.timeout(120), pytest.mark.sshd, pytest.mark.airflow]


@pytest.fixture
def host(ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str):
    """The other party: whoever starts the jobs the sensor waits for (another DAG, cron, a person)."""
    hook = OrchesjobHook(ssh_conn_id, orchesjob_bin=orchesjob_launcher, orchesjob_home=orchesjob_home)
    yield hook
    hook.close()


@pytest.fixture
def make_sensor(ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str):
    def make(**kwargs: Any) -> OrchesjobSensor:
        kwargs.setdefault("task_id", "wait")
        kwargs.setdefault("poke_interval", 0.5)
        kwargs.setdefault("timeout", 60)
        kwargs.setdefault("poll_timeout", 5)
        return OrchesjobSensor(
            ssh_conn_id=ssh_conn_id, orchesjob_bin=orchesjob_launcher, orchesjob_home=orchesjob_home, **kwargs
        )

    return make


def finished(host: OrchesjobHook, run_key: str, code: int) -> dict:
    return host.start(run_key, ["sh", "-c", f"exit {code}"], sync=True)


def run_sensor(sensor: OrchesjobSensor, ctx: Context, max_deferrals: int = 10) -> Any:
    """execute, then follow deferrals (each trigger to its event) until the sensor returns or raises."""
    try:
        return sensor.execute(ctx)
    except TaskDeferred as deferred:
        current = deferred
    for _ in range(max_deferrals):
        try:
            return drive(sensor, ctx, current)
        except TaskDeferred as again:
            current = again
    raise AssertionError("the sensor kept deferring")


MODES = pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "poke"])


@MODES
def test_succeeded_job_succeeds(make_sensor, host, deferrable: bool) -> None:
    job = finished(host, "export-ok", 0)
    result = run_sensor(make_sensor(run_key="export-ok", deferrable=deferrable), context())
    if deferrable:  # poke mode returns what Airflow's own loop returns; the deferrable path returns the job
        assert result["job_id"] == job["job_id"] and result["status"] == "SUCCEEDED"


@MODES
def test_failed_job_fails_the_sensor_and_soft_fail_skips(make_sensor, host, deferrable: bool) -> None:
    finished(host, "export-bad", 3)
    with pytest.raises(AirflowException) as failure:
        run_sensor(make_sensor(run_key="export-bad", deferrable=deferrable), context())
    assert not isinstance(failure.value, AirflowSkipException)
    assert "FAILED" in str(failure.value) and "exited with code 3" in str(failure.value)

    with pytest.raises(AirflowSkipException):
        run_sensor(make_sensor(run_key="export-bad", deferrable=deferrable, soft_fail=True), context())


@MODES
def test_a_run_key_with_no_job_yet_is_waited_for(make_sensor, host, deferrable: bool) -> None:
    def producer() -> None:
        time.sleep(2)  # the scenario: the job appears 2 s after the sensor began to look (the assertion counts on it)
        host.start("export-later", ["sh", "-c", "sleep 1; echo exported"])

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    started = time.monotonic()
    sensor = make_sensor(run_key="export-later", deferrable=deferrable, poke_interval=1)
    result = run_sensor(sensor, context())
    thread.join(10)
    assert time.monotonic() - started >= 2.5  # it waited for the job to appear, then to finish
    assert sensor._job is not None and sensor._job["status"] == "SUCCEEDED"
    if deferrable:
        assert result["run_key"] == "export-later"


def test_deferrable_sensor_watches_a_running_job_without_streaming_its_logs(make_sensor, host, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    job = host.start("export-running", held_job(gate, "echo noisy"))
    sensor = make_sensor(run_key="export-running", deferrable=True)
    ctx = context()
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(ctx)
    trigger = deferred.value.trigger
    assert isinstance(trigger, OrchesjobTrigger)
    assert trigger.job_id == job["job_id"] and trigger.stream_logs is False and trigger.abort_on_kill is False
    assert trigger.shared_watcher is True
    gate.touch()
    assert drive(sensor, ctx, deferred.value)["status"] == "SUCCEEDED"


def test_sensor_with_its_own_watcher(make_sensor, host, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    job = host.start("export-own-watcher", held_job(gate, "true"))
    sensor = make_sensor(run_key="export-own-watcher", deferrable=True, shared_watcher=False)
    ctx = context()
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(ctx)
    assert deferred.value.trigger.shared_watcher is False and deferred.value.trigger.job_id == job["job_id"]
    gate.touch()
    assert drive(sensor, ctx, deferred.value)["status"] == "SUCCEEDED"


def test_sensor_by_job_id_and_unknown_job_id_fails(make_sensor, host) -> None:
    job = finished(host, "by-id", 0)
    assert run_sensor(make_sensor(job_id=job["job_id"], deferrable=True), context())["job_id"] == job["job_id"]
    with pytest.raises(AirflowException, match="not_found|no job"):
        run_sensor(make_sensor(job_id="00000000-0000-0000-0000-000000000000", deferrable=True), context())


@MODES
def test_timeout_is_honoured(make_sensor, deferrable: bool) -> None:
    started = time.monotonic()
    with pytest.raises(AirflowSensorTimeout):
        run_sensor(make_sensor(run_key="never", deferrable=deferrable, timeout=3, poke_interval=1), context())
    took = time.monotonic() - started
    assert 2.5 <= took < 20, took

    with pytest.raises(AirflowSkipException):
        run_sensor(
            make_sensor(run_key="never", deferrable=deferrable, timeout=1, poke_interval=0.5, soft_fail=True), context()
        )


def test_deferrable_timeout_counts_from_the_task_start_across_deferrals(make_sensor, host) -> None:
    """`dags test` hands a resumed sensor only the trigger's event, not its kwargs: the deadline must still hold."""
    host.start("slow-export", ["sh", "-c", "sleep 30"])
    long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=100)
    with pytest.raises(AirflowSensorTimeout):
        make_sensor(run_key="slow-export", deferrable=True, timeout=60).execute(context(started=long_ago))

    # A running job watched through the trigger: its deadline is the task's, and a timeout event fails the task.
    # (10 s left: a slow lookup under load still defers before the deadline)
    ctx = context(started=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=50))
    sensor = make_sensor(run_key="slow-export", deferrable=True, timeout=60)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(ctx)
    assert deferred.value.trigger.deadline - time.time() < 11
    with pytest.raises(AirflowSensorTimeout):
        drive(sensor, ctx, deferred.value)
    host.abort(run_key="slow-export", grace_seconds=1)


def test_trigger_without_a_job_id_waits_for_the_run_key_and_survives_a_round_trip(
    ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str, host
) -> None:
    """The trigger a deferrable sensor uses while the key has no job: serialisable, pins the job it finds."""
    import asyncio
    import json

    from tests.support.operator_unit import run_trigger

    trigger = OrchesjobTrigger(
        ssh_conn_id=ssh_conn_id,
        job_id=None,
        run_key="appears",
        orchesjob_bin=orchesjob_launcher,
        orchesjob_home=orchesjob_home,
        stream_logs=False,
        wait_for_key_interval=0.3,
        deadline=time.time() + 1.5,
    )
    path, kwargs = trigger.serialize()
    assert kwargs["job_id"] is None and kwargs["wait_for_key_interval"] == 0.3
    timed_out = run_trigger(OrchesjobTrigger(**json.loads(json.dumps(kwargs))), timeout=30)
    assert timed_out["status"] == "timeout" and timed_out["job_id"] is None
    assert "no job with run key 'appears'" in timed_out["message"]

    kwargs["deadline"] = time.time() + 30

    async def start_later() -> None:
        await asyncio.sleep(1)  # the scenario: the job appears a second after the rebuilt trigger began to look
        await asyncio.get_running_loop().run_in_executor(None, lambda: host.start("appears", ["true"]))

    async def both() -> dict:
        rebuilt = OrchesjobTrigger(**json.loads(json.dumps(kwargs)))
        starter = asyncio.ensure_future(start_later())
        gen = rebuilt.run()
        try:
            event = await asyncio.wait_for(gen.__anext__(), 30)
        finally:
            await gen.aclose()
            await starter
        return event.payload

    found = asyncio.run(both())
    assert found["status"] == "terminal" and found["job"]["status"] == "SUCCEEDED"
    assert found["job_id"] == found["job"]["job_id"] == host.status(run_key="appears")["job_id"]


def test_a_deferred_sensor_whose_trigger_starts_after_the_deadline_sees_the_job_that_succeeded(
    make_sensor, host, tmp_path: Path
) -> None:
    """The sensor deferred while the job ran; the job SUCCEEDED within the sensor's timeout, but the trigger only
    started after the deadline (a busy or restarting triggerer). The sensor succeeds: the trigger asks the host
    before it reports a timeout."""
    gate = tmp_path / "gate"
    gate_job = host.start("late-export", held_job(gate, "echo exported"))
    sensor = make_sensor(run_key="late-export", deferrable=True, timeout=12)  # room for a slow lookup and the end
    ctx = context()
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(ctx)
    trigger = deferred.value.trigger
    assert trigger.job_id == gate_job["job_id"]
    deadline = trigger.deadline
    assert deadline is not None
    gate.touch()  # the job ends now, while the sensor is deferred, well within its timeout
    host.wait(job_id=gate_job["job_id"], timeout=30)
    ended = host.status(job_id=gate_job["job_id"])
    assert ended["status"] == "SUCCEEDED" and ended["finished_at"] <= deadline, "the job must end before the deadline"
    time.sleep(max(0.0, deadline - time.time()) + 0.5)  # the triggerer gets to it only now
    result = drive(sensor, ctx, deferred.value)
    assert result["job_id"] == gate_job["job_id"] and result["status"] == "SUCCEEDED"


def test_a_sensor_by_run_key_whose_trigger_starts_late_finds_the_job_that_appeared_and_succeeded(
    make_sensor, host
) -> None:
    """No job yet when the sensor deferred; by the time its trigger starts (after the deadline) the job has been
    started and has SUCCEEDED. The trigger looks for the run key before it concludes that none had started."""
    sensor = make_sensor(run_key="late-appears", deferrable=True, timeout=8)  # a slow first lookup still defers
    ctx = context()
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(ctx)
    assert deferred.value.trigger.job_id is None
    host.start("late-appears", ["sh", "-c", "echo appeared"], sync=True)
    # the condition is the wall clock itself: the task resumes after its deadline (time.time() is what it reads)
    time.sleep(max(0.0, deferred.value.trigger.deadline - time.time()) + 0.5)
    result = drive(sensor, ctx, deferred.value)
    assert result["run_key"] == "late-appears" and result["status"] == "SUCCEEDED"


def test_a_timeout_event_for_a_job_that_ended_since_is_judged_by_the_job(make_sensor, host, tmp_path: Path) -> None:
    """The trigger saw the job running at the deadline; it ended before the task resumed. The sensor asks once
    more: a FAILED job fails the task as FAILED (not as a sensor timeout), a running one times out."""
    gate = tmp_path / "gate"
    job = host.start("ended-since", held_job(gate, "exit 5"))
    sensor = make_sensor(run_key="ended-since", deferrable=True, timeout=60)
    ctx = context()
    try:
        with pytest.raises(TaskDeferred) as deferred:
            sensor.execute(ctx)
    finally:
        gate.touch()  # the job ends only once the sensor has deferred
    event = deferred.value.trigger._event("timeout", message="the job was still RUNNING at the deadline").payload
    host.wait(job_id=job["job_id"], timeout=30)
    with pytest.raises(AirflowException) as failure:
        sensor.execute_complete(ctx, event)
    assert not isinstance(failure.value, AirflowSensorTimeout)
    assert "FAILED" in str(failure.value) and "exited with code 5" in str(failure.value)

    running = host.start("still-going", ["sleep", "30"])
    sensor = make_sensor(run_key="still-going", deferrable=True, timeout=60)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(ctx)
    event = deferred.value.trigger._event("timeout", message="the job was still RUNNING at the deadline").payload
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute_complete(ctx, event)
    host.abort(job_id=running["job_id"], grace_seconds=1)
