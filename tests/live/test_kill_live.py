"""What becomes of a deferred task's job when Airflow kills, clears, hands over or times out the task, on a live
Airflow 3 deployment in its production shape (tests/support/prod_airflow.py: PostgreSQL, Redis, CeleryExecutor with
two workers, two triggerers, scheduler, dag-processor, api-server) and a real sshd. Each test triggers its own DAG
run through the REST API and counts the job's executions on the host.

Where a kill path asks Airflow whether the task instance still wants its job (``on_kill`` of a trigger Airflow
cancelled), the answer may not come within the provider's time limit on a loaded machine (the triggerer's
supervisor answers the question between its own database work); the job is then left running with a WARNING that
names the command that aborts it. The tests accept either answer that leaves the job alone, and never an abort.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.support.airflow_case import wait_dead
from tests.support.cli import wait_until
from tests.support.live_airflow import TRIGGERER_HEALTH_THRESHOLD, Component, LiveAirflow
from tests.support.live_checks import TASK, run_key
from tests.support.live_host import Host

pytestmark = [pytest.mark.sshd, pytest.mark.airflow]

DAG = "orchesjob_live"
# The reasons with which a kill path leaves a job running: Airflow said the task instance still wants it, or
# Airflow could not say in time (see the module docstring).
LEFT_RUNNING = ("still wants the job", "Airflow could not say")


def wait_holder(live: LiveAirflow, run_id: str, other_than: Component | None = None, timeout: float = 30) -> Component:
    """The triggerer that holds the run's trigger (one other than ``other_than``, when given)."""

    def holder() -> Component | None:
        found = live.triggerer_holding(DAG, run_id, TASK)
        return found if found is not other_than else None

    return wait_until(holder, timeout, step=0.5, what=lambda: live.diagnostics(DAG, run_id, TASK))


def start_deferred(live: LiveAirflow, host: Host, name: str, seconds: int, dag_id: str = DAG) -> tuple[str, dict]:
    """Trigger a run whose job sleeps ``seconds``; return once the task is deferred, its trigger runs in a
    triggerer (it relayed the job's first line) and its job is RUNNING.

    Waiting for the trigger matters: a task instance marked in the second between deferring and a triggerer
    picking its trigger up has its trigger deleted unstarted, and no ``on_kill`` ever runs for it (see README).
    """
    run_id = live.trigger(dag_id, {"script": host.script(name, seconds)})
    live.wait_state(dag_id, run_id, TASK, ["deferred"], timeout=120)
    live.wait_log(dag_id, run_id, TASK, 1, "[stdout] started", timeout=60)
    job = host.wait_job(run_key(dag_id, run_id), {"RUNNING"}, timeout=30)
    return run_id, job


@pytest.mark.versions
@pytest.mark.timeout(420)  # the first test also pays for starting the deployment
def test_clearing_a_deferred_task_reattaches_and_the_job_runs_once(live_airflow: LiveAirflow, live_host: Host) -> None:
    live, host = live_airflow, live_host
    run_id, job = start_deferred(live, host, "clear", 35)
    live.clear(DAG, run_id, [TASK])
    done = live.wait_state(DAG, run_id, TASK, ["success", "failed"], timeout=150, try_number=2)
    assert done["state"] == "success", live.diagnostics(DAG, run_id, TASK)
    assert host.runs("clear") == ["run"]
    jobs = host.jobs(run_key(DAG, run_id))
    assert [(j["job_id"], j["status"]) for j in jobs] == [(job["job_id"], "SUCCEEDED")]
    assert ":try2:" in jobs[0]["owner"]  # try 2 reattached and took the job over
    assert f"Reattached to job {job['job_id']}" in live.task_log(DAG, run_id, TASK, 2)
    # Airflow 3.3 usually cancels the old try's trigger "by user action" a few seconds after the clear; its on_kill
    # must then ask and leave the job alone. Sometimes (a race with its trigger cleanup) the old trigger runs on
    # and its event reaches the new try instead; then no on_kill runs at all. Either way nothing aborts the job.
    first = live.task_log(DAG, run_id, TASK, 1)
    assert "; aborting job" not in first and "aborted job" not in first
    if "invoking on_kill" in first:
        assert f"Not aborting job {job['job_id']}" in first and any(r in first for r in LEFT_RUNNING), first[-3000:]


@pytest.mark.timeout(300)
def test_a_stalled_triggerer_replaced_by_another_does_not_abort_the_job(
    live_airflow: LiveAirflow, live_host: Host
) -> None:
    live, host = live_airflow, live_host
    run_id, job = start_deferred(live, host, "stall", 600)
    pids = host.pids("stall")
    holder = wait_holder(live, run_id)
    live.pause(holder)
    try:
        wait_holder(live, run_id, other_than=holder, timeout=TRIGGERER_HEALTH_THRESHOLD + 60)
    finally:
        live.resume(holder)
    # The job runs until the resumed triggerer has given its trigger up (another one holds it now), then ends by
    # itself (its sleep is stopped: the shell says "done" and exits 0). With a fixed length instead, a takeover
    # slowed by load let the job end first and the stalled triggerer fire the end as well, never reaching on_kill.
    wait_until(
        lambda: "invoking on_kill" in live.task_log(DAG, run_id, TASK, 1, triggerer=holder),
        120,
        step=0.5,
        what=lambda: live.diagnostics(DAG, run_id, TASK),
    )
    os.kill(pids[1], signal.SIGTERM)
    done = live.wait_state(DAG, run_id, TASK, ["success", "failed"], timeout=150)
    assert done["state"] == "success", live.diagnostics(DAG, run_id, TASK)
    assert done["try_number"] == 1
    assert host.runs("stall") == ["run"]
    # Resumed, the stalled triggerer found its trigger taken away and ran on_kill, which asked and declined.
    stalled = live.task_log(DAG, run_id, TASK, 1, triggerer=holder)
    assert "invoking on_kill" in stalled and f"Not aborting job {job['job_id']}" in stalled, stalled[-3000:]
    assert any(r in stalled for r in LEFT_RUNNING) and "; aborting job" not in stalled, stalled[-3000:]
    jobs = host.jobs(run_key(DAG, run_id))
    assert [(j["job_id"], j["status"]) for j in jobs] == [(job["job_id"], "SUCCEEDED")]


@pytest.mark.timeout(240)
# On every Airflow 3 the live `versions` subset covers (both states take the same path; one is enough there).
@pytest.mark.parametrize("state", [pytest.param("failed", marks=pytest.mark.versions), "success"])
def test_marking_a_deferred_task_aborts_its_job(live_airflow: LiveAirflow, live_host: Host, state: str) -> None:
    live, host = live_airflow, live_host
    name = f"mark-{state}"
    run_id, job = start_deferred(live, host, name, 300)
    pids = host.pids(name)
    live.mark(DAG, run_id, TASK, state)
    aborted = host.wait_job(run_key(DAG, run_id), {"ABORTED"}, timeout=60)
    assert aborted["job_id"] == job["job_id"]
    assert wait_dead(pids) == []
    assert host.runs(name) == ["run"]
    assert live.task_instance(DAG, run_id, TASK)["state"] == state


@pytest.mark.timeout(600)
def test_execution_timeout_while_deferred_aborts_the_job(live_airflow: LiveAirflow, live_host: Host) -> None:
    """The trigger's deadline is 5 s before the 25 s timeout: on a loaded machine the trigger may not have relayed a
    line by then, or may start only after it (then it asks the host first), so the test waits for nothing between
    the deferral and the timeout."""
    live, host = live_airflow, live_host
    dag_id = "orchesjob_live_timeout"
    run_id = live.trigger(dag_id, {"script": host.script("timeout", 300)})
    job = host.wait_job(run_key(dag_id, run_id), {"RUNNING", "ABORTED"}, timeout=120)
    pids = host.pids("timeout", timeout=60)
    done = live.wait_state(dag_id, run_id, TASK, ["failed", "success"], timeout=180)
    assert done["state"] == "failed", live.diagnostics(dag_id, run_id, TASK)
    assert "Pausing task as DEFERRED" in live.task_log(dag_id, run_id, TASK, 1)  # it timed out while deferred
    aborted = host.wait_job(run_key(dag_id, run_id), {"ABORTED"}, timeout=30)
    assert aborted["job_id"] == job["job_id"] and "execution_timeout" in aborted["abort_reason"]
    assert wait_dead(pids) == []


@pytest.mark.timeout(240)
def test_marking_a_task_that_waits_in_the_worker_aborts_its_job(live_airflow: LiveAirflow, live_host: Host) -> None:
    """deferrable=False: Airflow's task supervisor SIGTERMs the worker, whose on_kill asks the Task SDK (from the
    signal handler, through the supervisor that is terminating it) and aborts."""
    live, host = live_airflow, live_host
    dag_id = "orchesjob_live_polling"
    run_id = live.trigger(dag_id, {"script": host.script("polling", 300)})
    live.wait_state(dag_id, run_id, TASK, ["running"], timeout=120)
    job = host.wait_job(run_key(dag_id, run_id), {"RUNNING"}, timeout=60)
    pids = host.pids("polling")
    live.mark(dag_id, run_id, TASK, "failed")
    aborted = host.wait_job(run_key(dag_id, run_id), {"ABORTED"}, timeout=60)
    assert aborted["job_id"] == job["job_id"]
    assert wait_dead(pids) == []
    log = live.wait_log(dag_id, run_id, TASK, 1, "gave the job up", timeout=30)
    assert "state failed" in log


@pytest.mark.timeout(600)
def test_clearing_a_task_that_waits_in_the_worker_reattaches(live_airflow: LiveAirflow, live_host: Host) -> None:
    """deferrable=False, cleared while running: Airflow SIGTERMs the worker with the task instance "restarting";
    on_kill leaves the job alone and the next try reattaches to it. The job runs until the retry has reattached
    (a release file), so a slow retry cannot find it ended instead (it would adopt its result)."""
    live, host = live_airflow, live_host
    dag_id = "orchesjob_live_polling"
    release = host.work / "polling-clear.release"
    runs = host.work / "polling-clear.runs"
    script = f"echo started; echo run >> {runs}; while [ ! -e {release} ]; do sleep 1; done; echo done"
    run_id = live.trigger(dag_id, {"script": script})
    try:
        live.wait_state(dag_id, run_id, TASK, ["running"], timeout=120)
        job = host.wait_job(run_key(dag_id, run_id), {"RUNNING"}, timeout=60)
        live.clear(dag_id, run_id, [TASK])
        live.wait_log(dag_id, run_id, TASK, 2, f"Reattached to job {job['job_id']}", timeout=180)
    finally:
        release.touch()
    done = live.wait_state(dag_id, run_id, TASK, ["success", "failed"], timeout=150, try_number=2)
    assert done["state"] == "success", live.diagnostics(dag_id, run_id, TASK)
    assert host.runs("polling-clear") == ["run"]
    jobs = host.jobs(run_key(dag_id, run_id))
    assert [(j["job_id"], j["status"]) for j in jobs] == [(job["job_id"], "SUCCEEDED")]
    assert "still wants the job (state restarting" in live.task_log(dag_id, run_id, TASK, 1)
    assert f"Reattached to job {job['job_id']}" in live.task_log(dag_id, run_id, TASK, 2)


@pytest.mark.timeout(300)
def test_a_triggerer_stopped_gracefully_hands_the_trigger_on_without_aborting(
    live_airflow: LiveAirflow, live_host: Host
) -> None:
    """A deploy or restart: SIGTERM to the triggerer holding the trigger. It cancels its triggers without on_kill,
    the other triggerer resumes the trigger from its saved kwargs, the task succeeds, the job ran once. A new
    triggerer is started afterwards, so the deployment keeps two."""
    live, host = live_airflow, live_host
    run_id, job = start_deferred(live, host, "restart", 30)
    holder = wait_holder(live, run_id)
    live.terminate(holder)
    try:
        wait_holder(live, run_id, other_than=holder, timeout=TRIGGERER_HEALTH_THRESHOLD + 60)
        done = live.wait_state(DAG, run_id, TASK, ["success", "failed"], timeout=150)
    finally:
        live.start_triggerer()
    assert done["state"] == "success" and done["try_number"] == 1, live.diagnostics(DAG, run_id, TASK)
    assert host.runs("restart") == ["run"]
    jobs = host.jobs(run_key(DAG, run_id))
    assert [(j["job_id"], j["status"]) for j in jobs] == [(job["job_id"], "SUCCEEDED")]
    stopped = live.task_log(DAG, run_id, TASK, 1, triggerer=holder)
    assert "[stdout] started" in stopped  # it did run the trigger ...
    assert "invoking on_kill" not in stopped and "; aborting job" not in stopped  # ... and let it go quietly


@pytest.mark.timeout(420)
def test_a_worker_stalled_past_the_heartbeat_timeout_leaves_its_job_to_the_retry(
    live_airflow: LiveAirflow, live_host: Host
) -> None:
    """deferrable=False, one retry. The task's worker stalls (its supervisor and task process SIGSTOPped) past
    Airflow's task_instance_heartbeat_timeout (30 s here): the scheduler fails the try and marks the task instance
    up_for_retry. Resumed, the supervisor hears that its task instance no longer runs and SIGTERMs the task, whose
    on_kill asks Airflow: up_for_retry means a retry is coming, so the job is left running. The retry reattaches to
    it, and the job runs once. (It used to read up_for_retry as "gave up" and abort the job; the retry then ran it a
    second time.)"""
    live, host = live_airflow, live_host
    dag_id, name = "orchesjob_live_retry", "stalled"
    release = host.work / f"{name}.release"
    script = f"echo started; echo run >> {host.work}/{name}.runs; while [ ! -e {release} ]; do sleep 1; done; echo done"
    run_id = live.trigger(dag_id, {"script": script})
    try:
        ti = live.wait_state(dag_id, run_id, TASK, ["running"], timeout=120)
        job = host.wait_job(run_key(dag_id, run_id), {"RUNNING"}, timeout=60)
        live.wait_log(dag_id, run_id, TASK, 1, "[stdout] started", timeout=60)
        stalled = live.worker_processes(ti["id"])
        for pid in stalled:
            os.kill(pid, signal.SIGSTOP)
        try:
            live.wait_state(dag_id, run_id, TASK, ["up_for_retry"], timeout=150, try_number=1)
        finally:
            for pid in stalled:
                os.kill(pid, signal.SIGCONT)
        first = live.wait_log(dag_id, run_id, TASK, 1, f"Not aborting job {job['job_id']}", timeout=60)
        assert "still wants the job (state up_for_retry" in first, first[-3000:]
        assert "; aborting job" not in first and "Aborted job" not in first
        assert host.jobs(run_key(dag_id, run_id))[-1]["status"] == "RUNNING"
        second = live.wait_log(dag_id, run_id, TASK, 2, f"Reattached to job {job['job_id']}", timeout=150)
        assert "Started job" not in second
    finally:
        release.touch()
    done = live.wait_state(dag_id, run_id, TASK, ["success", "failed"], timeout=150, try_number=2)
    assert done["state"] == "success", live.diagnostics(dag_id, run_id, TASK)
    assert host.runs(name) == ["run"]
    jobs = host.jobs(run_key(dag_id, run_id))
    assert [(j["job_id"], j["status"]) for j in jobs] == [(job["job_id"], "SUCCEEDED")]
    assert ":try2:" in jobs[0]["owner"]  # the retry took the job over
