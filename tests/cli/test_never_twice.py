"""Holes in "never twice, never lost" found by adversarial testing, each reproduced with real processes.

Races are made deterministic with the CLI's pause points (ORCHESJOB_PAUSE_AT=NAME makes the process SIGSTOP itself
at that step): a test stops one process exactly inside the window, lets another act, and resumes the first with
SIGCONT. Every command the jobs run appends a line to a file outside the state directory, so "how many times did
it run" is counted from evidence the CLI cannot fake.
"""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cli import (
    check_error,
    check_ok,
    cli_argv,
    cli_env,
    pid_alive,
    popen_cli,
    run_cli,
    stat_state,
    wait_pids_gone,
    wait_until,
)
from tests.support.procs import environ, processes_of_home, stopped_supervisor

UNSHARE = shutil.which("unshare")


def counting(marker: Path, *then: str) -> list:
    """A command that records one line per execution in `marker`, then runs `then` (a shell snippet)."""
    script = 'echo "$$" >> %s; %s' % (marker, " ".join(then) or "true")
    return ["sh", "-c", script]


def runs(marker: Path) -> int:
    try:
        return len(marker.read_text().split())
    except FileNotFoundError:
        return 0


def stopped(pid: int) -> bool:
    return stat_state(pid) == "T"


def db_row(home: Path, job_id: str) -> dict:
    import sqlite3

    c = sqlite3.connect(str(home / "orchesjob.db"), timeout=30)
    c.row_factory = sqlite3.Row
    try:
        return dict(c.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone())
    finally:
        c.close()


def only_job_id(home: Path) -> str:
    import sqlite3

    c = sqlite3.connect(str(home / "orchesjob.db"), timeout=30)
    try:
        rows = c.execute("SELECT job_id FROM jobs").fetchall()
    finally:
        c.close()
    assert len(rows) == 1, rows
    return rows[0][0]


# -- 1. a racing reader must not declare a live job LOST ------------------------------------------------------------
def test_a_job_whose_caller_died_before_its_supervisor_recorded_itself_is_alive_and_runs_once(home, tmp_path):
    """The supervisor holds the job's lock from the moment it is forked (it inherits the caller's): with the caller
    killed and the supervisor not yet recorded, a reader finds the lock held and never reaches a LOST verdict."""
    marker = tmp_path / "runs"
    caller = popen_cli(
        home,
        "start",
        "--run-key",
        "race",
        "--",
        *counting(marker, "sleep 20"),
        env={"ORCHESJOB_PAUSE_AT": "supervisor-before-record"},
    )
    sup = stopped_supervisor(home, caller.pid)
    caller.kill()
    caller.wait()
    job_id = only_job_id(home)
    assert db_row(home, job_id)["status"] == "STARTING"

    reader = popen_cli(home, "status", "--job-id", job_id, env={"ORCHESJOB_PAUSE_AT": "lost-verdict"})
    out, err = reader.communicate(timeout=60)  # it would stop itself (and hang here) on its way to a LOST verdict
    shown = json.loads(out)
    assert shown["status"] == "STARTING" and shown["liveness"] == "verified", (shown, err)
    os.kill(sup, signal.SIGCONT)  # the supervisor records itself and launches the command
    wait_until(lambda: db_row(home, job_id)["status"] == "RUNNING", 30, what="the job to be RUNNING")
    wait_until(lambda: runs(marker) == 1, 30, what="the command to start")
    again = check_ok(run_cli(home, "start", "--run-key", "race", "--", *counting(marker)))
    assert again["existing"] is True and again["job_id"] == job_id
    assert check_ok(run_cli(home, "status", "--job-id", job_id))["status"] == "RUNNING"
    time.sleep(0.5)  # a negative check: no second execution shows up within half a second
    assert runs(marker) == 1


def test_a_job_whose_caller_died_before_spawning_its_supervisor_is_lost_and_never_launched(home, tmp_path):
    """Proof of death: the caller took the job's lock before the row existed and died holding it, before any
    supervisor existed to inherit it. The lock is free, so the job is LOST; nothing was or will be launched, and
    the next start runs the command (once)."""
    marker = tmp_path / "runs"
    caller = popen_cli(
        home, "start", "--run-key", "late", "--", *counting(marker), env={"ORCHESJOB_PAUSE_AT": "start-before-spawn"}
    )
    wait_until(lambda: stopped(caller.pid), 30, what="the caller to stop before spawning its supervisor")
    caller.kill()
    caller.wait()
    job_id = only_job_id(home)
    lost = check_ok(run_cli(home, "status", "--job-id", job_id))
    # the record says only what is known: no launch was recorded (a supervisor killed between its launch and its
    # commit leaves the same row, so the reason cannot claim the command never ran; the run marker proves it here)
    assert lost["status"] == "LOST" and "before a launch of its command was recorded" in lost["end_reason"], lost
    assert not processes_of_home(home)
    nxt = check_ok(run_cli(home, "start", "--run-key", "late", "--sync", "--", *counting(marker)))
    assert nxt["attempt_no"] == 2 and nxt["status"] == "SUCCEEDED"
    assert runs(marker) == 1


def test_a_database_locked_when_the_supervisor_opens_it_delays_the_job_and_loses_nothing(home, tmp_path):
    """The job is committed and its supervisor spawned when the database becomes unreadable for three times
    ORCHESJOB_LOCK_TIMEOUT (an exclusive lock: in WAL mode a reader can be refused too, e.g. while a writer
    switches the journal mode or hundreds of CLIs start at once). The supervisor used to give up at its first read
    (the job LOST, never launched) and the caller answered lock_timeout, "nothing was done", for a job that existed.
    Both wait the lock out now: the caller answers with the job, which runs once."""
    import sqlite3

    marker = tmp_path / "runs"
    caller = popen_cli(
        home,
        "start",
        "--run-key",
        "busy-open",
        "--",
        *counting(marker),
        env={"ORCHESJOB_PAUSE_AT": "start-before-spawn", "ORCHESJOB_LOCK_TIMEOUT": "1"},
    )
    wait_until(lambda: stopped(caller.pid), 30, what="the caller to stop before spawning its supervisor")
    holder = sqlite3.connect(str(home / "orchesjob.db"), isolation_level=None, timeout=30)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")  # no other connection can read now, WAL or not
        os.kill(caller.pid, signal.SIGCONT)
        # the fault is a lock held longer than the timeout: hold it three times as long while both processes open
        time.sleep(3)
        assert runs(marker) == 0
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    out, err = caller.communicate(timeout=120)
    assert caller.returncode == 0, (out, err)
    job = json.loads(out)
    assert job["accepted"] is True and job["status"] in ("RUNNING", "SUCCEEDED"), job
    done = check_ok(run_cli(home, "wait", "--job-id", job["job_id"], "--timeout", "60"))
    assert done["status"] == "SUCCEEDED", done
    assert runs(marker) == 1


def test_a_reader_delayed_before_its_lost_verdict_records_nothing_once_a_result_is_there(home, tmp_path):
    """The verdict is taken again under the write lock: a result file that appeared after the reader looked (the
    supervisor wrote it, could not reach the locked database, and was killed) wins over LOST."""
    import sqlite3

    go = tmp_path / "go"
    job = check_ok(
        run_cli(
            home, "start", "--run-key", "res", "--", "sh", "-c", 'while [ ! -e "$0" ]; do sleep 0.05; done', str(go)
        )
    )
    result = Path(job["stdout_file"][: -len(".stdout")] + ".result")
    reader = None
    holder = sqlite3.connect(str(home / "orchesjob.db"), isolation_level=None, timeout=30)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the supervisor's record of the end waits; its result file does not
        go.touch()
        wait_until(result.exists, 30, what="the result file")
        os.kill(job["worker_pid"], signal.SIGKILL)  # now the result is only in the file
        wait_pids_gone([job["worker_pid"]])
        result.rename(result.with_suffix(".hidden"))  # the reader must not see it before its verdict
        reader = popen_cli(home, "status", "--job-id", job["job_id"], env={"ORCHESJOB_PAUSE_AT": "lost-verdict"})
        wait_until(lambda: stopped(reader.pid), 30, what="the reader to stop before its LOST verdict")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    result.with_suffix(".hidden").rename(result)
    os.kill(reader.pid, signal.SIGCONT)
    out, err = reader.communicate(timeout=60)
    assert json.loads(out)["status"] != "LOST", (out, err)
    final = check_ok(run_cli(home, "status", "--job-id", job["job_id"]))
    assert final["status"] == "SUCCEEDED" and final["exit_code"] == 0


# -- 2. a reader in another pid namespace -------------------------------------------------------------------------
def _in_new_pid_ns(home: Path, *args: str, mount_proc: bool = True):
    assert UNSHARE, "unshare (util-linux) is needed"
    cmd = [UNSHARE, "--pid", "--fork"] + (["--mount-proc"] if mount_proc else []) + cli_argv(*args)
    p = subprocess.run(cmd, env=cli_env(home), stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    return p.returncode, json.loads(p.stdout.decode() or "null"), p.stderr.decode()


@pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"), reason="unshare --pid needs root")
@pytest.mark.parametrize("mount_proc", [True, False], ids=["own-proc", "parent-proc"])
def test_a_reader_in_another_pid_namespace_judges_by_the_locks_and_aborts_through_the_supervisor(
    home, tmp_path, mount_proc
):
    """Pids mean nothing in another pid namespace, locks and FIFOs mean the same everywhere: such a reader sees
    the job alive (verified), returns it instead of starting, cleans nothing of it, and its abort is carried out
    by the job's supervisor."""
    assert UNSHARE, "unshare (util-linux) is needed"
    marker = tmp_path / "runs"
    job = check_ok(run_cli(home, "start", "--run-key", "ns", "--", *counting(marker, "sleep 30")))
    assert job["status"] == "RUNNING"
    assert job["pid_namespace"] and job["pid_namespace"].startswith("pid:[")

    code, shown, err = _in_new_pid_ns(home, "status", "--run-key", "ns", mount_proc=mount_proc)
    assert code == 0, err
    assert shown["status"] == "RUNNING" and shown["liveness"] == "verified"
    code, again, err = _in_new_pid_ns(
        home, "start", "--run-key", "ns", "--reuse-success", "--", *counting(marker), mount_proc=mount_proc
    )
    assert code == 0, err
    assert again["existing"] is True and again["job_id"] == job["job_id"]
    code, cleaned, err = _in_new_pid_ns(home, "clean", "--all", mount_proc=mount_proc)
    assert code == 0 and cleaned["deleted"] == 0, (cleaned, err)
    code, aborted, err = _in_new_pid_ns(home, "abort", "--run-key", "ns", "--grace-seconds", "1", mount_proc=mount_proc)
    assert code == 0, (aborted, err)
    assert aborted["status"] == "ABORTED" and aborted["finished_at"] and aborted["signal_name"] == "SIGTERM"
    wait_pids_gone([job["target_pid"], job["worker_pid"]])
    assert runs(marker) == 1


@pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"), reason="unshare --pid needs root")
def test_without_its_supervisor_a_job_in_another_pid_namespace_is_alive_and_not_aborted_from_there(home, tmp_path):
    """Its supervisor killed, the command still holds the job lock: alive everywhere. From another pid namespace
    nothing of it can be verified, so abort refuses; from its own, abort stops the verified processes."""
    assert UNSHARE, "unshare (util-linux) is needed"
    marker = tmp_path / "runs"
    job = check_ok(run_cli(home, "start", "--run-key", "orphan", "--", *counting(marker, "sleep 30")))
    os.kill(job["worker_pid"], signal.SIGKILL)
    wait_pids_gone([job["worker_pid"]])
    code, shown, err = _in_new_pid_ns(home, "status", "--run-key", "orphan")
    assert code == 0 and shown["status"] == "RUNNING" and shown["liveness"] == "verified", (shown, err)
    code, refused, err = _in_new_pid_ns(home, "abort", "--run-key", "orphan")
    assert code == 4 and refused["error"] == "other_pid_namespace", (refused, err)
    assert pid_alive(job["target_pid"])
    aborted = check_ok(run_cli(home, "abort", "--run-key", "orphan", "--grace-seconds", "1"))
    assert aborted["status"] == "ABORTED" and aborted["sent_term_target"] is True and aborted["finished_at"]
    wait_pids_gone([job["target_pid"]])
    assert runs(marker) == 1


# -- 3. clean never deletes a job that is still alive -------------------------------------------------------------
def test_clean_skips_an_aborted_job_whose_abort_died_midway(home, tmp_path):
    marker, termed = tmp_path / "runs", tmp_path / "termed"
    # the command notes the SIGTERM and lives on (its short sleeps die of it; the loop goes on for 30 s)
    survivor = "trap 'echo TERM >> %s' TERM; i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done" % termed
    job = check_ok(run_cli(home, "start", "--run-key", "dying", "--", *counting(marker, survivor)))
    aborter = popen_cli(home, "abort", "--run-key", "dying", "--grace-seconds", "20")
    wait_until(lambda: db_row(home, job["job_id"])["status"] == "ABORTED", 30, what="ABORTED to be recorded")
    # the SIGTERM is sent; the command survives it and the aborter waits out its grace
    wait_until(termed.exists, 30, what="the command to get the SIGTERM")
    aborter.kill()
    aborter.wait()
    assert pid_alive(job["target_pid"])

    for args in (("clean", "--all"), ("clean", "--run-key", "dying", "--all"), ("clean", "--all", "--dry-run")):
        cleaned = check_ok(run_cli(home, *args))
        assert cleaned["deleted"] == 0 and cleaned["items"] == [], cleaned
        assert [s["job_id"] for s in cleaned["skipped"]] == [job["job_id"]]
        assert "alive" in cleaned["skipped"][0]["reason"]
    # an abort that never finished has no finish time, so a time range does not even select it
    assert check_ok(run_cli(home, "clean", "--before", "2999-01-01T00:00:00"))["deleted"] == 0
    assert db_row(home, job["job_id"])["status"] == "ABORTED"
    check_error(run_cli(home, "clean", "--job-id", job["job_id"]), 4, "inconsistent_state")
    again = check_ok(run_cli(home, "start", "--run-key", "dying", "--", *counting(marker)))
    assert again["job_id"] == job["job_id"] and again["existing"] is True
    assert runs(marker) == 1

    os.killpg(job["target_pid"], signal.SIGKILL)
    wait_pids_gone([job["target_pid"], job["worker_pid"]])
    cleaned = check_ok(run_cli(home, "clean", "--all"))
    assert cleaned["deleted"] == 1 and cleaned["skipped"] == [], cleaned


def test_clean_skips_a_finished_job_with_a_live_process(home, tmp_path, db):
    """A record that says finished while a process of the job lives (a stop that failed): never deleted."""
    job = check_ok(run_cli(home, "start", "--run-key", "left", "--", "sleep", "30"))
    db().execute("UPDATE jobs SET status = 'FAILED', finished_at = 1, exit_code = 1 WHERE job_id = ?", (job["job_id"],))
    cleaned = check_ok(run_cli(home, "clean", "--all"))
    assert cleaned["deleted"] == 0 and cleaned["skipped"][0]["job_id"] == job["job_id"]
    os.kill(job["target_pid"], signal.SIGKILL)


# -- 4. a full state directory: the result waits, nothing reruns ---------------------------------------------------
FULL_DISK_SCRIPT = r"""
set -eu
mount -t tmpfs -o size=4m,mode=0700 tmpfs "$ORCHESJOB_HOME"
oj() { "$PY" -m orchesjob "$@"; }
oj start --run-key fill --reuse-success -- sh -c 'echo "$$" >> "$MARKER"; head -c 8M /dev/zero > "$ORCHESJOB_HOME/filler" 2>/dev/null || true; exit 7' > "$OUT/start.json"
# the command has run and ended; its result cannot be written anywhere in the state directory
i=0; while [ "$(wc -l < "$MARKER")" -lt 1 ] || [ ! -s "$ORCHESJOB_HOME/filler" ]; do sleep 0.1; i=$((i+1)); [ $i -lt 300 ]; done
sleep 2
oj status --run-key fill > "$OUT/status_full.json"
oj start --run-key fill --reuse-success -- sh -c 'echo "$$" >> "$MARKER"' > "$OUT/retry_full.json" || echo "retry exit $?" >> "$OUT/notes"
df -k "$ORCHESJOB_HOME" > "$OUT/df.txt"
rm -f "$ORCHESJOB_HOME/filler"
oj wait --run-key fill --timeout 60 > "$OUT/after.json"
oj start --run-key fill --reuse-success --sync -- sh -c 'echo "$$" >> "$MARKER"' > "$OUT/next.json"
"""


@pytest.mark.skipif(os.geteuid() != 0 and not os.environ.get("CI"), reason="mounting a tmpfs needs root")
def test_a_full_state_directory_keeps_the_job_alive_until_its_result_is_recorded(home, tmp_path):
    assert UNSHARE, "unshare (util-linux) is needed"
    marker = tmp_path / "runs"
    marker.touch()
    out = tmp_path / "out"
    out.mkdir()
    home.mkdir(mode=0o700)
    env = cli_env(home, {"MARKER": str(marker), "OUT": str(out), "PY": sys.executable})
    p = subprocess.run(
        [UNSHARE, "--mount", "--propagation", "private", "sh", "-c", FULL_DISK_SCRIPT],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=240,
    )
    assert p.returncode == 0, (p.stdout, p.stderr, [(f.name, f.read_text()) for f in out.iterdir()])
    first = json.loads((out / "start.json").read_text())
    during = json.loads((out / "status_full.json").read_text())
    assert during["job_id"] == first["job_id"]
    # the supervisor lives and keeps trying: never LOST. (RUNNING, or STARTING when the command filled the disk
    # before the record of its launch was committed: that record waits for space too.)
    assert during["status"] in ("RUNNING", "STARTING") and during["liveness"] == "verified", during
    retry = json.loads((out / "retry_full.json").read_text() or "null")
    assert retry is not None and retry["job_id"] == first["job_id"] and retry["existing"] is True, retry
    after = json.loads((out / "after.json").read_text())
    assert after["status"] == "FAILED" and after["exit_code"] == 7, after
    nxt = json.loads((out / "next.json").read_text())
    assert nxt["attempt_no"] == 2 and nxt["accepted"] is True  # a real failure is retried, exactly once more
    assert runs(marker) == 2


# -- 5. a repeated request returns what it answered, whatever happened since --------------------------------------
@pytest.mark.parametrize("mode", [(), ("--reuse-success",), ("--sync",)])
def test_a_repeated_request_id_never_starts_a_second_execution(home, tmp_path, mode):
    marker = tmp_path / "runs"
    first = check_ok(
        run_cli(home, "start", "--run-key", "req", "--request-id", "try-1", *mode, "--", *counting(marker, "exit 3"))
    )
    job_id = first["job_id"]
    wait_until(
        lambda: check_ok(run_cli(home, "status", "--job-id", job_id))["status"] == "FAILED", 30, what="the job to fail"
    )
    again = check_ok(
        run_cli(home, "start", "--run-key", "req", "--request-id", "try-1", *mode, "--", *counting(marker, "exit 3"))
    )
    assert again["job_id"] == job_id and again["existing"] is True and again["same_request"] is True
    assert again["status"] == "FAILED" and again["exit_code"] == 3
    assert runs(marker) == 1
    other = check_ok(
        run_cli(home, "start", "--run-key", "req", "--request-id", "try-2", *mode, "--", *counting(marker, "exit 0"))
    )
    assert other["accepted"] is True and other["attempt_no"] == 2 and other["rerun_of_job_id"] == job_id
    assert other["owner"] == "try-2" and other["request_id"] == "try-2"


def test_a_request_id_that_reattached_keeps_answering_with_that_job(home, tmp_path):
    marker, go = tmp_path / "runs", tmp_path / "go"
    # the job fails only once the test lets it: still running when the second request reattaches, however slow
    same = counting(marker, "n=0; while [ ! -e %s ] && [ $n -lt 600 ]; do sleep 0.05; n=$((n+1)); done; exit 4" % go)
    try:
        first = check_ok(run_cli(home, "start", "--run-key", "re", "--request-id", "a", "--", *same))
        reattach = check_ok(run_cli(home, "start", "--run-key", "re", "--request-id", "b", "--", *same))
    finally:
        go.touch()
    assert reattach["job_id"] == first["job_id"] and reattach["owner"] == "b"
    wait_until(lambda: check_ok(run_cli(home, "status", "--run-key", "re"))["status"] == "FAILED", 30, what="fail")
    repeat = check_ok(run_cli(home, "start", "--run-key", "re", "--request-id", "b", "--", *same))
    assert repeat["job_id"] == first["job_id"] and repeat["same_request"] is True
    assert runs(marker) == 1


@pytest.mark.parametrize("bad", ["", "x" * 129, "tab\there", "new\nline"])
def test_bad_request_ids_are_refused(home, bad):
    check_error(run_cli(home, "start", "--run-key", "k", "--request-id", bad, "--", "true"), 2, "invalid_argument")
    check_error(run_cli(home, "abort", "--run-key", "k", "--if-owner", bad), 2, "invalid_argument")
    assert not (home / "orchesjob.db").exists()  # a refused call creates nothing


# -- 6. an abort that lands between the supervisor's record and its launch ------------------------------------------
def test_an_abort_just_before_launch_means_the_command_never_starts(home, tmp_path):
    marker = tmp_path / "runs"
    caller = popen_cli(
        home,
        "start",
        "--run-key",
        "gate",
        "--start-timeout",
        "0.5",
        "--",
        *counting(marker),
        env={"ORCHESJOB_PAUSE_AT": "supervisor-before-launch"},
    )
    sup = stopped_supervisor(home, caller.pid)
    caller.communicate(timeout=60)
    job_id = only_job_id(home)
    aborted = check_ok(run_cli(home, "abort", "--job-id", job_id, "--grace-seconds", "1"))
    assert aborted["status"] == "ABORTED"
    os.kill(sup, signal.SIGCONT)
    wait_pids_gone([sup])
    time.sleep(0.3)  # a negative check: a command the resumed supervisor wrongly launched would show up by now
    assert runs(marker) == 0
    row = db_row(home, job_id)
    assert row["status"] == "ABORTED" and row["target_pid"] is None
    nxt = check_ok(run_cli(home, "start", "--run-key", "gate", "--sync", "--", *counting(marker)))
    assert nxt["attempt_no"] == 2 and nxt["status"] == "SUCCEEDED"
    assert runs(marker) == 1


# -- 8. abort never signals a process group that is not the job's ---------------------------------------------------
def test_abort_does_not_signal_a_recycled_process_group(home, db, spawn):
    job = check_ok(run_cli(home, "start", "--run-key", "grp", "--", "sleep", "30"))
    stranger = spawn(["setsid", "sleep", "60"])  # a session and group of its own: its pid is its pgid
    wait_until(lambda: os.getpgid(stranger.pid) == stranger.pid, 10, what="the stranger's own group")
    # the job's group id now names the stranger's group (as after the job's group emptied and the id was reused)
    db().execute("UPDATE jobs SET pgid = ? WHERE job_id = ?", (stranger.pid, job["job_id"]))
    aborted = check_ok(run_cli(home, "abort", "--run-key", "grp", "--grace-seconds", "1"))
    assert aborted["status"] == "ABORTED"
    wait_pids_gone([job["target_pid"]])  # the job's own (verified) process was still stopped
    time.sleep(0.2)  # a negative check: a signal sent to the stranger's group would have killed it by now
    assert stranger.poll() is None, "the stranger's process group was signalled"


# -- 10. a job started from inside a job is its own job -----------------------------------------------------------
def _gated_inner_start(go: Path) -> str:
    """A `start` of a job `child` as a shell line for a job to run: the child runs until `go` exists (60 s at most),
    so it is surely still running whatever the parent's end and the checks after it take."""
    loop = 'n=0; while [ ! -e "$0" ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done'
    return " ".join(shlex.quote(a) for a in cli_argv("start", "--run-key", "child", "--", "sh", "-c", loop, str(go)))


def test_a_job_started_from_inside_a_job_survives_its_parent(home, tmp_path):
    child_out, go = tmp_path / "child.json", tmp_path / "go"
    inner = _gated_inner_start(go)
    parent = check_ok(
        run_cli(
            home, "start", "--run-key", "parent", "--sync", "--", "sh", "-c", "%s > %s; exit 0" % (inner, child_out)
        )
    )
    assert parent["status"] == "SUCCEEDED", parent
    child = json.loads(child_out.read_text())
    assert child["status"] == "RUNNING"
    # the parent's leftover sweep ran when it ended; the child's supervisor must not have been taken for the parent's
    assert pid_alive(child["worker_pid"])
    go.touch()
    done = check_ok(run_cli(home, "wait", "--job-id", child["job_id"], "--timeout", "30"))
    assert done["status"] == "SUCCEEDED" and done["exit_code"] == 0, done


def test_a_nested_supervisor_carries_no_marker_of_the_parent(home, tmp_path):
    child_out, go = tmp_path / "child.json", tmp_path / "go"
    inner = _gated_inner_start(go)
    check_ok(run_cli(home, "start", "--run-key", "parent", "--sync", "--", "sh", "-c", "%s > %s" % (inner, child_out)))
    child = json.loads(child_out.read_text())
    try:
        env = environ(child["worker_pid"])
        assert len(env) > 1 and not [e for e in env if e.startswith(b"ORCHESJOB_JOB_ID=")], env
        # the launch can answer a moment before the kernel has set up the command's environment area (read empty)
        wait_until(lambda: environ(child["target_pid"]) != [b""], 30, what="the command's environment")
        assert ("ORCHESJOB_JOB_ID=%s" % child["job_id"]).encode() in environ(child["target_pid"])
    finally:
        go.touch()
    check_ok(run_cli(home, "abort", "--job-id", child["job_id"], "--grace-seconds", "1"))


# -- ownership: a replaced caller never aborts the job of the caller that replaced it --------------------------------
def test_abort_if_owner_is_refused_for_a_stale_owner_and_allowed_for_the_current_one(home, tmp_path):
    marker = tmp_path / "runs"
    first = check_ok(
        run_cli(home, "start", "--run-key", "own", "--request-id", "try-1", "--", *counting(marker, "sleep 30"))
    )
    assert first["owner"] == "try-1"
    second = check_ok(
        run_cli(home, "start", "--run-key", "own", "--request-id", "try-2", "--", *counting(marker, "sleep 30"))
    )
    assert second["job_id"] == first["job_id"] and second["owner"] == "try-2"
    refused = check_error(run_cli(home, "abort", "--run-key", "own", "--if-owner", "try-1"), 4, "not_owner")
    assert refused["owner"] == "try-2" and "try-1" in refused["message"]
    assert check_ok(run_cli(home, "status", "--run-key", "own"))["status"] == "RUNNING"
    done = check_ok(run_cli(home, "abort", "--run-key", "own", "--if-owner", "try-2", "--grace-seconds", "1"))
    assert done["status"] == "ABORTED"
    assert runs(marker) == 1


def test_a_start_answered_with_a_job_of_other_parameters_does_not_take_it_over(home, tmp_path):
    """Two callers share a run key with different commands. B is answered with A's running job, with
    parameters_match false, and refuses it: B must not become its owner, or A (whose job it is) could no longer
    abort it and a kill of B's task would. B's request is remembered all the same: its repeat gets the same answer.
    A caller that says it adopts the job anyway (--adopt-mismatch) does take it over."""
    marker = tmp_path / "runs"
    a = check_ok(
        run_cli(home, "start", "--run-key", "shared", "--request-id", "task-a", "--", *counting(marker, "sleep 30"))
    )
    assert a["owner"] == "task-a"
    b = check_ok(
        run_cli(home, "start", "--run-key", "shared", "--request-id", "task-b", "--", "sh", "-c", "echo other")
    )
    assert b["job_id"] == a["job_id"] and b["existing"] is True and b["parameters_match"] is False
    assert b["same_request"] is False and b["owner"] == "task-a"
    assert check_ok(run_cli(home, "status", "--run-key", "shared"))["owner"] == "task-a"
    repeat = check_ok(
        run_cli(home, "start", "--run-key", "shared", "--request-id", "task-b", "--", "sh", "-c", "echo other")
    )
    assert repeat["job_id"] == a["job_id"] and repeat["same_request"] is True
    assert repeat["parameters_match"] is False and repeat["owner"] == "task-a"
    refused = check_error(run_cli(home, "abort", "--run-key", "shared", "--if-owner", "task-b"), 4, "not_owner")
    assert refused["owner"] == "task-a"
    assert check_ok(run_cli(home, "status", "--run-key", "shared"))["status"] == "RUNNING"
    # a caller with the same parameters still takes the job over, as every reattach does
    c = check_ok(
        run_cli(home, "start", "--run-key", "shared", "--request-id", "task-c", "--", *counting(marker, "sleep 30"))
    )
    assert c["job_id"] == a["job_id"] and c["parameters_match"] is True and c["owner"] == "task-c"
    # and one that adopts the other parameters on purpose
    d = check_ok(
        run_cli(
            home, "start", "--run-key", "shared", "--request-id", "task-d", "--adopt-mismatch", "--", "sh", "-c", "x"
        )
    )
    assert d["job_id"] == a["job_id"] and d["parameters_match"] is False and d["owner"] == "task-d"
    check_error(run_cli(home, "start", "--run-key", "shared", "--adopt-mismatch", "--", "true"), 2, "invalid_argument")
    done = check_ok(run_cli(home, "abort", "--run-key", "shared", "--if-owner", "task-d", "--grace-seconds", "1"))
    assert done["status"] == "ABORTED"
    assert runs(marker) == 1


def test_the_owner_aborts_its_job_after_another_caller_refused_it(home, tmp_path):
    """A's job, B refused it (other parameters): A's own abort --if-owner still works (A's execution_timeout)."""
    marker = tmp_path / "runs"
    a = check_ok(run_cli(home, "start", "--run-key", "mine", "--request-id", "a", "--", *counting(marker, "sleep 30")))
    b = check_ok(run_cli(home, "start", "--run-key", "mine", "--request-id", "b", "--", *counting(marker, "sleep 1")))
    assert b["parameters_match"] is False and b["job_id"] == a["job_id"]
    done = check_ok(run_cli(home, "abort", "--run-key", "mine", "--if-owner", "a", "--grace-seconds", "1"))
    assert done["status"] == "ABORTED" and done["job_id"] == a["job_id"] and done["owner"] == "a"
    assert runs(marker) == 1


def test_stale_aborts_racing_reattaching_starts_never_abort_the_new_owner(home, tmp_path):
    """Whatever order a stale try's abort and a new try's reattach run in, the outcome is one of two consistent
    ones: the abort came first (the job is ABORTED, and the new try's start got the aborted job or a new attempt),
    or the reattach came first (the abort is refused and the job runs on). Never: the new owner's job aborted."""
    marker = tmp_path / "runs"
    for round_no in range(6):
        key = "race-%d" % round_no
        check_ok(run_cli(home, "start", "--run-key", key, "--request-id", "old", "--", *counting(marker, "sleep 30")))
        aborter = popen_cli(home, "abort", "--run-key", key, "--if-owner", "old", "--grace-seconds", "1")
        starter = popen_cli(home, "start", "--run-key", key, "--request-id", "new", "--", *counting(marker, "sleep 30"))
        pairs = [(aborter, aborter.communicate(timeout=60)), (starter, starter.communicate(timeout=60))]
        (_, (abort_raw, _)), (_, (start_raw, start_err)) = pairs
        abort_code, abort_out = aborter.returncode, json.loads(abort_raw)
        assert starter.returncode == 0, start_err
        start_out = json.loads(start_raw)
        if abort_code == 0:  # the abort won the lock first: the old owner's job was aborted before the reattach
            assert abort_out["status"] == "ABORTED"
            assert start_out["job_id"] == abort_out["job_id"] or start_out["accepted"] is True
        else:
            assert abort_code == 4 and abort_out["error"] == "not_owner", abort_out
            latest = check_ok(run_cli(home, "status", "--run-key", key))
            assert latest["status"] == "RUNNING" and latest["owner"] == "new"
            assert start_out["job_id"] == latest["job_id"]
        if check_ok(run_cli(home, "status", "--run-key", key))["active"]:
            check_ok(run_cli(home, "abort", "--run-key", key, "--grace-seconds", "1"))
