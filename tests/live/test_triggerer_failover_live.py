"""One of two triggerers SIGKILLed with many deferred jobs on shared watchers across three hosts.

Twelve task instances of one mapped task, their jobs spread over three hosts (three sshd servers, each with a
state directory of its own: connections ``orchesjob_live``, ``orchesjob_live_2``, ``orchesjob_live_3``), all
deferred, so each triggerer watches them with one shared watcher per host. The triggerer that holds the most of
them is SIGKILLed (no cancel, no ``on_kill``, no last word); the other takes every trigger over once the dead one's
heartbeat is older than ``triggerer_health_check_threshold``, rebuilding each from the kwargs it deferred with.
Then the jobs are let go to their end.

What it proves: every task succeeds in its first try, every job ran once on its host, and every line reached its
task's log exactly once. The jobs print their first lines and then stay silent until they are let go, and the kill
comes after the dead triggerer has shown those lines and gone back to the host, so its delivery cursors hold them:
the rebuilt triggers resume after them. (A kill in the middle of an answer may repeat that one answer's lines, as
tests/live/test_triggerer_crash_live.py shows.) The same failover with 100 jobs, with its connection counts and
end-notice latencies, is a benchmark: bench/triggerer_failover.py.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest

from tests.support.cli import wait_until
from tests.support.live_airflow import TRIGGERER_HEALTH_THRESHOLD, Component
from tests.support.live_checks import TASK, misfiled, numbered_job, repeated_or_missing, run_key
from tests.support.live_host import Host
from tests.support.prod_airflow import ProdAirflow

pytestmark = [pytest.mark.sshd, pytest.mark.airflow]

DAG = "orchesjob_live_hosts"
JOBS = 12  # four per host; the 100-job figures are bench/triggerer_failover.py's
CONNECTIONS = ("orchesjob_live", "orchesjob_live_2", "orchesjob_live_3")


def all_in(found: dict[Any, Any], wanted: set[Any]) -> dict[Any, Any] | None:
    """``found`` (``{map_index: value}``) when it has every mapped task and each value is one of ``wanted``."""
    return found if len(found) == JOBS and all(v in wanted for v in found.values()) else None


def holders(live: ProdAirflow, run_id: str) -> dict[int, int | None]:
    """``{map_index: triggerer job id}`` of the run's deferred task instances."""
    rows = live.query(
        "SELECT ti.map_index, t.triggerer_id FROM task_instance ti JOIN trigger t ON ti.trigger_id = t.id "
        "WHERE ti.dag_id = ? AND ti.run_id = ? AND ti.task_id = ?",
        (DAG, run_id, TASK),
    )
    return {int(i): (int(h) if h is not None else None) for i, h in rows}


@pytest.mark.timeout(900)
def test_a_triggerer_killed_with_many_jobs_on_three_hosts_hands_every_one_over(
    live_airflow: ProdAirflow, live_host: Host, other_hosts: list[Host]
) -> None:
    live = live_airflow
    hosts = [live_host, *other_hosts]
    release = live_host.work / "failover.release"
    for host in other_hosts:  # one release file for all: every host is this machine
        (host.work / "failover.release").unlink(missing_ok=True)
    jobs = []
    for i in range(JOBS):
        host = hosts[i % 3]
        jobs.append(
            {"ssh_conn_id": CONNECTIONS[i % 3], "command": numbered_job(host.work, f"failover-{i}", 2, release)}
        )
    run_id = live.trigger(DAG, {"jobs": jobs})
    victim: Component | None = None
    try:
        wait_until(
            lambda: all_in(live.task_states(DAG, run_id), {"deferred"}),
            300,
            step=1,
            what=lambda: f"all deferred: {Counter(live.task_states(DAG, run_id).values())}",
        )
        for i in range(JOBS):
            live.wait_log(DAG, run_id, f"{TASK}/map_index={i}", 1, "[stdout] line 2", timeout=120)
        time.sleep(10)  # each watcher is back on its host with the delivered positions recorded
        held = Counter(holders(live, run_id).values())
        victim = next(c for c in live.triggerers() if c.job_id == held.most_common(1)[0][0])
        survivors = [c for c in live.triggerers() if c is not victim and c.process.running()]
        live.kill(victim)
        wait_until(
            lambda: all_in(holders(live, run_id), {c.job_id for c in survivors}),
            TRIGGERER_HEALTH_THRESHOLD + 180,
            step=1,
            what=lambda: f"the survivors to take over: {holders(live, run_id)}",
        )
    finally:
        release.touch()
        if victim is not None:
            live.start_triggerer()  # the deployment keeps two triggerers for the tests after this one
    states = wait_until(
        lambda: all_in(live.task_states(DAG, run_id), {"success", "failed", "upstream_failed"}),
        300,
        step=2,
        what=lambda: f"all ended: {Counter(live.task_states(DAG, run_id).values())}",
    )
    assert set(states.values()) == {"success"}, states
    for i in range(JOBS):
        host = hosts[i % 3]
        assert host.runs(f"failover-{i}") == ["run"], i
        attempts = host.jobs(run_key(DAG, run_id, i))
        assert [j["status"] for j in attempts] == ["SUCCEEDED"], (i, attempts)
        log = live.task_log(DAG, run_id, f"{TASK}/map_index={i}", 1)
        wrong = repeated_or_missing(log, 3, misfiled(live, run_id, i))
        assert wrong == "", (i, wrong, log[-3000:])
    assert victim is not None
    # the dead triggerer had them: its log of some job shows the first lines, the survivor's the end
    assert any(
        "[stdout] line 2" in live.task_log(DAG, run_id, f"{TASK}/map_index={i}", 1, triggerer=victim)
        for i in range(JOBS)
    )
