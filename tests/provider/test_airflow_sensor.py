"""OrchesjobSensor run by real Airflow (``airflow dags test`` subprocesses, SQLite) over the real sshd: the example
producer/sensor DAGs as shipped, and every outcome in both modes (deferrable and poke) in one spec-built DAG.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.airflow_case import DATE, AirflowCase

pytestmark = [pytest.mark.timeout(300), pytest.mark.sshd, pytest.mark.airflow]


@pytest.mark.versions
def test_example_sensor_waits_for_the_job_the_producer_dag_starts(af: AirflowCase) -> None:
    sensor = af.start_dags_test("example_orchesjob_sensor")
    try:
        # The sensor runs first and finds no job for the key yet: it waits (deferred, looking again every 5 s).
        assert sensor.wait_for_output(f"No job with run key 'export-{DATE}' yet", timeout=120), sensor.output()[-5000:]
        assert sensor.running()
        producer = af.dags_test("example_orchesjob_producer")  # meanwhile, the other DAG runs the export
        assert producer.returncode == 0, producer.describe()
        waited = sensor.wait(timeout=120)
    finally:
        sensor.stop()
    af.keep(waited)
    assert waited.returncode == 0, waited.describe()
    assert af.sandbox.task_states("example_orchesjob_producer") == {"export": "success"}
    assert af.sandbox.task_states("example_orchesjob_sensor") == {"wait_for_export": "success"}
    assert (af.workdir / "export.done").read_text() == "exported\n"
    job = af.sandbox.xcom("example_orchesjob_sensor", "wait_for_export")
    assert job["run_key"] == f"export-{DATE}" and job["status"] == "SUCCEEDED"
    assert job["job_id"] == af.sandbox.xcom("example_orchesjob_producer", "export")["job_id"]


def test_sensor_outcomes_in_deferrable_and_poke_mode(af: AirflowCase) -> None:
    af.cli("start", "--run-key", "ok", "--sync", "--", "true")
    af.cli("start", "--run-key", "bad", "--sync", "--", "sh", "-c", "exit 3")
    modes: dict[str, dict[str, Any]] = {"def": {"deferrable": True}, "poke": {"deferrable": False, "mode": "poke"}}
    tasks = []
    for name, mode in modes.items():
        common = dict(mode, poke_interval=1, timeout=60, poll_timeout=5)
        tasks += [
            {"task_id": f"ok_{name}", "kind": "sensor", "kwargs": dict(common, run_key="ok")},
            {"task_id": f"bad_{name}", "kind": "sensor", "kwargs": dict(common, run_key="bad")},
            {"task_id": f"soft_{name}", "kind": "sensor", "kwargs": dict(common, run_key="bad", soft_fail=True)},
            {"task_id": f"timeout_{name}", "kind": "sensor", "kwargs": dict(common, run_key="never", timeout=3)},
        ]
    run = af.dags_test(spec={"dag_id": "t_sensors", "tasks": tasks})
    assert af.sandbox.task_states("t_sensors") == {
        "ok_def": "success",
        "bad_def": "failed",
        "soft_def": "skipped",
        "timeout_def": "failed",
        "ok_poke": "success",
        "bad_poke": "failed",
        "soft_poke": "skipped",
        "timeout_poke": "failed",
    }, run.describe()
    assert "(run key 'bad', attempt 1) ended FAILED: exited with code 3" in run.output
    assert "AirflowSensorTimeout" in run.output
    assert af.sandbox.xcom("t_sensors", "ok_def")["status"] == "SUCCEEDED"
