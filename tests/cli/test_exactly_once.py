"""Exactly-once under real failures: concurrent starts, a killed supervisor, stuck STARTING, recycled pids,
a reboot, and a database that is locked when a job ends."""

import os
import signal
import subprocess

import pytest

from tests.support.cli import (
    check_error,
    check_ok,
    cli_argv,
    cli_env,
    leave_released_locks,
    parse_json,
    pid_alive,
    proc_start_time,
    read_pids,
    run_cli,
    wait_pids_gone,
    wait_until,
)

pytestmark = pytest.mark.timeout(180)

WAIT_FOR_FILE = 'echo x >> "$0"; echo $$ >> "$1"; while [ ! -e "$2" ]; do sleep 0.05; done'


def _lines(path):
    try:
        with open(str(path)) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


# -- concurrent starts ----------------------------------------------------------------------------------------------
@pytest.mark.timeout(300)
def test_concurrent_starts_run_exactly_once(home, tmp_path, ok, wait_terminal):
    marker, pids, release = tmp_path / "marker", tmp_path / "pids", tmp_path / "release"
    n = 32
    argv = cli_argv("start", "--run-key", "race", "--", "sh", "-c", WAIT_FOR_FILE, str(marker), str(pids), str(release))
    env = cli_env(home)
    procs = [
        subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(n)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        results.append((p.returncode, parse_json(out.decode()), err.decode()))
    bad = [(rc, err) for rc, js, err in results if rc != 0 or js is None]
    assert not bad, bad[:3]
    ids = {js["job_id"] for _, js, _ in results}
    assert len(ids) == 1, "callers got different jobs: %s" % ids
    assert sum(1 for _, js, _ in results if js["accepted"]) == 1
    assert sum(1 for _, js, _ in results if js["existing"]) == n - 1
    assert _lines(marker) == ["x"], "the command ran %d times" % len(_lines(marker))
    release.touch()
    job = wait_terminal(ids.pop())
    assert job["status"] == "SUCCEEDED"
    assert _lines(marker) == ["x"]
    assert len(ok("status", "--run-key", "race", "--all")) == 1


@pytest.mark.timeout(300)
def test_first_commands_on_a_new_state_directory_all_keep_their_jobs(tmp_path):
    """Many processes creating one database at once (a burst of tasks on a fresh host). When they set up an empty
    file together, one that opened it while the new WAL still held the first pages made SQLite delete that WAL:
    jobs committed by the others were gone (`start --sync` answered "Job not found", `status` "run_key not found",
    the command never ran), and a few got "locked" at once. Now the database appears whole or not at all
    (store._create_database), and every command runs its job and answers it."""
    failures = []
    for round_no in range(8):
        home = tmp_path / ("home%d" % round_no)
        ran = tmp_path / ("ran%d" % round_no)
        ran.mkdir()
        env = cli_env(home)
        procs = [
            subprocess.Popen(
                cli_argv("start", "--sync", "--run-key", "first-%d" % i, "--", "touch", str(ran / str(i))),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for i in range(24)
        ]
        for p in procs:
            out, err = p.communicate(timeout=240)
            js = parse_json(out.decode())
            if p.returncode != 0 or not js or js.get("status") != "SUCCEEDED":
                failures.append((round_no, p.returncode, err.decode()))
        assert sorted(os.listdir(ran), key=int) == [str(i) for i in range(24)], "every command ran, once"
        assert not [n for n in os.listdir(home) if ".new-" in n], "no half-made database is left"
    assert not failures, failures[:3]


def test_a_creation_killed_between_its_link_and_its_cleanup_leaves_nothing_in_the_way(home, ok):
    """A kill between the new database's link into place and the removal of its private name leaves the database
    with two names, which is refused as a planted link. The next command drops that second name (ours: the creation
    name's form, the same file); a second name of any other form is still refused."""
    ok("start", "--sync", "--run-key", "k", "--", "true")
    db = home / "orchesjob.db"
    os.link(str(db), str(home / "orchesjob.db.new-4242-0a0b0c0d"))
    assert ok("status", "--run-key", "k")["status"] == "SUCCEEDED"
    assert not (home / "orchesjob.db.new-4242-0a0b0c0d").exists() and os.stat(str(db)).st_nlink == 1
    os.link(str(db), str(home / "elsewhere.db"))
    err = check_error(run_cli(home, "status", "--run-key", "k"), 1, "state_dir")
    assert "hard links" in err["message"]
    assert (home / "elsewhere.db").exists()


@pytest.mark.timeout(300)
def test_concurrent_retries_after_a_failure_start_one_new_attempt(home, tmp_path, ok, start_job, wait_terminal):
    failed = start_job("race2", "false", opts=("--sync",))
    assert failed["status"] == "FAILED"
    marker, pids, release = tmp_path / "marker", tmp_path / "pids", tmp_path / "release"
    env = cli_env(home)
    procs = []
    for i in range(30):
        mode = ("--reuse-success",) if i % 2 else ()
        argv = cli_argv(
            "start", "--run-key", "race2", *mode, "--", "sh", "-c", WAIT_FOR_FILE, str(marker), str(pids), str(release)
        )
        procs.append(
            subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        )
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err
        outs.append(parse_json(out.decode()))
    ids = {o["job_id"] for o in outs}
    assert len(ids) == 1 and failed["job_id"] not in ids
    assert _lines(marker) == ["x"]
    release.touch()
    assert wait_terminal(ids.pop())["status"] == "SUCCEEDED"
    hist = ok("status", "--run-key", "race2", "--all")
    assert [h["attempt_no"] for h in hist] == [2, 1]


# -- a supervisor killed while the target runs ----------------------------------------------------------------------
def test_killed_supervisor_job_stays_running_and_is_not_started_twice(start_job, ok, tmp_path):
    marker, pids, release = tmp_path / "marker", tmp_path / "pids", tmp_path / "release"
    j = start_job("k9", "sh", "-c", WAIT_FOR_FILE, str(marker), str(pids), str(release))
    wait_until(lambda: read_pids(pids), what="the target to write its pid")
    os.kill(j["worker_pid"], signal.SIGKILL)
    wait_pids_gone([j["worker_pid"]])
    assert pid_alive(j["target_pid"])

    s = ok("status", "--run-key", "k9")
    assert s["status"] == "RUNNING" and s["active"] is True, s
    assert j["job_id"] in {x["job_id"] for x in ok("status", "--running")}
    for opts in ((), ("--strict",), ("--reuse-success",)):
        again = start_job("k9", "sh", "-c", WAIT_FOR_FILE, str(marker), str(pids), str(release), opts=opts)
        assert again["existing"] is True and again["job_id"] == j["job_id"], again
        assert again["status"] == "RUNNING"
    w = ok("wait", "--job-id", j["job_id"], "--timeout", "1")
    assert w["timed_out"] is True and w["status"] == "RUNNING"
    assert _lines(marker) == ["x"]
    assert len(ok("status", "--run-key", "k9", "--all")) == 1

    a = ok("abort", "--run-key", "k9", "--reason", "stop it", "--grace-seconds", "2")
    assert a["status"] == "ABORTED" and a["sent_term_target"] is True
    wait_pids_gone(read_pids(pids) + [j["target_pid"]], timeout=15)
    s = ok("status", "--job-id", j["job_id"])
    assert s["status"] == "ABORTED" and s["finished_at"] is not None
    assert _lines(marker) == ["x"]


def test_killed_supervisor_then_dead_target_is_lost(start_job, ok, tmp_path):
    marker, pids, release = tmp_path / "marker", tmp_path / "pids", tmp_path / "release"
    j = start_job("k9b", "sh", "-c", WAIT_FOR_FILE, str(marker), str(pids), str(release))
    wait_until(lambda: read_pids(pids), what="the target to write its pid")
    os.kill(j["worker_pid"], signal.SIGKILL)
    wait_pids_gone([j["worker_pid"]])
    assert ok("status", "--job-id", j["job_id"])["status"] == "RUNNING"
    os.killpg(j["target_pid"], signal.SIGKILL)
    wait_pids_gone(read_pids(pids) + [j["target_pid"]])
    s = ok("status", "--job-id", j["job_id"])
    assert s["status"] == "LOST" and s["active"] is False and s["end_reason"], s
    assert s["finished_at"] is not None
    assert ok("status", "--running") == []
    n = start_job("k9b", "true", opts=("--sync",))
    assert n["accepted"] is True and n["attempt_no"] == 2


def test_killed_supervisor_target_finishing_alone_is_lost_not_running_forever(start_job, ok, tmp_path):
    marker, pids, release = tmp_path / "marker", tmp_path / "pids", tmp_path / "release"
    j = start_job("k9c", "sh", "-c", WAIT_FOR_FILE, str(marker), str(pids), str(release))
    wait_until(lambda: read_pids(pids), what="the target to write its pid")
    os.kill(j["worker_pid"], signal.SIGKILL)
    wait_pids_gone([j["worker_pid"]])
    release.touch()
    wait_pids_gone(read_pids(pids))
    w = ok("wait", "--job-id", j["job_id"], "--timeout", "30")
    assert w["timed_out"] is False and w["status"] == "LOST"


def test_sync_caller_returns_when_supervisor_was_killed_and_target_ends(home, tmp_path, ok):
    marker, pids, release = tmp_path / "marker", tmp_path / "pids", tmp_path / "release"
    p = subprocess.Popen(
        cli_argv(
            "start",
            "--run-key",
            "k9sync",
            "--sync",
            "--",
            "sh",
            "-c",
            WAIT_FOR_FILE,
            str(marker),
            str(pids),
            str(release),
        ),
        env=cli_env(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    wait_until(lambda: read_pids(pids), what="the target to write its pid")
    # the command runs a moment before its supervisor commits RUNNING: the kill comes after that record
    j = wait_until(lambda: (lambda job: job["status"] == "RUNNING" and job)(ok("status", "--run-key", "k9sync")))
    os.kill(j["worker_pid"], signal.SIGKILL)
    wait_pids_gone([j["worker_pid"]])
    assert p.poll() is None and ok("status", "--run-key", "k9sync")["status"] == "RUNNING"
    release.touch()
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    r = parse_json(out.decode())
    assert r["job_id"] == j["job_id"] and r["status"] == "LOST", r


# -- a job stuck in STARTING ----------------------------------------------------------------------------------------
def _make_stuck_starting(start_job, db, dead_pid, key):
    j = start_job(key, "true", opts=("--sync",))
    wait_pids_gone([j["worker_pid"]])
    db().execute(
        "UPDATE jobs SET status = 'STARTING', worker_pid = ?, worker_start = '12345', target_pid = NULL, "
        "target_start = NULL, pgid = NULL, exit_code = NULL, signal = NULL, end_reason = NULL, finished_at = NULL "
        "WHERE job_id = ?",
        (dead_pid, j["job_id"]),
    )
    leave_released_locks(j)
    return j


def test_stuck_starting_with_dead_worker_is_lost_on_status(start_job, ok, db, dead_pid):
    j = _make_stuck_starting(start_job, db, dead_pid, "stuck")
    s = ok("status", "--run-key", "stuck")
    assert s["status"] == "LOST" and s["end_reason"], s
    assert ok("status", "--job-id", j["job_id"])["status"] == "LOST"


def test_stuck_starting_is_resolved_by_running_list_and_start(start_job, ok, db, dead_pid):
    j = _make_stuck_starting(start_job, db, dead_pid, "stuck2")
    assert ok("status", "--running") == []
    _make_stuck_starting(start_job, db, dead_pid, "stuck3")
    n = start_job("stuck3", "true", opts=("--sync",))
    assert n["accepted"] is True and n["existing"] is False and n["status"] == "SUCCEEDED"
    hist = ok("status", "--run-key", "stuck3", "--all")
    assert [h["status"] for h in hist] == ["SUCCEEDED", "LOST"]
    assert ok("status", "--job-id", j["job_id"])["status"] == "LOST"


# -- recycled pids --------------------------------------------------------------------------------------------------
def _wrong_start(pid):
    # the start time the *old* process had: earlier than that of the process now holding the pid
    start = proc_start_time(pid)
    assert start is not None, "pid %d is gone" % pid
    return str(max(0, int(start) - 100))


def test_recycled_pid_of_unrelated_process_is_lost(start_job, ok, run, db, spawn):
    j = start_job("recycled", "true", opts=("--sync",))
    wait_pids_gone([j["worker_pid"]])
    other = spawn(["sleep", "300"])  # unrelated, in the test's own process group
    me = os.getpid()
    db().execute(
        "UPDATE jobs SET status = 'RUNNING', worker_pid = ?, worker_start = ?, target_pid = ?, target_start = ?, "
        "pgid = ?, exit_code = NULL, end_reason = NULL, finished_at = NULL WHERE job_id = ?",
        (me, _wrong_start(me), other.pid, _wrong_start(other.pid), other.pid, j["job_id"]),
    )
    leave_released_locks(j)
    s = ok("status", "--job-id", j["job_id"])
    assert s["status"] == "LOST", "a recycled pid made a dead job look alive: %s" % s
    # only once it is known to be LOST is it safe to call abort with our own pid recorded as its worker
    check_error(run("abort", "--job-id", j["job_id"], "--grace-seconds", "0"), 4, "inconsistent_state")
    assert other.poll() is None and pid_alive(other.pid)


def test_recycled_pid_that_leads_its_own_group_is_lost_and_not_signalled(start_job, ok, run, db, spawn):
    """The pid (and so the process group id) now belongs to an unrelated daemon-like session leader."""
    j = start_job("recycled2", "true", opts=("--sync",))
    wait_pids_gone([j["worker_pid"]])
    target = spawn(["sleep", "300"], start_new_session=True)
    worker = spawn(["sleep", "300"])
    wait_until(lambda: proc_start_time(target.pid) and os.getpgid(target.pid) == target.pid)
    db().execute(
        "UPDATE jobs SET status = 'RUNNING', worker_pid = ?, worker_start = ?, target_pid = ?, target_start = ?, "
        "pgid = ?, exit_code = NULL, end_reason = NULL, finished_at = NULL WHERE job_id = ?",
        (worker.pid, _wrong_start(worker.pid), target.pid, _wrong_start(target.pid), target.pid, j["job_id"]),
    )
    leave_released_locks(j)
    s = run("status", "--job-id", j["job_id"])
    a = run("abort", "--job-id", j["job_id"], "--grace-seconds", "0.5")
    problems = []
    if s.json.get("status") != "LOST":
        problems.append("status says %s, expected LOST" % s.json.get("status"))
    if a.code != 4:
        problems.append("abort exit %d (%s), expected 4" % (a.code, a.out.replace("\n", " ")[:300]))
    if target.poll() is not None:
        problems.append("abort signalled an unrelated process (it died with %s)" % target.returncode)
    if worker.poll() is not None:
        problems.append("abort signalled the unrelated 'worker' process (%s)" % worker.returncode)
    assert not problems, problems


# -- reboot ---------------------------------------------------------------------------------------------------------
def test_changed_boot_id_is_lost_for_a_job_without_locks(start_job, ok, db):
    """A job recorded by an earlier build (no lock files) is dead once the host rebooted since it started."""
    j = start_job("boot", "sleep", "300")
    db().execute(
        "UPDATE jobs SET boot_id = '00000000-0000-0000-0000-000000000000', life_lock = 0 WHERE job_id = ?",
        (j["job_id"],),
    )
    s = ok("status", "--job-id", j["job_id"])
    assert s["status"] == "LOST" and "rebooted" in s["end_reason"], s
    assert ok("status", "--running") == []


def test_a_job_with_locks_is_judged_by_them_not_by_the_boot_id(start_job, ok, db):
    """Its supervisor's lock is held: it runs, whatever boot id was recorded (a live lock cannot be a reboot's)."""
    j = start_job("boot2", "sleep", "300")
    db().execute("UPDATE jobs SET boot_id = '00000000-0000-0000-0000-000000000000' WHERE job_id = ?", (j["job_id"],))
    s = ok("status", "--job-id", j["job_id"])
    assert s["status"] == "RUNNING" and s["liveness"] == "verified", s


# -- a locked database ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("exit_code", [0, 3])
def test_result_survives_a_locked_database(start_job, ok, run, db, home, tmp_path, exit_code):
    go = tmp_path / "go"
    fast = {"ORCHESJOB_LOCK_TIMEOUT": "1"}
    j = start_job(
        "locked-%d" % exit_code,
        "sh",
        "-c",
        'while [ ! -e "$0" ]; do sleep 0.05; done; exit %d' % exit_code,
        str(go),
        env=fast,
    )
    result_file = home / "logs" / (j["job_id"] + ".result")
    lock = db()
    lock.execute("BEGIN EXCLUSIVE")
    try:
        go.touch()
        wait_until(result_file.exists, 60, what="the supervisor to write the result file")
        r = run("status", "--job-id", j["job_id"], env=fast, timeout=60)
        assert r.code == 0, r
        assert r.json["status"] in ("RUNNING", "SUCCEEDED", "FAILED") and r.json["status"] != "LOST", r.json
        if r.json["status"] != "RUNNING":
            assert r.json["exit_code"] == exit_code
        assert run("status", "--running", env=fast).code == 0
    finally:
        lock.execute("ROLLBACK")
    want = "SUCCEEDED" if exit_code == 0 else "FAILED"
    s = wait_until(
        lambda: (lambda x: x if x["status"] != "RUNNING" else None)(ok("status", "--job-id", j["job_id"])),
        60,
        what="the result to be reconciled",
    )
    assert s["status"] == want and s["exit_code"] == exit_code, s
    wait_until(lambda: not result_file.exists(), 60, what="the result file to be applied and removed")
    wait_pids_gone([j["worker_pid"]], 60)
    s = ok("status", "--job-id", j["job_id"])
    assert s["status"] == want and s["exit_code"] == exit_code


def test_result_file_reconciled_after_supervisor_died(start_job, ok, db, home, tmp_path):
    """The supervisor wrote the result file, could not reach the database, and then died: not LOST."""
    go = tmp_path / "go"
    fast = {"ORCHESJOB_LOCK_TIMEOUT": "1"}
    j = start_job("locked-dead", "sh", "-c", 'while [ ! -e "$0" ]; do sleep 0.05; done; exit 5', str(go), env=fast)
    result_file = home / "logs" / (j["job_id"] + ".result")
    lock = db()
    lock.execute("BEGIN EXCLUSIVE")
    try:
        go.touch()
        wait_until(result_file.exists, 60, what="the supervisor to write the result file")
        os.kill(j["worker_pid"], signal.SIGKILL)
        wait_pids_gone([j["worker_pid"], j["target_pid"]])
    finally:
        lock.execute("ROLLBACK")
    s = ok("status", "--job-id", j["job_id"])
    assert s["status"] == "FAILED" and s["exit_code"] == 5, s
    assert not result_file.exists()
    assert ok("status", "--job-id", j["job_id"])["status"] == "FAILED"


def test_read_commands_answer_while_database_is_write_locked(start_job, ok, run, db):
    j = start_job("readlock", "sh", "-c", "echo hi; sleep 300")
    ok("wait", "--job-id", j["job_id"], "--stdout-offset", "0", "--timeout", "30")
    fast = {"ORCHESJOB_LOCK_TIMEOUT": "1"}
    lock = db()
    lock.execute("BEGIN EXCLUSIVE")
    try:
        for args in (
            ("status", "--run-key", "readlock"),
            ("status", "--job-id", j["job_id"]),
            ("status", "--running"),
            ("status", "--run-key", "readlock", "--all"),
            ("logs", "--run-key", "readlock", "--json"),
            ("wait", "--job-id", j["job_id"], "--timeout", "1"),
        ):
            r = run(*args, env=fast, timeout=60)
            assert r.code == 0, (args, r)
        assert run("logs", "--run-key", "readlock", env=fast).out == "hi\n"
        assert check_ok(run("status", "--run-key", "readlock", env=fast))["status"] == "RUNNING"
    finally:
        lock.execute("ROLLBACK")


def test_start_while_database_is_locked_is_exit_5_and_writes_nothing(start_job, ok, run, db):
    start_job("other", "true", opts=("--sync",))
    lock = db()
    lock.execute("BEGIN EXCLUSIVE")
    try:
        r = run("start", "--run-key", "blocked", "--", "true", env={"ORCHESJOB_LOCK_TIMEOUT": "1"})
        check_error(r, 5, "lock_timeout")
    finally:
        lock.execute("ROLLBACK")
    check_error(run("status", "--run-key", "blocked"), 3, "not_found")
