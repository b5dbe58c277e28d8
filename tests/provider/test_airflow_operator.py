"""OrchesjobOperator run by real Airflow (``airflow dags test`` / ``airflow tasks test`` subprocesses, SQLite), over
the real sshd, against the real CLI: the example DAGs as shipped, and spec-built DAGs (tests/support/dags/spec_dag.py)
for the cases the examples do not cover.

"A second try" here is what Airflow really does: a retry inside one ``dags test`` (``retries=1``, no delay), or the
same task instance run again after the first process finished or was killed with ``kill -9`` (same run id, so the
same default run key): ``airflow tasks test DAG TASK RUN_ID`` on Airflow 3, ``airflow dags test DAG DATE`` again on
Airflow 2 (see ``AirflowCase.run_task_again``).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from orchesjob_provider.compat import airflow_version
from tests.support.airflow_case import DATE, AirflowCase, job_log_lines, log_records, wait_dead

pytestmark = [pytest.mark.timeout(300), pytest.mark.sshd, pytest.mark.airflow]

SAME_RESULT = ("job_id", "run_key", "status", "exit_code", "attempt_no", "started_at", "finished_at")


def ok(run: Any) -> None:
    assert run.returncode == 0, run.describe()


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_BOX = re.compile(r"[\u2500-\u257f]")


def flat(text: str) -> str:
    """``text`` with colour codes, box-drawing characters and line breaks gone and all whitespace runs made one
    space: an exception message is found in Airflow's output however it was drawn (Airflow 3.0 draws a task's
    exception as a coloured box wrapped at 100 columns, Airflow 2 and 3.3 as plain lines)."""
    return " ".join(_BOX.sub(" ", _ANSI.sub("", text)).split())


def texts(output: str, stream: str = "stdout") -> list[str]:
    return [line for _, line in job_log_lines(output, stream)]


def first_time(output: str, stream: str, text: str) -> float:
    return next(t for t, line in job_log_lines(output, stream) if line == text)


def tree_job(directory: str) -> list[str]:
    """A job with a child process, both recording their pids, so a test can check the whole tree is gone."""
    return [
        "sh",
        "-c",
        (
            f"mkdir -p {directory}; echo $$ > {directory}/main.pid; "
            f"sleep 300 & echo $! > {directory}/child.pid; echo started; wait"
        ),
    ]


def pids_of(directory: Path) -> list[int]:
    return [int((directory / name).read_text()) for name in ("main.pid", "child.pid")]


# ---------------------------------------------------------------------- the example DAGs


@pytest.mark.versions
def test_example_basic_runs_streams_its_log_and_a_second_try_adopts_the_result(af: AirflowCase) -> None:
    dag = "example_orchesjob_basic"
    first = af.dags_test(dag)
    ok(first)
    assert af.sandbox.task_states(dag) == {"backup": "success"}
    assert af.marker("basic.runs") == [f"backup ran for {DATE}"]
    # Each line once, and line 1 was in the task log before the job wrote its last line (the log file's last write,
    # 2 s after line 1): streamed, not dumped at the end.
    assert texts(first.output) == ["copying part 1", "copying part 2", "copying part 3", "done"]
    result = af.sandbox.xcom(dag, "backup")
    last_write = os.stat(result["stdout_file"]).st_mtime
    times = [(round(t, 2), line) for t, line in job_log_lines(first.output, "stdout")]
    assert first_time(first.output, "stdout", "copying part 1") < last_write, (times, last_write)
    assert (result["status"], result["exit_code"], result["attempt_no"]) == ("SUCCEEDED", 0, 1)
    assert result["env"] == {"BACKUP_DATE": "***"}  # names only: no env value in XCom

    # The task instance is run again (a retry after a lost worker, or a clear): it adopts, it does not re-run.
    run_id = af.sandbox.run_id(dag)
    second = af.run_task_again(dag, "backup")
    ok(second)
    assert af.sandbox.run_id(dag) == run_id
    if airflow_version() < (3, 1, 0):
        # Airflow 3.0.x keeps the ended try's trigger event and resumes the task instance with it (under
        # `tasks test` with the same try number): the task reports that job's end instead of looking it up.
        assert "job %s (run key" % result["job_id"] in second.output and "SUCCEEDED." in second.output
    else:
        assert "Adopted the result of job %s" % result["job_id"] in second.output
    assert af.marker("basic.runs") == [f"backup ran for {DATE}"]
    again = af.sandbox.xcom(dag, "backup")
    assert {k: again[k] for k in SAME_RESULT} == {k: result[k] for k in SAME_RESULT}
    assert len(af.jobs(result["run_key"])) == 1


@pytest.mark.versions
def test_example_retry_reattaches_after_the_worker_is_killed_mid_job(af: AirflowCase) -> None:
    dag = "example_orchesjob_retry"
    af.extra_env["ORCHESJOB_EXAMPLE_STEPS"] = "45"  # ~45 s: the retry finds it still running on a busy machine too
    worker = af.start_dags_test(dag)
    try:
        job = af.wait_running(what=worker, timeout=120)
        assert worker.wait_for_output("[stdout] imported batch 1", timeout=30), worker.output()[-4000:]
        worker.kill_group()  # kill -9 of the whole worker: no on_kill, no cleanup, nothing
    finally:
        worker.stop()
    assert af.cli("status", "--job-id", job["job_id"])["status"] == "RUNNING"

    run_id = af.sandbox.run_id(dag)
    assert job["run_key"] == f"airflow/{dag}/import/{run_id}"
    retry = af.run_task_again(dag, "import")
    ok(retry)
    assert af.sandbox.run_id(dag) == run_id
    assert f"Reattached to job {job['job_id']}" in retry.output and "which is still RUNNING" in retry.output
    assert af.marker("retry.runs") == [f"import {job['job_id']}"], "the job ran more than once"
    if airflow_version() < (3, 1, 0):
        # Airflow 3.0's `tasks test` runs the trigger in line but never resumes the task with its event: the task
        # instance ends there, with no result. What the retry did is all there is: it reattached, the job ran once
        # and succeeded.
        assert "[DAG TEST] Trigger completed" in retry.output
        assert [(j["job_id"], j["status"]) for j in af.jobs(job["run_key"])] == [(job["job_id"], "SUCCEEDED")]
        return
    result = af.sandbox.xcom(dag, "import")
    assert (result["job_id"], result["status"], result["attempt_no"]) == (job["job_id"], "SUCCEEDED", 1)
    # The retry reports the same job: the batches it had not yet shown appear in its log, none twice.
    shown = texts(retry.output)
    assert shown == [f"imported batch {i}" for i in range(1, 46)]
    assert len(af.jobs(job["run_key"])) == 1


@pytest.mark.versions
def test_example_strict_runs_once_ever(af: AirflowCase) -> None:
    dag = "example_orchesjob_strict"
    ok(af.dags_test(dag))
    first = af.sandbox.xcom(dag, "daily_import")
    assert first["strict"] and first["run_key"] == f"daily-import-{DATE}"
    ok(af.dags_test(dag))  # a new DAG run for the same date (a backfill, a cleared run): same key
    second = af.sandbox.xcom(dag, "daily_import")
    assert second["job_id"] == first["job_id"]
    assert af.marker("strict.runs") == [f"import {DATE}"]


@pytest.mark.versions
def test_example_mapped_runs_one_job_per_partition(af: AirflowCase) -> None:
    dag = "example_orchesjob_mapped"
    run = af.dags_test(dag)
    ok(run)
    assert af.sandbox.task_states(dag) == {f"load_partition[{i}]": "success" for i in range(3)}
    assert sorted(af.marker("mapped.runs")) == ["apac", "eu", "us"]
    assert sorted(texts(run.output)) == ["loaded apac", "loaded eu", "loaded us"]
    keys = [af.sandbox.xcom(dag, "load_partition", map_index=i)["run_key"] for i in range(3)]
    assert keys == [f"load-{p}-{DATE}" for p in ("eu", "us", "apac")]


# ---------------------------------------------------------------------- outcomes of a job, retries


@pytest.mark.versions
def test_failure_fails_the_try_with_the_stderr_tail_and_the_retry_runs_attempt_2(af: AirflowCase) -> None:
    def flaky(name: str) -> list[str]:
        flag, runs = af.path(f"{name}.failed-once"), af.path(f"{name}.runs")
        return [
            "sh",
            "-c",
            (
                f"echo run >> {runs}; if [ ! -e {flag} ]; then touch {flag}; "
                f'for i in 1 2 3 4; do echo "{name} complaint $i" >&2; done; exit 3; fi; echo fine'
            ),
        ]

    retry_now = {"retries": 1, "retry_delay": 0}
    spec = {
        "dag_id": "t_outcomes",
        "tasks": [
            {"task_id": "flaky", "kwargs": dict(retry_now, command=flaky("flaky"), stderr_tail_lines=2)},
            {"task_id": "flaky_polling", "kwargs": dict(retry_now, command=flaky("polling"), deferrable=False)},
            {"task_id": "skipper", "kwargs": {"command": "echo leaving >&2; exit 99", "skip_on_exit_code": [99]}},
            {"task_id": "failer", "kwargs": {"command": "exit 5", "skip_on_exit_code": [99]}},
        ],
    }
    run = af.dags_test(spec=spec)
    states = af.sandbox.task_states("t_outcomes")
    assert states == {"flaky": "success", "flaky_polling": "success", "skipper": "skipped", "failer": "failed"}, (
        run.describe()
    )
    assert af.sandbox.try_numbers("t_outcomes")["flaky"] == 2

    for task, name in (("flaky", "flaky"), ("flaky_polling", "polling")):
        result = af.sandbox.xcom("t_outcomes", task)
        assert (result["status"], result["attempt_no"], result["exit_code"]) == ("SUCCEEDED", 2, 0)
        assert af.marker(f"{name}.runs") == ["run", "run"]
        attempts = af.jobs(result["run_key"])
        assert [(j["attempt_no"], j["status"], j["exit_code"]) for j in attempts] == [
            (1, "FAILED", 3),
            (2, "SUCCEEDED", 0),
        ]
    # Try 1's failure names the code and quotes the end of stderr (stderr_tail_lines=2 for "flaky").
    assert flat(
        "attempt 1) ended FAILED: exited with code 3\nLast lines of its stderr:\nflaky complaint 3\nflaky complaint 4"
    ) in flat(run.output)
    assert flat("Last lines of its stderr:\nflaky complaint 2") not in flat(run.output)
    assert flat("polling complaint 1\npolling complaint 2\npolling complaint 3\npolling complaint 4") in flat(
        run.output
    )
    assert "exited with code 99, listed in skip_on_exit_code" in flat(run.output)
    assert "ended FAILED: exited with code 5" in flat(run.output)


def test_a_start_that_finds_a_job_with_other_parameters_fails_unless_allowed(af: AirflowCase) -> None:
    shared = {"run_key": "shared-{{ ds }}", "deferrable": False}
    spec = {
        "dag_id": "t_mismatch",
        "tasks": [
            {"task_id": "first", "kwargs": dict(shared, command=["sh", "-c", f"echo first >> {af.path('runs')}"])},
            {
                "task_id": "other",
                "upstream": ["first"],
                "kwargs": dict(shared, command=["sh", "-c", f"echo other >> {af.path('runs')}"]),
            },
            {
                "task_id": "other_allowed",
                "upstream": ["first"],
                "kwargs": dict(
                    shared, command=["sh", "-c", f"echo other >> {af.path('runs')}"], allow_parameter_mismatch=True
                ),
            },
        ],
    }
    run = af.dags_test(spec=spec)
    assert af.sandbox.task_states("t_mismatch") == {
        "first": "success",
        "other": "failed",
        "other_allowed": "success",
    }, run.describe()
    first = af.sandbox.xcom("t_mismatch", "first")
    assert af.sandbox.xcom("t_mismatch", "other_allowed")["job_id"] == first["job_id"]
    assert af.marker("runs") == ["first"]
    assert (
        f"the run key 'shared-{DATE}' already has job {first['job_id']}" in run.output
        and "different command, cwd, env or timeout" in run.output
        and "allow_parameter_mismatch=True" in run.output
    )


HOSTILE = [
    'it\'s "quoted"',
    "$(touch {pwned})",
    "`touch {pwned}`",
    "a; touch {pwned}; b",
    "line one\nline two",
    "&& || | > < * ? ~ # ! \\ %",
    "  spaces  ",
]


def test_injection_strings_given_to_the_operator_arrive_literally(af: AirflowCase, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    hostile = [h.format(pwned=pwned) for h in HOSTILE]
    cwd = Path(f"{tmp_path}/cwd 'q' $(touch {pwned}) `touch {pwned}` ;\nx")
    cwd.mkdir(parents=True)
    report = af.path("report.json")
    script = (
        "import json, os, sys; json.dump({'argv': sys.argv[1:], 'cwd': os.getcwd(), "
        "'env': {k: os.environ.get(k) for k in ('H1', 'H2')}}, open(%r, 'w'))" % report
    )
    run_key = f"key 'q' \"dq\" $(touch {pwned}) `touch {pwned}` ; touch {pwned} & | \\"
    env = {"H1": hostile[1] + hostile[4], "H2": hostile[3]}
    spec = {
        "dag_id": "t_injection",
        "tasks": [
            {
                "task_id": "hostile",
                "kwargs": {
                    "command": [sys.executable, "-c", script, *hostile],
                    "env": env,
                    "cwd": str(cwd),
                    "run_key": run_key,
                },
            },
            {
                "task_id": "hostile_string",
                "kwargs": {
                    "command": f"printf '%s|' 'a;b' '$(touch {pwned})'",
                    "run_key": "string",
                    "deferrable": False,
                },
            },
            {"task_id": "newline_key", "kwargs": {"command": f"touch {pwned}", "run_key": "two\nlines"}},
        ],
    }
    run = af.dags_test(spec=spec)
    assert af.sandbox.task_states("t_injection") == {
        "hostile": "success",
        "hostile_string": "success",
        "newline_key": "failed",
    }, run.describe()
    seen = json.loads(Path(report).read_text())
    assert seen == {"argv": hostile, "cwd": str(cwd), "env": env}
    result = af.sandbox.xcom("t_injection", "hostile")
    assert result["run_key"] == run_key and result["env"] == dict.fromkeys(env, "***") and result["cwd"] == str(cwd)
    assert texts(run.output) == [f"a;b|$(touch {pwned})|"]
    assert "--run-key 'two\\nlines' contains control or unprintable characters" in run.output
    assert not pwned.exists(), "a hostile string was run by a shell"


# ---------------------------------------------------------------------- logs


def test_job_output_shows_in_the_task_log_while_it_runs_each_line_once(af: AirflowCase) -> None:
    """Each task's job prints its first lines, then waits on a gate that this test opens only once those lines are
    in the task log: the job cannot end before its first output is shown (streamed, not collected at the end). A
    job whose gate never opens exits 3 and fails its task."""
    gates = {t: af.workdir / f"gate.{t}" for t in ("D", "P")}
    command = [
        "sh",
        "-c",
        (
            'echo "alpha $T \'q\' \\$(x) ✓"; echo "warn $T" >&2; i=0; '
            'while [ ! -e "$G" ] && [ $i -lt 1800 ]; do sleep 0.1; i=$((i+1)); done; [ -e "$G" ] || exit 3; '
            'echo "beta $T"; sleep 1; printf "tail $T"'
        ),
    ]
    spec = {
        "dag_id": "t_logs",
        "tasks": [
            {
                "task_id": "deferred",
                "kwargs": {"command": command, "env": {"T": "D", "G": str(gates["D"])}, "poll_interval": 10},
            },
            {
                "task_id": "polling",
                "kwargs": {
                    "command": command,
                    "env": {"T": "P", "G": str(gates["P"])},
                    "poll_interval": 10,
                    "deferrable": False,
                },
            },
        ],
    }
    worker = af.start_dags_test(spec=spec)
    try:
        deadline = time.monotonic() + 240
        while worker.running() and not all(g.exists() for g in gates.values()) and time.monotonic() < deadline:
            shown = texts(worker.output())
            for t, gate in gates.items():
                if f"alpha {t} 'q' $(x) ✓" in shown and not gate.exists():
                    gate.touch()  # the first line is in the task log while the job still runs
            time.sleep(0.2)
        run = af.keep(worker.wait(timeout=240))
    finally:
        worker.stop()
    ok(run)
    assert all(g.exists() for g in gates.values()), "a job's first line never reached the task log while it ran"
    assert "Pausing task as DEFERRED" in run.output or "running trigger in line" in run.output
    out, err = texts(run.output), texts(run.output, "stderr")
    for t in ("D", "P"):
        assert [line for line in out if f" {t}" in line] == [f"alpha {t} 'q' $(x) ✓", f"beta {t}", f"tail {t}"]
        assert [line for line in err if f" {t}" in line] == [f"warn {t}"]
        alpha = first_time(run.output, "stdout", f"alpha {t} 'q' $(x) ✓")
        assert alpha <= first_time(run.output, "stdout", f"tail {t}")
    assert len(out) == 6 and len(err) == 2
    assert log_records(run.output)  # the parser understood this Airflow's log format


# ---------------------------------------------------------------------- killing, timeouts


@pytest.mark.versions
def test_timeouts_and_kills_abort_the_remote_process_tree_and_a_kept_job_is_reattached(af: AirflowCase) -> None:
    dirs = {name: af.workdir / name for name in ("polling", "deferred", "host")}
    # One after the other (all_done), so that a retry comes right after its failed try.
    spec = {
        "dag_id": "t_timeouts",
        "tasks": [
            # The job's own timeout: the host aborts it, with or without Airflow.
            {"task_id": "host", "kwargs": {"command": tree_job(str(dirs["host"])), "timeout": 2}},
            # Airflow's execution_timeout while deferred: the trigger's deadline (5 s before Airflow's) fires first
            # and the task aborts the job.
            {
                "task_id": "deferred",
                "upstream": ["host"],
                "kwargs": {
                    "command": tree_job(str(dirs["deferred"])),
                    "execution_timeout": 7,
                    "abort_grace_seconds": 2,
                    "trigger_rule": "all_done",
                },
            },
            # abort_on_kill=False: try 1 times out (deadline at 9 s) and leaves the job running; try 2 reattaches.
            {
                "task_id": "kept",
                "upstream": ["deferred"],
                "kwargs": {
                    "command": ["sh", "-c", f'echo "$ORCHESJOB_JOB_ID" >> {af.path("kept.runs")}; sleep 14; echo done'],
                    "execution_timeout": 14,
                    "abort_on_kill": False,
                    "retries": 1,
                    "retry_delay": 0,
                    "trigger_rule": "all_done",
                },
            },
            # Airflow's execution_timeout while waiting in the worker: the task aborts the job when the timeout
            # interrupts its wait (Airflow's on_kill comes next, with the state still "running"). Last, because
            # Airflow 2's `dags test` does not survive a task's timeout (AirflowTaskTimeout is a BaseException and
            # escapes it, after the task is marked failed and on_kill has run).
            {
                "task_id": "polling",
                "upstream": ["kept"],
                "kwargs": {
                    "command": tree_job(str(dirs["polling"])),
                    "deferrable": False,
                    "execution_timeout": 8,  # the job is surely started (and its tree there) when it runs out
                    "poll_interval": 2,
                    "abort_grace_seconds": 2,
                    "trigger_rule": "all_done",
                },
            },
        ],
    }
    run = af.dags_test(spec=spec)
    states = af.sandbox.task_states("t_timeouts")
    assert states == {"polling": "failed", "deferred": "failed", "host": "failed", "kept": "success"}, run.describe()

    for name, directory in dirs.items():
        pids = pids_of(directory)
        assert wait_dead(pids) == [], f"{name}: processes {pids} of the job survived"
        job = af.jobs(f"airflow/t_timeouts/{name}/{af.sandbox.run_id('t_timeouts')}")[-1]
        assert job["status"] == "ABORTED", (name, job)
    reasons = {
        name: af.jobs(f"airflow/t_timeouts/{name}/{af.sandbox.run_id('t_timeouts')}")[-1]["abort_reason"]
        for name in dirs
    }
    assert "execution_timeout" in reasons["polling"] and "execution_timeout" in reasons["deferred"]
    assert "--timeout of 2s" in reasons["host"]
    assert "execution_timeout ran out; it was aborted" in flat(run.output)

    kept = af.sandbox.xcom("t_timeouts", "kept")
    assert (kept["status"], kept["attempt_no"]) == ("SUCCEEDED", 1)
    assert af.marker("kept.runs") == [kept["job_id"]]
    assert "(left running)" in flat(run.output)
    # Try 2 reattaches to the running job, or (a busy machine may start it after the job's 14 s) adopts its result:
    # either way the job ran once (above) and the task succeeded with it.
    assert (
        f"Reattached to job {kept['job_id']}" in run.output
        or f"Adopted the result of job {kept['job_id']}" in run.output
    )
