"""abort (reason, grace, whole tree, TERM-trapping commands) and unlock (ttl, expiry, consumption)."""

import sys
import time

import pytest

from tests.support.cli import pid_alive, read_pids, wait_pids_gone, wait_until

pytestmark = pytest.mark.timeout(120)

# A job whose command writes its own pid, a child's and a grandchild's that left the session with setsid.
TREE = r"""
import os, subprocess, sys, time
pids = sys.argv[1]
def note(pid):
    with open(pids, "a") as f:
        f.write("%d\n" % pid)
note(os.getpid())
child = subprocess.Popen(["sleep", "300"])
note(child.pid)
code = "import os, sys, time; os.setsid(); open(sys.argv[1], 'a').write('%d\\n' % os.getpid()); time.sleep(300)"
grandparent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.Popen(sys.argv[1:]); "
                                "import time; time.sleep(300)", sys.executable, "-c", code, pids])
note(grandparent.pid)
time.sleep(300)
"""


def _start_tree(start_job, key, pids_file, trap_term=False):
    script = TREE
    if trap_term:
        script = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + script
    j = start_job(key, sys.executable, "-c", script, str(pids_file))
    wait_until(lambda: len(read_pids(pids_file)) >= 4, 30, what="the job tree to write its pids")
    pids = read_pids(pids_file)
    assert all(pid_alive(p) for p in pids)
    return j, pids


def test_abort_running_job(start_job, ok, run, assert_error, tmp_path):
    j, pids = _start_tree(start_job, "ab", tmp_path / "pids")
    t0 = time.monotonic()
    a = ok("abort", "--run-key", "ab", "--reason", "manual intervention", "--grace-seconds", "10")
    assert time.monotonic() - t0 < 45
    assert a["job_id"] == j["job_id"] and a["run_key"] == "ab"
    assert a["status"] == "ABORTED" and a["aborted"] is True
    assert a["abort_reason"] == "manual intervention"
    assert isinstance(a["aborted_at"], int) and a["aborted_at_iso"]
    for f in ("sent_term_target", "sent_term_worker", "sent_kill_target", "sent_kill_worker"):
        assert isinstance(a[f], bool), f
    assert a["sent_term_target"] is True and a["sent_term_worker"] is True
    # the whole tree is gone: target, child, and the grandchild that called setsid
    wait_pids_gone(pids + [j["target_pid"], j["worker_pid"]], timeout=15)
    s = ok("status", "--job-id", j["job_id"])
    assert s["status"] == "ABORTED" and s["abort_reason"] == "manual intervention" and s["active"] is False
    assert s["finished_at"] is not None
    # the record says how it ended: the target died of the SIGTERM
    s = wait_until(
        lambda: (lambda x: x if x["signal"] else None)(ok("status", "--job-id", j["job_id"])),
        30,
        what="the signal to be recorded",
    )
    assert s["signal"] == 15 and s["signal_name"] == "SIGTERM" and s["exit_code"] is None, s
    assert s["status"] == "ABORTED" and "manual intervention" in s["end_reason"]
    assert_error(run("abort", "--job-id", j["job_id"]), 4, "inconsistent_state")


def test_abort_sigkills_a_command_that_traps_sigterm(start_job, ok, tmp_path):
    j, pids = _start_tree(start_job, "trap", tmp_path / "pids", trap_term=True)
    t0 = time.monotonic()
    a = ok("abort", "--job-id", j["job_id"], "--grace-seconds", "1")
    assert time.monotonic() - t0 < 45
    assert a["status"] == "ABORTED"
    assert a["sent_term_target"] is True and a["sent_kill_target"] is True
    wait_pids_gone(pids + [j["target_pid"]], timeout=15)
    s = wait_until(
        lambda: (lambda x: x if x["signal"] else None)(ok("status", "--job-id", j["job_id"])),
        30,
        what="the signal to be recorded",
    )
    assert s["status"] == "ABORTED" and s["signal"] == 9 and s["signal_name"] == "SIGKILL", s


def test_abort_shell_that_ignores_term(start_job, ok, tmp_path):
    pids = tmp_path / "pids"
    j = start_job("trap-sh", "sh", "-c", 'trap "" TERM; echo $$ >> "$0"; while :; do sleep 0.2; done', str(pids))
    wait_until(lambda: read_pids(pids), 30, what="pid file")
    a = ok("abort", "--run-key", "trap-sh", "--grace-seconds", "0.5")
    assert a["sent_kill_target"] is True
    wait_pids_gone(read_pids(pids), timeout=15)
    assert ok("status", "--job-id", j["job_id"])["status"] == "ABORTED"


def test_sync_caller_returns_aborted_when_job_is_aborted_elsewhere(home, ok, tmp_path):
    import subprocess

    from tests.support.cli import cli_argv, cli_env, parse_json

    started = tmp_path / "started"
    p = subprocess.Popen(
        cli_argv("start", "--run-key", "sync-ab", "--sync", "--", "sh", "-c", 'touch "$0"; sleep 300', str(started)),
        env=cli_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_until(started.exists, 30, what="the job to start")
    ok("abort", "--run-key", "sync-ab", "--reason", "from elsewhere", "--grace-seconds", "2")
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    j = parse_json(out.decode())
    assert j["status"] == "ABORTED" and j["abort_reason"] == "from elsewhere" and j["mode"] == "sync"


def test_abort_of_finished_job_is_exit_4(start_job, run, assert_error, ok):
    j = start_job("fin", "true", opts=("--sync",))
    assert_error(run("abort", "--run-key", "fin"), 4, "inconsistent_state")
    assert_error(run("abort", "--job-id", j["job_id"], "--reason", "x"), 4, "inconsistent_state")
    s = ok("status", "--job-id", j["job_id"])
    assert s["status"] == "SUCCEEDED" and s["abort_reason"] is None


def test_abort_unknown_is_exit_3(run, assert_error, start_job):
    assert_error(run("abort", "--run-key", "nope"), 3, "not_found")
    start_job("x", "true", opts=("--sync",))
    assert_error(run("abort", "--run-key", "nope"), 3, "not_found")
    assert_error(run("abort", "--job-id", "nope"), 3, "not_found")
    assert_error(run("abort"), 2, "invalid_argument")


def test_abort_then_strict_start_sees_key_consumed(start_job, ok):
    j = start_job("ab-strict", "sleep", "30", opts=("--strict",))
    ok("abort", "--run-key", "ab-strict", "--grace-seconds", "1")
    again = start_job("ab-strict", "sleep", "30", opts=("--strict",))
    assert again["existing"] is True and again["accepted"] is False and again["job_id"] == j["job_id"]
    assert again["status"] == "ABORTED"


# -- unlock ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ttl,seconds", [("90", 90), ("45s", 45), ("30m", 1800), ("2h", 7200), ("1d", 86400)])
def test_unlock_ttl_units(start_job, ok, ttl, seconds):
    start_job("u", "true", opts=("--sync", "--strict"))
    u = ok("unlock", "--run-key", "u", "--reason", "data fix", "--ttl", ttl)
    assert u["unlocked"] is True and u["run_key"] == "u" and u["reason"] == "data fix"
    assert u["expires_at"] - u["allowed_at"] == seconds
    assert u["allowed_at_iso"] and u["expires_at_iso"]


def test_unlock_allows_one_strict_rerun_and_is_consumed(start_job, ok):
    first = start_job("uk", "true", opts=("--sync", "--strict"))
    blocked = start_job("uk", "true", opts=("--sync", "--strict"))
    assert blocked["existing"] is True and blocked["job_id"] == first["job_id"]
    u = ok("unlock", "--run-key", "uk", "--reason", "data fix")
    assert u["expires_at"] is None and u["expires_at_iso"] is None
    second = start_job("uk", "true", opts=("--sync", "--strict"))
    assert second["accepted"] is True and second["existing"] is False
    assert second["job_id"] != first["job_id"] and second["attempt_no"] == 2
    assert second["strict_override_used"] is True
    # the unlock's reason, in our field and where orchesjob 1.1.0 puts it; the attempt it follows
    assert second["override_reason"] == "data fix" and second["rerun_reason"] == "data fix"
    assert second["rerun_of_job_id"] == first["job_id"]
    third = start_job("uk", "true", opts=("--sync", "--strict"))
    assert third["existing"] is True and third["job_id"] == second["job_id"]
    assert third["strict_override_used"] is False


def test_unlock_expires(start_job, ok):
    first = start_job("ux", "true", opts=("--sync", "--strict"))
    unlocked = ok("unlock", "--run-key", "ux", "--ttl", "1")
    # usable while the clock (whole seconds) is before expires_at: wait until it is not
    wait_until(lambda: time.time() >= unlocked["expires_at"] + 0.05, 10, step=0.05, what="the unlock to expire")
    again = start_job("ux", "true", opts=("--sync", "--strict"))
    assert again["existing"] is True and again["job_id"] == first["job_id"]
    assert again["strict_override_used"] is False


def test_unlock_does_not_affect_default_start(start_job, ok):
    start_job("ud", "true", opts=("--sync", "--strict"))
    ok("unlock", "--run-key", "ud")
    a = start_job("ud", "true", opts=("--sync",))  # default mode starts anew anyway
    assert a["accepted"] is True


def test_unlock_of_active_key_is_exit_4(start_job, run, assert_error):
    start_job("ua", "sleep", "30", opts=("--strict",))
    assert_error(run("unlock", "--run-key", "ua"), 4, "inconsistent_state")


def test_unlock_unknown_key_is_exit_3(run, assert_error, start_job, home):
    assert_error(run("unlock", "--run-key", "nope"), 3, "not_found")
    start_job("other", "true", opts=("--sync",))
    assert_error(run("unlock", "--run-key", "nope", "--ttl", "5m"), 3, "not_found")
    assert_error(run("unlock"), 2, "invalid_argument")


def test_no_new_attempt_while_an_aborted_job_is_still_dying(home, start_job, ok, tmp_path):
    """Abort marks ABORTED first; until its tree is gone, a start must return that job rather than run beside it."""
    import subprocess

    from tests.support.cli import cli_argv, cli_env

    marker = tmp_path / "runs"
    command = ["sh", "-c", 'echo run >> "$0"; trap "" TERM; while :; do sleep 0.1; done', str(marker)]
    j = start_job("dying", *command)
    wait_until(marker.exists, 30, what="the job to start")
    aborter = subprocess.Popen(
        cli_argv("abort", "--run-key", "dying", "--grace-seconds", "10"),  # room for the checks below under load
        env=cli_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_until(lambda: ok("status", "--job-id", j["job_id"])["status"] == "ABORTED", 30, what="ABORTED")
    assert aborter.poll() is None, "the abort should still be in its grace period"
    during = ok("start", "--run-key", "dying", "--", *command)
    assert during["existing"] is True and during["job_id"] == j["job_id"] and during["status"] == "ABORTED"
    assert marker.read_text().split() == ["run"]
    aborter.communicate(timeout=90)
    assert aborter.returncode == 0
    after = ok("start", "--run-key", "dying", "--", *command)
    assert after["existing"] is False and after["attempt_no"] == 2
    ok("abort", "--job-id", after["job_id"], "--grace-seconds", "0.5")


def test_an_abort_that_died_midway_is_settled_once_nothing_is_alive(home, start_job, ok, db, tmp_path):
    j = start_job("half-aborted", "sleep", "300")
    wait_until(lambda: ok("status", "--job-id", j["job_id"])["status"] == "RUNNING", 30, what="RUNNING")
    # what an `abort` killed right after marking the job leaves behind: ABORTED, no finish time, processes alive
    db().execute(
        "UPDATE jobs SET status = 'ABORTED', abort_reason = 'x', aborted_at = 1 WHERE job_id = ?", (j["job_id"],)
    )
    s = ok("start", "--run-key", "half-aborted", "--", "sleep", "300")
    assert s["existing"] is True and s["status"] == "ABORTED" and s["finished_at"] is None
    import os
    import signal as sig

    os.kill(j["worker_pid"], sig.SIGKILL)  # nobody left to record the end: the next reader must settle it
    wait_pids_gone([j["worker_pid"]], timeout=30)
    assert ok("status", "--job-id", j["job_id"])["finished_at"] is None  # still dying: not settled yet
    os.killpg(j["target_pid"], sig.SIGKILL)
    wait_pids_gone([j["target_pid"]], timeout=30)
    settled = ok("status", "--job-id", j["job_id"])
    assert settled["status"] == "ABORTED" and settled["finished_at"] is not None
    assert settled["end_reason"] == "aborted: x"
    nxt = ok("start", "--run-key", "half-aborted", "--", "true")
    assert nxt["existing"] is False and nxt["attempt_no"] == 2


def test_wait_does_not_return_before_an_abort_has_finished(home, start_job, ok, tmp_path):
    import subprocess

    from tests.support.cli import cli_argv, cli_env

    marker = tmp_path / "up"
    j = start_job("wait-abort", "sh", "-c", 'touch "$0"; trap "" TERM; while :; do sleep 0.1; done', str(marker))
    wait_until(marker.exists, 30, what="the job to start")
    aborter = subprocess.Popen(
        cli_argv("abort", "--job-id", j["job_id"], "--grace-seconds", "3"),
        env=cli_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_until(lambda: ok("status", "--job-id", j["job_id"])["status"] == "ABORTED", 30, what="ABORTED")
    w = ok("wait", "--job-id", j["job_id"], "--timeout", "60")
    assert w["timed_out"] is False and w["status"] == "ABORTED"
    assert w["finished_at"] is not None and w["signal"] == 9, w  # the record is closed: how it ended is known
    aborter.communicate(timeout=60)
