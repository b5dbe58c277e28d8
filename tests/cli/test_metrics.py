"""`metrics`, the Prometheus text a node exporter's textfile collector serves: read back by the real Prometheus parser,
series per job family (never per run), bounded by its flags, and its bad flags refused."""

import time

from tests.support.cli import (
    check_error,
    db_exec,
    kill_job_processes,
)


def parse_metrics(text: str) -> dict[str, list[tuple[dict, float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge" and family.documentation
        out[family.name] = [(s.labels, s.value) for s in family.samples]
    return out


def test_metrics_on_a_fresh_host(run):
    r = run("metrics")
    assert r.code == 0 and r.err == ""
    m = parse_metrics(r.out)
    statuses = ("STARTING", "RUNNING", "SUCCEEDED", "FAILED", "LOST", "CANCELLED", "ABORTED")
    assert {lbl["status"]: v for lbl, v in m["orchesjob_jobs"]} == dict.fromkeys(statuses, 0)
    assert m["orchesjob_running_jobs"] == [({}, 0)] and m["orchesjob_family_last_success"] == []
    assert m["orchesjob_recent_window_seconds"] == [({}, 86400)]
    assert m["orchesjob_running_job_info"] == [] and m["orchesjob_families_omitted"] == [({}, 0)]


def test_metrics_parsed_by_the_prometheus_parser(home, run, start_job, ok):
    odd_key = 'quote " back \\ slash \u00e9t\u00e9'
    start_job(odd_key, "true", opts=("--sync",))
    start_job("failing", "sh", "-c", "exit 7", opts=("--sync",))
    start_job("failing", "true", opts=("--sync",))
    start_job("killed", "sh", "-c", "kill -KILL $$", opts=("--sync",))
    aborted = start_job("aborted", "sleep", "60")
    ok("abort", "--job-id", aborted["job_id"], "--grace-seconds", "1")
    lost = start_job("lost", "sleep", "60")
    kill_job_processes(lost)
    running = start_job("running", "sleep", "60")
    old = start_job("old", "true", opts=("--sync",))
    db_exec(
        home,
        "UPDATE jobs SET started_at = started_at - 90000, finished_at = finished_at - 90000 WHERE job_id = ?",
        old["job_id"],
    )
    db_exec(home, "UPDATE jobs SET started_at = started_at - 30 WHERE job_id = ?", running["job_id"])
    r = run("metrics")
    assert r.code == 0, r
    m = parse_metrics(r.out)
    jobs_by = {lbl["status"]: v for lbl, v in m["orchesjob_jobs"]}
    assert jobs_by == {
        "STARTING": 0,
        "RUNNING": 1,
        "SUCCEEDED": 3,
        "FAILED": 2,
        "LOST": 1,
        "CANCELLED": 0,
        "ABORTED": 1,
    }
    recent = {lbl["status"]: v for lbl, v in m["orchesjob_jobs_finished_recently"]}
    assert recent == {"SUCCEEDED": 2, "FAILED": 2, "LOST": 1, "CANCELLED": 0, "ABORTED": 1}
    assert m["orchesjob_running_jobs"] == [({}, 1)]
    assert 30 <= m["orchesjob_oldest_running_job_age_seconds"][0][1] < 120
    # keys without a "/" are families of their own at the default depth (1)
    success = {lbl["family"]: v for lbl, v in m["orchesjob_family_last_success"]}
    assert success == {odd_key: 1, "failing": 1, "killed": 0, "aborted": 0, "lost": 0}  # "old" is out of the window
    status = {lbl["family"]: lbl["status"] for lbl, _ in m["orchesjob_family_last_status"]}
    assert status["killed"] == "FAILED" and status["aborted"] == "ABORTED" and status["lost"] == "LOST"
    codes = {lbl["family"]: v for lbl, v in m["orchesjob_family_last_exit_code"]}
    assert codes["failing"] == 0 and "killed" not in codes
    assert {lbl["family"]: v for lbl, v in m["orchesjob_family_last_attempt"]}["failing"] == 2
    finish = {lbl["family"]: v for lbl, v in m["orchesjob_family_last_finish_time_seconds"]}
    assert abs(finish[odd_key] - time.time()) < 120
    assert m["orchesjob_families_omitted"] == [({}, 0)]
    assert m["orchesjob_database_size_bytes"][0][1] == (home / "orchesjob.db").stat().st_size
    # the running job: counted in its family, and named in the one series that names runs
    assert m["orchesjob_family_running_jobs"] == [({"family": "running"}, 1)]
    assert m["orchesjob_family_oldest_running_start_time_seconds"] == [
        ({"family": "running"}, running["started_at"] - 30)
    ]
    assert m["orchesjob_running_job_info"] == [
        (
            {
                "family": "running",
                "job_id": running["job_id"],
                "run_key": "running",
                "run_id": "running",
                "attempt": "1",
            },
            1,
        )
    ]
    # the label value is escaped as the format says
    assert 'family="quote \\" back \\\\ slash \u00e9t\u00e9"' in r.out
    # a wider window takes "old" in; --max-families bounds the families and says how many were left out
    m = parse_metrics(run("metrics", "--recent-hours", "48").out)
    assert "old" in {lbl["family"] for lbl, _ in m["orchesjob_family_last_success"]}
    m = parse_metrics(run("metrics", "--max-families", "2").out)
    assert len(m["orchesjob_family_last_success"]) == 2 and m["orchesjob_families_omitted"] == [({}, 3)]
    assert {lbl["family"] for lbl, _ in m["orchesjob_family_last_success"]} == {"lost", "aborted"}
    m = parse_metrics(run("metrics", "--max-families", "0", "--recent-hours", "0.5").out)
    assert m["orchesjob_family_last_success"] == [] and m["orchesjob_families_omitted"] == [({}, 5)]
    assert m["orchesjob_recent_window_seconds"] == [({}, 1800)]
    # the name --max-families had in 2.0.0 still works
    m = parse_metrics(run("metrics", "--max-keys", "2").out)
    assert len(m["orchesjob_family_last_success"]) == 2 and m["orchesjob_families_omitted"] == [({}, 3)]


def test_metrics_series_are_per_job_family_never_per_run(home, run, start_job, ok):
    """Thirty runs of one Airflow task are one series with dag_id and task_id; other keys group by their first
    --family-depth parts; only running jobs have a series naming their run."""
    for day in range(1, 31):
        key = "airflow/etl/load/scheduled__2026-05-%02dT00:00:00+00:00" % day
        start_job(key, "sh", "-c", "exit %d" % (0 if day < 30 else 3), opts=("--sync",))
        time.sleep(0.02)
    start_job("airflow/etl/extract/manual__2026-05-30/0", "true", opts=("--sync",))  # a mapped task's index
    start_job("billing/2026-05-01", "true", opts=("--sync",))
    time.sleep(1.1)  # finish times are whole seconds: the latest of billing must be unambiguous
    start_job("billing/2026-05-02", "sh", "-c", "exit 1", opts=("--sync",))
    live = start_job("airflow/etl/load/manual__2026-05-31", "sleep", "60")
    m = parse_metrics(check_ok_text(run("metrics")))
    last = {lbl["family"]: (lbl.get("dag_id"), lbl.get("task_id"), v) for lbl, v in m["orchesjob_family_last_success"]}
    assert last == {
        "airflow/etl/load": ("etl", "load", 0),  # the 30th run failed: one series, the latest outcome
        "airflow/etl/extract": ("etl", "extract", 1),
        "billing": (None, None, 0),
    }
    for name, samples in m.items():
        if name != "orchesjob_running_job_info":
            assert not any("run_key" in lbl or "run_id" in lbl or "job_id" in lbl for lbl, _ in samples), name
    info = m["orchesjob_running_job_info"]
    assert info == [
        (
            {
                "family": "airflow/etl/load",
                "dag_id": "etl",
                "task_id": "load",
                "job_id": live["job_id"],
                "run_key": "airflow/etl/load/manual__2026-05-31",
                "run_id": "manual__2026-05-31",
                "attempt": "1",
            },
            1,
        )
    ]
    assert m["orchesjob_family_running_jobs"] == [
        ({"family": "airflow/etl/load", "dag_id": "etl", "task_id": "load"}, 1)
    ]
    # a deeper family for the other keys; the provider's keys keep dag and task
    m = parse_metrics(check_ok_text(run("metrics", "--family-depth", "2")))
    families = {lbl["family"] for lbl, _ in m["orchesjob_family_last_success"]}
    assert families == {"airflow/etl/load", "airflow/etl/extract", "billing/2026-05-01", "billing/2026-05-02"}
    ok("abort", "--job-id", live["job_id"], "--grace-seconds", "1")
    m = parse_metrics(check_ok_text(run("metrics")))
    assert m["orchesjob_running_job_info"] == [] and m["orchesjob_family_running_jobs"] == []


def check_ok_text(r) -> str:
    assert r.code == 0 and r.err == "", r
    return r.out


def test_metrics_bad_flags(run):
    for args in (
        ("--recent-hours", "0"),
        ("--recent-hours", "-1"),
        ("--recent-hours", "nan"),
        ("--recent-hours", "soon"),
        ("--max-families", "-1"),
        ("--max-families", "many"),
        ("--family-depth", "0"),
        ("--family-depth", "deep"),
        ("--max-keys", "-1"),
        ("--max-keys", "5", "--max-families", "5"),
    ):
        check_error(run("metrics", *args), 2, "invalid_argument")
