"""A triggerer killed with SIGKILL while a deferred job prints a line a second (issue: the triggerer at scale).

Airflow rebuilds the trigger on the other triggerer from the kwargs stored when the task deferred (log offsets 0),
not from where the dead one had got to. The host's delivery cursor of the try (the request id) makes the rebuilt
trigger resume where the dead one had delivered: every line reaches the task's log, in order, and what shows twice
is at most what the dead triggerer wrote after its last call to the host, with a warning where that can begin.
"""

from __future__ import annotations

import re

import pytest

from tests.support.live_airflow import TRIGGERER_HEALTH_THRESHOLD, LiveAirflow
from tests.support.live_host import Host

pytestmark = [pytest.mark.sshd, pytest.mark.airflow]

DAG = "orchesjob_live"
TASK = "job"
LINES = 40


def _stdout_lines(log: str) -> list[str]:
    """The job's numbered lines as the task's and the triggerers' logs hold them, in the order they were written
    (the logs are JSON lines or text; the relayed lines read ``[stdout] line N``)."""
    found: list[tuple[str, int, str]] = []
    for order, raw in enumerate(log.splitlines()):
        match = re.search(r"\[stdout\] (line \d+)", raw)
        if match:
            stamp = re.search(r'"timestamp":\s*"([^"]+)"', raw) or re.search(r"^\[?(\S+)", raw)
            found.append((stamp.group(1) if stamp else "", order, match.group(1)))
    return [line for _, _, line in sorted(found)]


@pytest.mark.timeout(300)
def test_a_triggerer_killed_mid_job_repeats_at_most_its_last_answer(live_airflow: LiveAirflow, live_host: Host) -> None:
    live, host = live_airflow, live_host
    script = f"for i in $(seq 1 {LINES}); do echo line $i; sleep 1; done; echo run >> {host.work}/crash.runs"
    run_id = live.trigger(DAG, {"script": script})
    live.wait_state(DAG, run_id, TASK, ["deferred"], timeout=120)
    live.wait_log(DAG, run_id, TASK, 1, "[stdout] line 8", timeout=90)
    holder = live.triggerer_holding(DAG, run_id, TASK)
    assert holder is not None, live.diagnostics(DAG, run_id, TASK)
    live.kill(holder)  # SIGKILL: no cancel, no on_kill, no last serialize()
    try:
        done = live.wait_state(DAG, run_id, TASK, ["success", "failed"], timeout=TRIGGERER_HEALTH_THRESHOLD + 150)
    finally:
        live.start_triggerer()  # the deployment keeps two triggerers for the tests after this one
    assert done["state"] == "success", live.diagnostics(DAG, run_id, TASK)
    assert host.runs("crash") == ["run"]
    log = live.task_log(DAG, run_id, TASK, 1)
    lines = _stdout_lines(log)
    expected = [f"line {i}" for i in range(1, LINES + 1)]
    assert sorted(set(lines), key=lambda x: int(x.split()[1])) == expected, "a line never reached the task log"
    repeated = len(lines) - len(expected)
    # before the cursor, a crash repeated every line since the deferral (8 or more here); now at most what the dead
    # triggerer wrote after its last call: with a line a second and a long poll that returns on each line, 0 to 2
    assert repeated <= 2, f"{repeated} lines shown twice: {lines}"
    assert "resumes at byte" in log and "may appear twice" in log  # the rebuilt trigger marked the place
