"""A retry of a deferred task whose job failed, on a live deployment: the retry starts attempt 2 and succeeds.

Airflow 3.0.x's ``airflow dags test`` resumes such a retry with the failed try's own trigger event (it keeps
``next_method``/``next_kwargs`` on the task instance), and the provider tells that event from the retry's own
(tests/provider/test_stale_event_unit.py, and the example DAGs' retries through ``dags test`` on 3.0.6). Here a
live deployment's retry shows the whole path (worker, triggerer, scheduler) on every Airflow 3 the live tests run.
"""

from __future__ import annotations

import pytest

from tests.support.live_airflow import LiveAirflow
from tests.support.live_host import Host

pytestmark = [pytest.mark.sshd, pytest.mark.airflow, pytest.mark.versions]

DAG = "orchesjob_live_deferred_retry"
TASK = "job"


@pytest.mark.timeout(420)  # the first test of a session also pays for starting the deployment
def test_the_retry_of_a_deferred_task_whose_job_failed_starts_attempt_2(
    live_airflow: LiveAirflow, live_host: Host
) -> None:
    live, host = live_airflow, live_host
    flag = host.work / "deferred-retry.failed-once"
    runs = host.work / "deferred-retry.runs"
    gate = host.work / "deferred-retry.gate"
    # Attempt 1 fails once the test opens the gate (so only after the task deferred and its trigger watches the
    # job; at most 2 minutes), attempt 2 succeeds.
    script = (
        f"echo run >> {runs}; echo started; if [ ! -e {flag} ]; then touch {flag}; "
        f"n=0; while [ ! -e {gate} ] && [ $n -lt 600 ]; do sleep 0.2; n=$((n+1)); done; echo failing >&2; exit 3; fi; "
        "echo fine"
    )
    run_id = live.trigger(DAG, {"script": script})
    live.wait_state(DAG, run_id, TASK, ["deferred"], timeout=180)
    live.wait_log(DAG, run_id, TASK, 1, "[stdout] started", timeout=120)
    gate.touch()
    done = live.wait_state(DAG, run_id, TASK, ["success", "failed"], timeout=240, try_number=2)
    assert done["state"] == "success", live.diagnostics(DAG, run_id, TASK)
    assert runs.read_text().splitlines() == ["run", "run"]
    jobs = host.jobs(f"airflow/{DAG}/{TASK}/{run_id}")
    assert [(j["attempt_no"], j["status"]) for j in jobs] == [(1, "FAILED"), (2, "SUCCEEDED")]
    second = live.task_log(DAG, run_id, TASK, 2)
    assert f"Started job {jobs[1]['job_id']}" in second and "attempt 2" in second, second[-3000:]
