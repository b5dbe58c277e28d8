"""The broker and the metadata database restarted under a live Celery deployment (tests/support/prod_airflow.py).

- Redis restarted (SIGTERM: it writes its data and exits; then started on the same port) while some tasks are
  deferred and others are queued in it, the workers frozen so that nothing takes them meanwhile: every queued task
  runs once when the workers come back, every deferred one resumes; each job ran once, each line reached the log
  once.
- PostgreSQL restarted (a fast shutdown: every session of every component is cut) while jobs are deferred: the
  triggers go on watching (their jobs live on the hosts, and the triggerer's SSH connections do not depend on the
  database), the tasks resume and succeed; nothing is aborted or failed, nothing runs twice.

Components that Airflow lets exit on such a restart are started again, as a service manager would, and named in
the test's output; the provider's promises are checked either way.
"""

from __future__ import annotations

import time

import pytest

from tests.support.live_checks import TASK, misfiled, numbered_job, repeated_or_missing, run_key
from tests.support.live_host import Host
from tests.support.prod_airflow import ProdAirflow

pytestmark = [pytest.mark.sshd, pytest.mark.airflow]

DAG = "orchesjob_live"


def check_once(live: ProdAirflow, host: Host, run_id: str, name: str, lines: int) -> None:
    done = live.wait_state(DAG, run_id, TASK, ["success", "failed"], timeout=300)
    assert done["state"] == "success" and done["try_number"] == 1, live.diagnostics(DAG, run_id, TASK)
    assert host.runs(name) == ["run"], name
    jobs = host.jobs(run_key(DAG, run_id))
    assert [j["status"] for j in jobs] == ["SUCCEEDED"], (name, jobs)
    log = live.task_log(DAG, run_id, TASK, 1)
    wrong = repeated_or_missing(log, lines, misfiled(live, run_id))
    assert wrong == "", (name, wrong, log[-4000:])
    assert "; aborting job" not in log and "Aborted job" not in log


@pytest.mark.timeout(600)
def test_redis_restarted_with_tasks_queued_and_deferred(live_airflow: ProdAirflow, live_host: Host) -> None:
    live, host = live_airflow, live_host
    release = host.work / "redis.release"
    deferred = {}
    for n in range(2):
        name = f"redis-deferred-{n}"
        deferred[name] = live.trigger(DAG, {"script": numbered_job(host.work, name, 2, release)})
    for run_id in deferred.values():
        live.wait_state(DAG, run_id, TASK, ["deferred"], timeout=120)
        live.wait_log(DAG, run_id, TASK, 1, "[stdout] line 2", timeout=120)
    before = live.running()
    workers = live.workers()
    for worker in workers:
        live.pause(worker)
    queued = {}
    try:
        for n in range(2):
            name = f"redis-queued-{n}"
            queued[name] = live.trigger(DAG, {"script": numbered_job(host.work, name, 2)})
        for run_id in queued.values():
            live.wait_state(DAG, run_id, TASK, ["queued"], timeout=120)  # sent to the broker, taken by no one
        time.sleep(2)  # the scenario's window: the messages sit in the broker a moment before it restarts
        live.redis.restart()
    finally:
        for worker in workers:
            live.resume(worker)
    release.touch()
    for name, run_id in {**deferred, **queued}.items():
        check_once(live, host, run_id, name, 3)
    exited = live.revive(before)
    print(f"components that exited with the Redis restart: {exited or 'none'}")


@pytest.mark.timeout(600)
def test_postgres_restarted_with_jobs_deferred(live_airflow: ProdAirflow, live_host: Host) -> None:
    live, host = live_airflow, live_host
    release = host.work / "postgres.release"
    runs = {}
    for n in range(3):
        name = f"pg-deferred-{n}"
        runs[name] = live.trigger(DAG, {"script": numbered_job(host.work, name, 2, release)})
    for run_id in runs.values():
        live.wait_state(DAG, run_id, TASK, ["deferred"], timeout=120)
        live.wait_log(DAG, run_id, TASK, 1, "[stdout] line 2", timeout=120)
    before = live.running()
    live.postgres.restart()
    time.sleep(15)  # the components meet the cut sessions and reconnect
    exited = live.revive(before)
    print(f"components that exited with the PostgreSQL restart: {exited or 'none'}")
    release.touch()
    for name, run_id in runs.items():
        check_once(live, host, run_id, name, 3)
    for run_id in runs.values():  # the triggers resumed: the end came through the trigger, not a new try
        log = live.task_log(DAG, run_id, TASK, 1)
        assert "[stdout] line 3" in log and "Started job" in log and "Reattached" not in log
