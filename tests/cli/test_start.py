"""start (async, --sync, --start-timeout, --cwd, --env, --timeout), rerun and version."""

import os
import re
import sys
import time

import pytest

from orchesjob.contract import CONTRACT_VERSION
from tests.support.cli import OUR_JOB_FIELDS, REFERENCE_JOB_FIELDS, START_FIELDS, pid_alive, read_pids, wait_pids_gone

pytestmark = pytest.mark.timeout(120)


def test_version_command_and_flag(ok, run):
    v = ok("version")  # for programs: JSON
    assert re.match(r"^\d+\.\d+\.\d+$", v["version"]), v
    assert v["contract"] == CONTRACT_VERSION
    assert v["python"] == sys.version.split()[0]
    for flag in ("--version", "-V"):  # for people (and as orchesjob 1.1.0 answered it): one line
        r = run(flag)
        assert r.code == 0 and r.err == ""
        assert r.out == "orchesjob %s, JSON contract %d\n" % (v["version"], CONTRACT_VERSION)


def test_start_async_returns_running_job_with_every_field(ok, start_job, home, wait_terminal):
    j = start_job("async-key", "sleep", "30")
    for f in REFERENCE_JOB_FIELDS + OUR_JOB_FIELDS + START_FIELDS:
        assert f in j, f
    assert j["accepted"] is True and j["existing"] is False
    assert j["mode"] == "async" and j["strict"] is False and j["strict_override_used"] is False
    assert j["parameters_match"] is True
    assert j["status"] == "RUNNING" and j["active"] is True
    assert j["command"] == ["sleep", "30"]
    assert isinstance(j["target_pid"], int) and j["pid"] == j["target_pid"] and j["pid_kind"] == "target"
    assert isinstance(j["worker_pid"], int) and j["worker_pid"] != j["target_pid"]
    assert j["attempt_no"] == 1 and j["rerun_of_job_id"] is None
    assert j["exit_code"] is None and j["finished_at"] is None and j["finished_at_iso"] is None
    assert isinstance(j["started_at"], int) and j["started_at_iso"].startswith(time.strftime("%Y-"))
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$", j["started_at_iso"])
    assert j["stdout_file"] == str(home / "logs" / (j["job_id"] + ".stdout"))
    assert j["stderr_file"] == str(home / "logs" / (j["job_id"] + ".stderr"))
    assert pid_alive(j["target_pid"])
    ok("abort", "--job-id", j["job_id"], "--grace-seconds", "1")


def test_start_sync_success(start_job, home):
    j = start_job("sync-ok", "sh", "-c", "echo hello; echo oops >&2", opts=("--sync",))
    assert j["mode"] == "sync" and j["accepted"] is True
    assert j["status"] == "SUCCEEDED" and j["exit_code"] == 0 and j["active"] is False
    assert j["signal"] is None and j["signal_name"] is None
    assert isinstance(j["finished_at"], int) and j["finished_at"] >= j["started_at"]
    assert j["end_reason"]
    with open(j["stdout_file"]) as f:
        assert f.read() == "hello\n"
    with open(j["stderr_file"]) as f:
        assert f.read() == "oops\n"


def test_start_sync_failure_is_exit_0_with_exit_code(start_job):
    j = start_job("sync-fail", "sh", "-c", "exit 3", opts=("--sync",))
    assert j["status"] == "FAILED" and j["exit_code"] == 3
    assert "3" in j["end_reason"]


def test_start_sync_killed_by_signal_records_signal(start_job):
    j = start_job("sync-sig", "sh", "-c", "kill -9 $$", opts=("--sync",))
    assert j["status"] == "FAILED"
    assert j["signal"] == 9 and j["signal_name"] == "SIGKILL"
    assert "SIGKILL" in j["end_reason"]


def test_start_async_then_job_finishes(start_job, wait_terminal):
    j = start_job("async-done", "sh", "-c", "echo done")
    assert j["status"] in ("RUNNING", "SUCCEEDED")
    done = wait_terminal(j["job_id"])
    assert done["status"] == "SUCCEEDED" and done["exit_code"] == 0


@pytest.mark.parametrize("value", ["0", "0.5", "5", "30"])
def test_start_timeout_values_are_accepted(start_job, wait_terminal, value):
    j = start_job("st-" + value.replace(".", "_"), "sh", "-c", "exit 0", opts=("--start-timeout", value))
    assert j["accepted"] is True and j["status"] in ("STARTING", "RUNNING", "SUCCEEDED")
    assert wait_terminal(j["job_id"])["status"] == "SUCCEEDED"


def test_start_timeout_waits_for_target_pid(start_job):
    j = start_job("st-wait", "sleep", "30", opts=("--start-timeout", "20"))
    assert j["status"] == "RUNNING" and j["target_pid"] and j["pid_kind"] == "target"


def test_cwd(start_job, tmp_path):
    d = tmp_path / "work dir"
    d.mkdir()
    j = start_job("cwd", "pwd", opts=("--sync", "--cwd", str(d)))
    assert j["status"] == "SUCCEEDED" and j["cwd"] == str(d)
    with open(j["stdout_file"]) as f:
        assert f.read().strip() == str(d)


def test_cwd_relative_is_made_absolute(run, home, tmp_path):
    # run() uses the repository root as the caller's working directory
    from tests.support.cli import REPO_ROOT, check_ok

    j = check_ok(run("start", "--run-key", "cwd-rel", "--sync", "--cwd", "tests", "--", "pwd"))
    assert j["cwd"] == os.path.join(REPO_ROOT, "tests")
    with open(j["stdout_file"]) as f:
        assert f.read().strip() == os.path.join(REPO_ROOT, "tests")


def test_env_repeatable(start_job):
    j = start_job(
        "env",
        "sh",
        "-c",
        'printf "%s|%s|%s" "$A" "$B" "${C-unset}"',
        opts=("--sync", "--env", "A=1", "--env", "B=x=y z", "--env", "C="),
    )
    assert j["status"] == "SUCCEEDED"
    assert j["env"] == {"A": "1", "B": "x=y z", "C": ""}
    with open(j["stdout_file"]) as f:
        assert f.read() == "1|x=y z|"


def test_job_sees_its_run_key_and_job_id(start_job):
    j = start_job("env-marker", "sh", "-c", 'printf "%s" "$ORCHESJOB_JOB_ID"', opts=("--sync",))
    with open(j["stdout_file"]) as f:
        assert f.read() == j["job_id"]


@pytest.mark.timeout(90)
def test_timeout_aborts_with_reason(start_job, tmp_path):
    pids = tmp_path / "pids"
    t0 = time.monotonic()
    j = start_job("timeout", "sh", "-c", 'echo $$ > "$0"; sleep 300', str(pids), opts=("--sync", "--timeout", "1"))
    assert time.monotonic() - t0 < 60, "the --timeout of 1s did not stop the job"
    assert j["timeout"] == 1
    assert j["status"] == "ABORTED", j
    reason = "%s %s" % (j["abort_reason"], j["end_reason"])
    assert "time" in reason.lower(), reason
    assert j["finished_at"] is not None
    wait_pids_gone(read_pids(pids) + [j["target_pid"]])


@pytest.mark.timeout(120)
def test_timeout_stops_a_command_that_traps_sigterm(start_job, tmp_path):
    pids = tmp_path / "pids"
    t0 = time.monotonic()
    j = start_job(
        "timeout-trap",
        "sh",
        "-c",
        'trap "" TERM; echo $$ > "$0"; while :; do sleep 0.2; done',
        str(pids),
        opts=("--sync", "--timeout", "1"),
    )
    assert time.monotonic() - t0 < 90, "a TERM-trapping command outlived its --timeout"
    assert j["status"] == "ABORTED" and "time" in (j["abort_reason"] or "").lower(), j
    wait_pids_gone(read_pids(pids) + [j["target_pid"]])


def test_timeout_kept_with_job(start_job, ok):
    j = start_job("timeout-kept", "true", opts=("--sync", "--timeout", "2.5"))
    assert j["timeout"] == 2.5 and j["status"] == "SUCCEEDED"
    assert ok("status", "--job-id", j["job_id"])["timeout"] == 2.5


def test_double_dash_inside_command_is_passed_verbatim(start_job):
    j = start_job("dashes", "echo", "--", "--run-key", "x", opts=("--sync",))
    assert j["command"] == ["echo", "--", "--run-key", "x"]
    with open(j["stdout_file"]) as f:
        assert f.read() == "-- --run-key x\n"


# -- rerun ----------------------------------------------------------------------------------------------------------
def test_rerun_reuses_command_cwd_env_timeout(start_job, ok, tmp_path):
    d = tmp_path / "rr"
    d.mkdir()
    first = start_job(
        "rerun",
        "sh",
        "-c",
        'pwd; echo "$V"; exit 1',
        opts=("--sync", "--cwd", str(d), "--env", "V=val", "--timeout", "50"),
    )
    assert first["status"] == "FAILED"
    again = ok("rerun", "--run-key", "rerun", "--sync", "--reason", "retry after fix")
    assert again["job_id"] != first["job_id"]
    assert again["accepted"] is True and again["existing"] is False and again["mode"] == "sync"
    assert again["rerun_of_job_id"] == first["job_id"]
    assert again["rerun_reason"] == "retry after fix"
    assert again["attempt_no"] == 2
    assert again["command"] == first["command"]
    assert again["cwd"] == str(d) and again["env"] == {"V": "val"} and again["timeout"] == 50
    assert again["status"] == "FAILED" and again["exit_code"] == 1
    with open(again["stdout_file"]) as f:
        assert f.read() == "%s\nval\n" % d
    hist = ok("status", "--run-key", "rerun", "--all")
    assert [h["attempt_no"] for h in hist] == [2, 1]


def test_rerun_async_and_by_job_id(start_job, ok, wait_terminal):
    a = start_job("rerun-id", "true", opts=("--sync",))
    b = start_job("rerun-id", "true", opts=("--sync",))
    assert b["attempt_no"] == 2
    r = ok("rerun", "--job-id", a["job_id"], "--start-timeout", "10")
    assert r["mode"] == "async" and r["rerun_of_job_id"] == a["job_id"] and r["attempt_no"] == 3
    assert r["rerun_reason"] is None
    assert wait_terminal(r["job_id"])["status"] == "SUCCEEDED"


def test_rerun_ignores_strict(start_job, ok):
    a = start_job("rerun-strict", "true", opts=("--sync", "--strict"))
    r = ok("rerun", "--run-key", "rerun-strict", "--sync")
    assert r["job_id"] != a["job_id"] and r["status"] == "SUCCEEDED" and r["attempt_no"] == 2


def test_rerun_of_active_job_is_exit_4(start_job, run, assert_error, ok):
    j = start_job("rerun-active", "sleep", "30")
    assert_error(run("rerun", "--run-key", "rerun-active"), 4, "inconsistent_state")
    assert_error(run("rerun", "--job-id", j["job_id"]), 4, "inconsistent_state")
    hist = ok("status", "--run-key", "rerun-active", "--all")
    assert len(hist) == 1


def test_rerun_of_older_attempt_while_latest_active_is_exit_4(start_job, run, assert_error, ok):
    a = start_job("rerun-old", "true", opts=("--sync",))
    start_job("rerun-old", "sleep", "30")
    assert_error(run("rerun", "--job-id", a["job_id"]), 4, "inconsistent_state")
    assert len(ok("status", "--run-key", "rerun-old", "--all")) == 2


def test_rerun_unknown_is_exit_3(run, assert_error, start_job):
    assert_error(run("rerun", "--run-key", "nope"), 3, "not_found")
    start_job("something", "true", opts=("--sync",))
    assert_error(run("rerun", "--run-key", "nope"), 3, "not_found")
    assert_error(run("rerun", "--job-id", "00000000-0000-4000-8000-000000000000"), 3, "not_found")
