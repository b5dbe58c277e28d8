"""A try resumed with the trigger event of an earlier try decides afresh, as a new try does.

Airflow 3.0.x does not clear a task instance's ``next_method``/``next_kwargs`` when a deferred try ends: the retry
does not start with ``execute`` but resumes with the earlier try's event ("the job of attempt 1 FAILED"). Read as
its own, that event would fail the retry the same way, starting nothing. Here the operator and sensor get exactly
that (try 2's context, try 1's real event from a real trigger over the real sshd) and must start attempt 2, or
reattach, or judge the job as it is now. On a live 3.0.6 deployment the same is shown in tests/live.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchesjob_provider.compat import TaskDeferred, event_of_an_earlier_try
from orchesjob_provider.hooks.orchesjob import OrchesjobHook
from orchesjob_provider.operators.orchesjob import OrchesjobOperator
from orchesjob_provider.sensors.orchesjob import OrchesjobSensor
from tests.support.operator_unit import context, drive, record_log, run_trigger, sh_job

pytestmark = [pytest.mark.timeout(120), pytest.mark.versions]


def test_the_try_an_event_belongs_to_is_read_from_its_try_number_or_request_id() -> None:
    try2 = context(try_number=2)
    assert event_of_an_earlier_try({"try_number": 1, "status": "FAILED"}, try2) == 1
    assert event_of_an_earlier_try({"request_id": "airflow:x:try1:abc"}, try2) == 1
    assert event_of_an_earlier_try({"try_number": 1, "request_id": "airflow:x:try2:abc"}, try2) == 1
    # The running try's own event (``dags test`` and ``tasks test`` reuse a try number): not stale.
    assert event_of_an_earlier_try({"try_number": 2}, try2) is None
    # A number that cannot be read, or none at all: not stale (the event is taken as the try's own).
    assert event_of_an_earlier_try({"request_id": "no try here"}, try2) is None
    assert event_of_an_earlier_try({"try_number": "x"}, try2) is None
    assert event_of_an_earlier_try({"try_number": 1}, {"ti": object()}) is None


@pytest.fixture
def hook_args(ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str) -> dict[str, Any]:
    return {"ssh_conn_id": ssh_conn_id, "orchesjob_bin": orchesjob_launcher, "orchesjob_home": orchesjob_home}


@pytest.mark.sshd
@pytest.mark.airflow
def test_a_retry_resumed_with_the_failed_tries_event_starts_attempt_2(
    hook_args: dict[str, Any], tmp_path: Path
) -> None:
    marker = tmp_path / "runs"
    flag = tmp_path / "failed-once"
    gate = tmp_path / "gate"  # attempt 1 waits for it (at most 60 s): still running when try 1 decides to defer
    command = sh_job(
        f"echo run >> {marker}; if [ ! -e {flag} ]; then touch {flag}; "
        f"n=0; while [ ! -e {gate} ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done; exit 7; fi; echo fine"
    )

    def operator() -> OrchesjobOperator:
        return OrchesjobOperator(task_id="unit_task", command=command, poll_interval=5, **hook_args)

    first = operator()
    with pytest.raises(TaskDeferred) as deferred:
        first.execute(context(try_number=1))
    gate.touch()
    stale = run_trigger(deferred.value.trigger)
    assert stale["status"] == "terminal" and stale["job"]["status"] == "FAILED" and stale["try_number"] == 1

    # Try 2 resumed with try 1's event, as Airflow 3.0.x does: not a failure of try 2, a fresh decision.
    second = operator()
    log = record_log(second)
    ctx2 = context(try_number=2)
    try:  # attempt 2 ends at once: the start may already answer with its end, or the task defers to wait for it
        result = second.execute_complete(ctx2, event=stale)
    except TaskDeferred as again:
        result = drive(second, ctx2, again)
    assert any("trigger event of try 1" in m for m in log.messages()), log.messages()
    assert marker.read_text().splitlines() == ["run", "run"]  # attempt 2 started
    assert result["status"] == "SUCCEEDED" and result["attempt_no"] == 2
    assert result["run_key"] == stale["run_key"] and result["job_id"] != stale["job_id"]  # a new attempt, same key


@pytest.mark.sshd
@pytest.mark.airflow
def test_a_retry_resumed_with_an_earlier_tries_event_reattaches_to_a_running_job(
    hook_args: dict[str, Any], tmp_path: Path
) -> None:
    """An earlier try's "timeout" event (its deadline passed, the job still runs): the retry must not take it as
    its own deadline; it reattaches and waits for the job."""
    marker = tmp_path / "runs"
    release = tmp_path / "release"
    command = sh_job(f"echo run >> {marker}; while [ ! -e {release} ]; do sleep 0.2; done; echo done")

    def operator() -> OrchesjobOperator:
        return OrchesjobOperator(task_id="unit_task", command=command, poll_interval=5, **hook_args)

    first = operator()
    with pytest.raises(TaskDeferred) as deferred:
        first.execute(context(try_number=1))
    trigger = deferred.value.trigger
    stale = trigger._event("timeout", message="the deadline passed").payload
    assert stale["try_number"] == 1

    second = operator()
    log = record_log(second)
    ctx2 = context(try_number=2)
    with pytest.raises(TaskDeferred) as again:
        second.execute_complete(ctx2, event=stale)
    assert any(m.startswith("Reattached to job") for m in log.messages()), log.messages()
    release.touch()
    result = drive(second, ctx2, again.value)
    assert result["status"] == "SUCCEEDED" and result["attempt_no"] == 1
    assert marker.read_text().splitlines() == ["run"]


@pytest.mark.sshd
@pytest.mark.airflow
def test_a_sensor_resumed_with_an_earlier_tries_event_looks_at_the_job_afresh(
    hook_args: dict[str, Any], tmp_path: Path
) -> None:
    """Try 1's event says the watched job FAILED; by try 2 a new attempt of it has SUCCEEDED: the sensor goes by
    the job as it is now, not by the old event."""
    hook = OrchesjobHook(
        hook_args["ssh_conn_id"], orchesjob_bin=hook_args["orchesjob_bin"], orchesjob_home=hook_args["orchesjob_home"]
    )
    gate = tmp_path / "gate"
    try:
        hook.start(
            "watched", sh_job(f"n=0; while [ ! -e {gate} ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done; exit 3")
        )
        sensor = OrchesjobSensor(task_id="wait", run_key="watched", poke_interval=1, timeout=60, **hook_args)
        with pytest.raises(TaskDeferred) as deferred:
            sensor.execute(context(try_number=1))
        gate.touch()
        stale = run_trigger(deferred.value.trigger)
        assert stale["status"] == "terminal" and stale["job"]["status"] == "FAILED" and stale["try_number"] == 1
        second = hook.start("watched", sh_job("echo fine"), sync=True)  # attempt 2, which succeeds
        assert second["status"] == "SUCCEEDED" and second["attempt_no"] == 2

        resumed = OrchesjobSensor(task_id="wait", run_key="watched", poke_interval=1, timeout=60, **hook_args)
        log = record_log(resumed)
        result = resumed.execute_complete(context(try_number=2), event=stale)
        assert result["status"] == "SUCCEEDED" and result["attempt_no"] == 2
        assert any("trigger event of try 1" in m for m in log.messages()), log.messages()
    finally:
        hook.close()
