"""clean: selections, dry run, output shape, log files, active jobs, local time, bad datetimes."""

import os
import time

import pytest

from tests.support.cli import snapshot

pytestmark = pytest.mark.timeout(120)

CLEAN_KEYS = {"deleted", "errors", "dry_run", "items"}


def _files(job):
    return [job["stdout_file"], job["stderr_file"]]


def _check_shape(out, dry_run=False):
    assert CLEAN_KEYS <= set(out), out
    assert out["dry_run"] is dry_run
    assert isinstance(out["items"], list) and isinstance(out["deleted"], int) and isinstance(out["errors"], int)
    for it in out["items"]:
        assert {"job_id", "run_key", "selected_at", "selected_at_iso"} <= set(it), it


@pytest.mark.parametrize(
    "args",
    [
        ("--all",),
        ("--all", "--dry-run"),
        ("--before", "2999-01-01"),
        ("--after", "2000-01-01"),
        ("--job-id", "nothing-here"),
    ],
)
def test_clean_on_fresh_home_always_has_the_keys(run, assert_error, home, args):
    r = run("clean", *args)
    if "--job-id" in args:
        assert_error(r, 3, "not_found")
        return
    assert r.code == 0, r
    _check_shape(r.json, dry_run="--dry-run" in args)
    assert r.json["deleted"] == 0 and r.json["errors"] == 0 and r.json["items"] == []
    assert not home.exists()


def test_clean_nothing_matched_still_has_the_keys(start_job, ok):
    start_job("c", "true", opts=("--sync",))
    for args in (
        ("--before", "2000-01-01"),
        ("--after", "2999-01-01"),
        ("--all", "--run-key", "other"),
        ("--before", "2000-01-01", "--dry-run"),
    ):
        out = ok("clean", *args)
        _check_shape(out, dry_run="--dry-run" in args)
        assert out["deleted"] == 0 and out["errors"] == 0 and out["items"] == []
    assert ok("status", "--run-key", "c")["status"] == "SUCCEEDED"


def test_clean_all_removes_rows_and_logs(start_job, ok, run, assert_error, home):
    a = start_job("c1", "echo", "a", opts=("--sync",))
    b = start_job("c2", "sh", "-c", "echo b; exit 1", opts=("--sync",))
    out = ok("clean", "--all")
    _check_shape(out)
    assert out["deleted"] == 2 and out["errors"] == 0
    assert {i["job_id"] for i in out["items"]} == {a["job_id"], b["job_id"]}
    assert {i["run_key"] for i in out["items"]} == {"c1", "c2"}
    for f in _files(a) + _files(b):
        assert not os.path.exists(f), f
    assert_error(run("status", "--job-id", a["job_id"]), 3, "not_found")
    assert_error(run("status", "--run-key", "c2"), 3, "not_found")
    assert not any(p.name.endswith(".result") for p in (home / "logs").iterdir())


def test_clean_dry_run_changes_nothing(start_job, ok, home):
    a = start_job("d1", "echo", "a", opts=("--sync",))
    from tests.support.cli import wait_pids_gone

    wait_pids_gone([a["worker_pid"]])
    before = snapshot(home)
    out = ok("clean", "--all", "--dry-run")
    _check_shape(out, dry_run=True)
    assert [i["job_id"] for i in out["items"]] == [a["job_id"]]
    assert out["deleted"] == 1 and out["matched"] == 1  # what would be deleted, as orchesjob 1.1.0 reports it
    assert ok("status", "--job-id", a["job_id"])["status"] == "SUCCEEDED"
    for f in _files(a):
        assert os.path.exists(f)
    after = snapshot(home)
    # the database may be opened (and its -wal/-shm come and go), but no log file is touched
    assert {k: v for k, v in after.items() if k.startswith("logs")} == {
        k: v for k, v in before.items() if k.startswith("logs")
    }


def test_clean_by_job_id_and_run_key(start_job, ok, run, assert_error):
    a1 = start_job("k1", "true", opts=("--sync",))
    a2 = start_job("k1", "true", opts=("--sync",))
    b1 = start_job("k2", "true", opts=("--sync",))
    out = ok("clean", "--job-id", a1["job_id"])
    assert out["deleted"] == 1 and [i["job_id"] for i in out["items"]] == [a1["job_id"]]
    assert_error(run("status", "--job-id", a1["job_id"]), 3, "not_found")
    assert_error(run("clean", "--job-id", a1["job_id"]), 3, "not_found")
    out = ok("clean", "--all", "--run-key", "k2")
    assert [i["job_id"] for i in out["items"]] == [b1["job_id"]]
    assert ok("status", "--run-key", "k1")["job_id"] == a2["job_id"]
    # attempt numbers are never reused after clean
    assert start_job("k2", "true", opts=("--sync",))["attempt_no"] == 2


def test_clean_job_id_cannot_be_combined(run, assert_error, start_job):
    a = start_job("k", "true", opts=("--sync",))
    for extra in (("--all",), ("--run-key", "k"), ("--before", "2999-01-01"), ("--after", "2000-01-01")):
        assert_error(run("clean", "--job-id", a["job_id"], *extra), 2, "invalid_argument")
    assert_error(run("clean"), 2, "invalid_argument")
    assert_error(run("clean", "--run-key", "k"), 2, "invalid_argument")
    assert run("status", "--job-id", a["job_id"]).code == 0


def test_clean_never_deletes_active_jobs(start_job, ok, run, assert_error):
    done = start_job("act", "true", opts=("--sync",))
    live = start_job("act", "sleep", "30")
    other = start_job("act2", "sleep", "30")
    for args in (("--all",), ("--before", "2999-01-01"), ("--after", "2000-01-01"), ("--all", "--run-key", "act")):
        out = ok("clean", *args)
        ids = {i["job_id"] for i in out["items"]}
        assert live["job_id"] not in ids and other["job_id"] not in ids
    assert_error(run("clean", "--job-id", live["job_id"]), 4, "inconsistent_state")
    for j in (live, other):
        assert ok("status", "--job-id", j["job_id"])["status"] == "RUNNING"
        for f in _files(j):
            assert os.path.exists(f)
    assert_error(run("status", "--job-id", done["job_id"]), 3, "not_found")


def _fmt_local(ts, tz_env):
    """Format Unix seconds as a naive local datetime in the TZ given (computed in a child, like the CLI sees it)."""
    import subprocess
    import sys

    code = f"import time; print(time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime({ts})))"
    return subprocess.check_output([sys.executable, "-c", code], env=dict(os.environ, TZ=tz_env)).decode().strip()


@pytest.mark.parametrize("tz", ["JST-9", "EST+5"])
def test_clean_naive_datetimes_are_local_time(start_job, ok, tz):
    env = {"TZ": tz}
    j = start_job("tz", "true", opts=("--sync",), env=env)
    f = j["finished_at"]
    assert f is not None
    just_before = _fmt_local(f - 1, tz)
    just_after = _fmt_local(f + 1, tz)
    # --before a moment before it finished (local time): not selected. Read as UTC it would be hours off.
    assert ok("clean", "--before", just_before, "--dry-run", env=env)["items"] == []
    assert [i["job_id"] for i in ok("clean", "--before", just_after, "--dry-run", env=env)["items"]] == [j["job_id"]]
    assert ok("clean", "--after", just_after, "--dry-run", env=env)["items"] == []
    assert [i["job_id"] for i in ok("clean", "--after", just_before, "--dry-run", env=env)["items"]] == [j["job_id"]]
    # a date range around it, and the same instants with explicit offsets
    got = ok("clean", "--after", just_before, "--before", just_after, "--dry-run", env=env)["items"]
    assert [i["job_id"] for i in got] == [j["job_id"]]
    utc_before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(f - 1))
    utc_after = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(f + 1))
    assert ok("clean", "--before", utc_before, "--dry-run", env=env)["items"] == []
    assert len(ok("clean", "--before", utc_after, "--dry-run", env=env)["items"]) == 1
    out = ok("clean", "--after", just_before, "--before", just_after, env=env)
    assert out["deleted"] == 1


def test_clean_before_and_after(start_job, ok):
    j = start_job("ba", "true", opts=("--sync",))
    assert ok("clean", "--before", "2000-01-01", "--dry-run")["items"] == []
    assert ok("clean", "--after", "2999-01-01T00:00:00", "--dry-run")["items"] == []
    out = ok("clean", "--after", "2000-01-01 00:00", "--before", "2999-12-31")
    assert out["deleted"] == 1 and out["items"][0]["job_id"] == j["job_id"]
    assert out["items"][0]["selected_at"] == j["finished_at"]


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-45", "", "2026-01-01T25:00", "12/31/2025", "@x"])
def test_clean_garbage_datetime_is_exit_2(run, assert_error, start_job, home, bad):
    a = start_job("g", "true", opts=("--sync",))
    from tests.support.cli import wait_pids_gone

    wait_pids_gone([a["worker_pid"]])
    before = snapshot(home)
    assert_error(run("clean", "--before", bad), 2, "invalid_argument")
    assert_error(run("clean", "--after", bad), 2, "invalid_argument")
    assert snapshot(home) == before
