"""Faults of a Celery deployment (tests/support/prod_airflow.py: two workers, Redis as the broker, PostgreSQL as the
metadata database) that run a task twice in real deployments, tried against the provider.

Each test counts the job's executions on the host (a marker file the job appends to) and checks that every line of
the job's output reaches the log of a try exactly once:

- a worker SIGKILLed (a machine lost) while its task waits on the job in the worker (``deferrable=False``): the
  scheduler fails the try once its heartbeat stops, the retry runs on the other worker and reattaches, and the job
  runs once;
- a task held by a worker past the broker's ``visibility_timeout``: Redis delivers it to a worker again while the
  first one still runs it, so two workers hold the same task instance try at once; the second worker drops the copy
  (the try runs elsewhere; the execution API would refuse to start it anyway) and the job runs once. What Airflow
  then records for the try is Airflow's (see the test);
- the scheduler restarted after a crash (SIGKILL, then started again) with tasks deferred and waiting in workers,
  and a run triggered while no scheduler ran: nothing is started twice, nothing is lost.
"""

from __future__ import annotations

import time

import pytest

from tests.support.cli import wait_until
from tests.support.live_checks import TASK, misfiled, numbered_job, repeated_or_missing, run_key
from tests.support.live_host import Host
from tests.support.prod_airflow import VISIBILITY_TIMEOUT, ProdAirflow

pytestmark = [pytest.mark.sshd, pytest.mark.airflow]


@pytest.mark.timeout(600)
def test_a_worker_killed_while_its_task_waits_leaves_the_job_to_the_retry_on_the_other_worker(
    live_airflow: ProdAirflow, live_host: Host
) -> None:
    live, host = live_airflow, live_host
    dag_id, name = "orchesjob_live_retry", "worker-killed"
    release = host.work / f"{name}.release"
    run_id = live.trigger(dag_id, {"script": numbered_job(host.work, name, 3, release, after=2)})
    try:
        ti = live.wait_state(dag_id, run_id, TASK, ["running"], timeout=120)
        job = host.wait_job(run_key(dag_id, run_id), {"RUNNING"}, timeout=60)
        live.wait_log(dag_id, run_id, TASK, 1, "[stdout] line 3", timeout=60)
        first = live.task_instance(dag_id, run_id, TASK)
        worker = live.worker_named(first["hostname"])
        live.crash(worker, start_again=False)  # the machine is gone: the worker, its task supervisor, its task
        try:
            # the scheduler fails the silent try (heartbeat timeout), the retry runs on the worker that is left
            second = live.wait_log(dag_id, run_id, TASK, 2, f"Reattached to job {job['job_id']}", timeout=300)
            assert "Started job" not in second
            retry = live.task_instance(dag_id, run_id, TASK)
            assert retry["try_number"] == 2 and retry["hostname"] not in ("", None, worker.name), retry
        finally:
            live.start_again(worker.name)
    finally:
        release.touch()
    done = live.wait_state(dag_id, run_id, TASK, ["success", "failed"], timeout=180, try_number=2)
    assert done["state"] == "success", live.diagnostics(dag_id, run_id, TASK)
    assert host.runs(name) == ["run"]
    jobs = host.jobs(run_key(dag_id, run_id))
    assert [(j["job_id"], j["status"]) for j in jobs] == [(job["job_id"], "SUCCEEDED")]
    assert ":try2:" in jobs[0]["owner"]  # the retry took the job over
    assert ti["id"] != done["id"]  # two tries (Airflow 3 gives each an id of its own)
    # the retry reattached from the start of the job's output: its log holds every line once
    assert repeated_or_missing(live.task_log(dag_id, run_id, TASK, 2), 5) == "", live.task_log(dag_id, run_id, TASK, 2)
    killed = live.task_log(dag_id, run_id, TASK, 1)
    assert "; aborting job" not in killed and "Aborted job" not in killed


@pytest.mark.timeout(600)
def test_a_task_delivered_again_while_a_worker_holds_it_runs_its_job_once(
    live_airflow: ProdAirflow, live_host: Host
) -> None:
    """deferrable=False: the worker holds the task (unacknowledged: Airflow acknowledges a Celery task when it ends)
    longer than the broker's visibility_timeout, so Redis hands the same message to a worker again."""
    live, host = live_airflow, live_host
    dag_id, name = "orchesjob_live_polling", "redelivered"
    release = host.work / f"{name}.release"
    run_id = live.trigger(dag_id, {"script": numbered_job(host.work, name, 3, release, after=2)})
    try:
        ti = live.wait_state(dag_id, run_id, TASK, ["running"], timeout=120)
        job = host.wait_job(run_key(dag_id, run_id), {"RUNNING"}, timeout=60)
        wait_until(
            lambda: sum(live.deliveries(ti["id"]).values()) >= 2,
            VISIBILITY_TIMEOUT + 120,
            step=1,
            what=lambda: f"a second delivery: {live.deliveries(ti['id'])}",
        )
        time.sleep(10)  # the second copy's start has been answered by now
    finally:
        release.touch()
    done = live.wait_state(dag_id, run_id, TASK, ["success", "failed"], timeout=180)
    assert host.runs(name) == ["run"], live.diagnostics(dag_id, run_id, TASK)
    jobs = host.jobs(run_key(dag_id, run_id))
    assert [j["job_id"] for j in jobs] == [job["job_id"]]
    log = live.task_log(dag_id, run_id, TASK, 1)
    assert log.count("Started job") == 1 and "Reattached" not in log
    if done["state"] == "success":
        assert jobs[0]["status"] == "SUCCEEDED"
        assert repeated_or_missing(log, 5) == "", log
    else:
        # Airflow's own reaction to the refused copy: see the README's table of what each fault shows
        assert jobs[0]["status"] == "ABORTED", (done, jobs)
        assert repeated_or_missing(log, 3) == "" or repeated_or_missing(log, 5) == "", log


@pytest.mark.timeout(600)
def test_a_scheduler_restart_starts_nothing_twice_and_loses_nothing(live_airflow: ProdAirflow, live_host: Host) -> None:
    """The scheduler SIGKILLed (no shutdown of its own, the harder of a restart's two forms: a SIGTERM lets it
    finish its loop first) and started again a few seconds later."""
    live, host = live_airflow, live_host
    how = "crash"
    release = host.work / f"scheduler-{how}.release"
    deferred_name, polling_name, late_name = f"sched-{how}-deferred", f"sched-{how}-polling", f"sched-{how}-late"
    deferred = live.trigger("orchesjob_live", {"script": numbered_job(host.work, deferred_name, 2, release)})
    polling = live.trigger("orchesjob_live_polling", {"script": numbered_job(host.work, polling_name, 2, release)})
    try:
        live.wait_log("orchesjob_live", deferred, TASK, 1, "[stdout] line 2", timeout=120)
        live.wait_state("orchesjob_live", deferred, TASK, ["deferred"], timeout=60)
        live.wait_log("orchesjob_live_polling", polling, TASK, 1, "[stdout] line 2", timeout=120)
        live.kill(live.components["scheduler"])
        # while no scheduler runs: a run is triggered, a job ends
        late = live.trigger("orchesjob_live", {"script": numbered_job(host.work, late_name, 2)})
        release.touch()
        time.sleep(5)  # the scenario's window, not a wait for a state: the scheduler stays down while both happen
        live.start_again("scheduler")
    finally:
        release.touch()
    runs = [("orchesjob_live", deferred, deferred_name), ("orchesjob_live_polling", polling, polling_name)]
    runs.append(("orchesjob_live", late, late_name))
    for dag_id, run_id, name in runs:
        done = live.wait_state(dag_id, run_id, TASK, ["success", "failed"], timeout=240)
        assert done["state"] == "success" and done["try_number"] == 1, live.diagnostics(dag_id, run_id, TASK)
        assert host.runs(name) == ["run"], name
        jobs = host.jobs(run_key(dag_id, run_id))
        assert [j["status"] for j in jobs] == ["SUCCEEDED"], (name, jobs)
        log = live.task_log(dag_id, run_id, TASK, 1)
        assert repeated_or_missing(log, 3, misfiled(live, run_id)) == "", (name, log[-4000:])
