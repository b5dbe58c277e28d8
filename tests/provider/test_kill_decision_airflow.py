"""The kill path's question to Airflow, asked of a real task instance row in a real Airflow's metadata database.

A DAG run made by ``airflow dags test`` leaves a real task instance; a separate Python process (as a worker or a
triggerer would be) then asks ``give_up.ask`` about it while the test moves the row through the states a user's
action leaves behind. On Airflow 2 the answer comes from the metadata database and must follow the row. On
Airflow 3 a process outside a task or a triggerer has no Task SDK supervisor to ask: the answer must be "unknown",
and unknown never aborts. (Airflow 3's real answers are tested on a live deployment in tests/live.)
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.airflow_case import AirflowCase

pytestmark = [pytest.mark.timeout(300), pytest.mark.sshd, pytest.mark.airflow, pytest.mark.versions]

ASK = r"""
import json, sqlite3, sys
from orchesjob_provider.give_up import TryIdentity, ask
db, dag_id, run_id, try_number = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
who = TryIdentity(dag_id, "job", run_id, -1, try_number)
answers = {}
for state, row_try in [("failed", try_number), ("success", try_number), ("up_for_retry", try_number),
                       ("deferred", try_number), ("running", try_number), (None, try_number),
                       ("failed", try_number + 1), ("up_for_retry", try_number + 1), ("success", try_number - 1)]:
    with sqlite3.connect(db) as con:
        con.execute("UPDATE task_instance SET state = ?, try_number = ? WHERE dag_id = ? AND run_id = ?",
                    (state, row_try, dag_id, run_id))
    verdict = ask(who, timeout=20)
    answers[f"{state}@{row_try - try_number}"] = [verdict.abort, verdict.unknown, verdict.reason]
print("ANSWERS " + json.dumps(answers))
"""


@pytest.fixture
def own_af(sshd, orchesjob_launcher: str, tmp_path, tmp_path_factory) -> AirflowCase:
    """A metadata database of this test's own: it writes task-instance rows directly, and reads them back while no
    other test's Airflow process has that database open."""
    from tests.provider.conftest import new_airflow_sandbox

    sandbox = new_airflow_sandbox(sshd, orchesjob_launcher, tmp_path_factory)
    return AirflowCase(sandbox, orchesjob_launcher, tmp_path / "orchesjob-home", tmp_path / "work")


def test_the_kill_path_asks_airflow_about_the_real_task_instance(own_af: AirflowCase) -> None:
    af = own_af
    import airflow

    dag_id = "kill_decision"
    spec = {"dag_id": dag_id, "tasks": [{"task_id": "job", "kwargs": {"command": ["true"], "deferrable": False}}]}
    run = af.dags_test(spec=spec)
    assert run.returncode == 0, run.describe()
    run_id = af.sandbox.run_id(dag_id)
    try_number = af.sandbox.try_numbers(dag_id)["job"]
    assert run_id and try_number >= 1

    sandbox = af.sandbox
    proc = subprocess.run(
        [sandbox.python, "-c", ASK, str(sandbox.db_path), dag_id, run_id, str(try_number)],
        env=sandbox.env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("ANSWERS ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    answers = {k: (abort, unknown) for k, (abort, unknown, _) in json.loads(lines[0][len("ANSWERS ") :]).items()}

    if airflow.__version__.startswith("2."):
        assert answers == {
            "failed@0": (True, False),
            "success@0": (True, False),
            "up_for_retry@0": (False, False),  # a retry is coming: it reattaches to the job (a stalled worker)
            "deferred@0": (False, False),
            "running@0": (False, False),
            "None@0": (False, False),
            "failed@1": (False, False),  # a newer try exists: not this try's to give up
            "up_for_retry@1": (False, False),
            "success@-1": (False, True),  # a try number behind the job's: no state Airflow leaves, so unknown
        }
    else:
        assert all(value == (False, True) for value in answers.values()), answers
