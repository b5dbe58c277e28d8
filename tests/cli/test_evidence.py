"""Verdicts rest on evidence that cannot be wrong: the second round of adversarial findings, each with real processes.

A job is alive while a lock of its own is held (the kernel releases it at death, in any pid or time namespace); the
supervisor signals its command's group only while the command is its unreaped child; nothing of a user's request
shows in any process's command line; the error path answers in JSON whatever the environment took away.
"""

from __future__ import annotations  # `X | None` annotations under Python 3.9 (the oldest supported)

import glob
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchesjob.store import database_error
from tests.support.cli import (
    REPO_ROOT,
    Result,
    check_error,
    check_ok,
    cli_argv,
    cli_env,
    parse_json,
    pid_alive,
    popen_cli,
    run_cli,
    stat_state,
    wait_pids_gone,
    wait_until,
)
from tests.support.procs import cmdline, environ, processes_of_home, stat_fields

CI = os.environ.get("CI") == "true"
UNSHARE = shutil.which("unshare")


def counting(marker: Path, then: str = "true") -> list:
    """A command that records one line per execution in `marker`, then runs `then` (a shell snippet)."""
    return ["sh", "-c", 'echo "$$" >> "$0"; %s' % then, str(marker)]


def runs(marker: Path) -> int:
    try:
        return len(marker.read_text().split())
    except FileNotFoundError:
        return 0


def take_pid(wanted: int, argv: list[str]) -> subprocess.Popen | None:
    """Start argv under the pid `wanted` if the kernel hands it out (root: /proc/sys/kernel/ns_last_pid), else None.

    How an adversary reproduces pid reuse on purpose: the next pid the kernel gives is ns_last_pid + 1."""
    for _ in range(50):
        try:
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(wanted - 1))
        except OSError:
            return None
        p = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL)
        if p.pid == wanted:
            return p
        p.kill()
        p.wait()
    return None


# -- 4. a request id stays answered after clean -----------------------------------------------------------------------
def test_a_request_repeated_after_clean_is_refused_never_run_again(home, tmp_path):
    marker = tmp_path / "runs"
    first = check_ok(
        run_cli(home, "start", "--run-key", "r", "--request-id", "try-1", "--sync", "--", *counting(marker))
    )
    assert first["status"] == "SUCCEEDED" and runs(marker) == 1
    cleaned = check_ok(run_cli(home, "clean", "--all"))
    assert cleaned["deleted"] == 1
    again = check_error(
        run_cli(home, "start", "--run-key", "r", "--request-id", "try-1", "--", *counting(marker)), 4, "request_cleaned"
    )
    assert again["job_id"] == first["job_id"] and again["job_status"] == "SUCCEEDED"
    assert "try-1" in again["message"] and first["job_id"] in again["message"]
    time.sleep(0.3)  # a command wrongly launched would have written its line by now
    assert runs(marker) == 1
    other = check_ok(
        run_cli(home, "start", "--run-key", "r", "--request-id", "try-2", "--sync", "--", *counting(marker))
    )
    assert other["existing"] is False and runs(marker) == 2


# -- 5. a reader in another time namespace ---------------------------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0 and not CI, reason="unshare --time needs root")
def test_a_reader_in_another_time_namespace_sees_a_running_job_alive(home, tmp_path):
    """Start times in /proc are shifted by a time namespace's boot-time offset; the locks do not care."""
    assert UNSHARE, "unshare (util-linux) is needed"
    marker = tmp_path / "runs"
    job = check_ok(run_cli(home, "start", "--run-key", "t", "--", *counting(marker, "sleep 60")))
    for offset in ("100000", "-5"):
        argv = [UNSHARE, "--time", "--fork", "--boottime", offset] + cli_argv("status", "--run-key", "t")
        p = subprocess.run(argv, env=cli_env(home), capture_output=True, timeout=60)
        if p.returncode != 0 and b"unshare failed" in p.stderr:
            if CI:
                pytest.fail("time namespaces are not available: %s" % p.stderr.decode())
            pytest.skip("time namespaces are not available: %s" % p.stderr.decode())
        shown = json.loads(p.stdout)
        assert (shown["status"], shown["liveness"]) == ("RUNNING", "verified"), (offset, shown, p.stderr)
        argv = [UNSHARE, "--time", "--fork", "--boottime", offset] + cli_argv(
            "start", "--run-key", "t", "--", *counting(marker)
        )
        again = json.loads(subprocess.run(argv, env=cli_env(home), capture_output=True, timeout=60).stdout)
        assert again["existing"] is True and again["job_id"] == job["job_id"]
    assert runs(marker) == 1
    assert check_ok(run_cli(home, "status", "--run-key", "t"))["status"] == "RUNNING"


# -- 8. Python below 3.9 ----------------------------------------------------------------------------------------------
def _python_38() -> str | None:
    roots = [os.path.expanduser("~/.pyenv")]
    candidates = []
    for root in roots:
        candidates += sorted(glob.glob(os.path.join(root, "versions", "3.8.*", "bin", "python")))
    on_path = shutil.which("python3.8")
    if on_path:
        candidates.append(on_path)
    for cand in candidates:
        try:
            if subprocess.run([cand, "-c", "import sys; assert sys.version_info[:2] == (3, 8)"]).returncode == 0:
                return cand
        except OSError:
            continue
    return None


@pytest.mark.parametrize("how", ["module", "zipapp"])
def test_python_3_8_refuses_with_json_and_starts_nothing(home, tmp_path, how):
    py38 = _python_38()
    if py38 is None:
        if CI:
            pytest.fail("no Python 3.8 found (pyenv's 3.8.x): under CI this is a failure")
        pytest.skip("no Python 3.8 found")
    marker = tmp_path / "runs"
    if how == "zipapp":
        pyz = tmp_path / "orchesjob.pyz"
        subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tools", "build_pyz.py"), str(pyz)], check=True)
        argv = [py38, str(pyz)]
        env = {k: v for k, v in cli_env(home).items() if k != "PYTHONPATH"}
    else:
        argv = [py38, "-m", "orchesjob"]
        env = cli_env(home)
    p = subprocess.run(
        argv + ["start", "--run-key", "old", "--", *counting(marker)], env=env, capture_output=True, timeout=60
    )
    out = json.loads(p.stdout)
    assert p.returncode == 1 and out["error"] == "unsupported_python" and out["python"].startswith("3.8."), p
    assert "Python 3.9 or newer" in out["message"] and b"Traceback" not in p.stderr
    time.sleep(0.3)
    assert not home.exists() and runs(marker) == 0


# -- 9, 10. signals only to a group that cannot have been recycled ---------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0 and not CI, reason="taking a chosen pid needs root (ns_last_pid)")
def test_a_supervisor_terminated_after_reaping_never_signals_a_recycled_group(home, tmp_path):
    """The command has ended and been reaped while the supervisor waits to record the result (the database is
    locked); its pid is free, and an unrelated session leader takes it. A SIGTERM to the supervisor then (an admin
    stopping one stuck in its result retries) must reach nobody: the hole was a killpg of that recycled group."""
    go = tmp_path / "go"
    job = check_ok(
        run_cli(
            home, "start", "--run-key", "reaped", "--", "sh", "-c", 'while [ ! -e "$0" ]; do sleep 0.05; done', str(go)
        )
    )
    result = Path(job["stdout_file"][: -len(".stdout")] + ".result")
    holder = sqlite3.connect(str(home / "orchesjob.db"), isolation_level=None, timeout=30)
    stranger = None
    try:
        holder.execute("BEGIN IMMEDIATE")
        go.touch()
        wait_until(result.exists, 30, what="the result file (the supervisor now waits for the database)")
        wait_until(lambda: stat_state(job["target_pid"]) is None, 30, what="the command to be reaped")
        stranger = take_pid(job["target_pid"], ["sleep", "300"])
        if stranger is None:
            pytest.fail("could not start a process under the freed pid %d" % job["target_pid"])
        os.kill(job["worker_pid"], signal.SIGTERM)
        time.sleep(0.5)  # a signal to the recycled group would have killed the stranger by now
        assert stranger.poll() is None, "the supervisor signalled a group that is no longer the job's"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        if stranger is not None:
            stranger.kill()
            stranger.wait()
    done = check_ok(run_cli(home, "wait", "--job-id", job["job_id"], "--timeout", "60"))
    assert done["status"] == "SUCCEEDED" and done["exit_code"] == 0


def test_the_command_stays_unreaped_while_its_leftovers_are_swept(home, tmp_path):
    """While the supervisor stops what a finished command left behind, the command is its zombie: its pid and group
    id cannot be handed to anyone else during the sweep (the hole: a quick command reaped at once, its group id
    reused, and the sweep's SIGKILL sent to whoever got it)."""
    child = tmp_path / "child"
    caller = popen_cli(
        home,
        "start",
        "--run-key",
        "quick",
        "--",
        "sh",
        "-c",
        'sleep 300 & echo $! > "$0"; exit 0',
        str(child),
        env={"ORCHESJOB_PAUSE_AT": "supervisor-before-sweep"},
    )
    caller.communicate(timeout=60)
    job = check_ok(run_cli(home, "status", "--run-key", "quick"))
    sup = job["worker_pid"]
    wait_until(lambda: stat_state(sup) == "T", 30, what="the supervisor to stop before its sweep")
    assert stat_state(job["target_pid"]) == "Z", "the command was reaped before the sweep"
    background = int(wait_until(lambda: child.exists() and child.read_text().strip(), 30))
    assert pid_alive(background)
    os.kill(sup, signal.SIGCONT)
    wait_pids_gone([background, sup], timeout=30)
    done = check_ok(run_cli(home, "status", "--run-key", "quick"))
    assert done["status"] == "SUCCEEDED" and done["exit_code"] == 0


def test_abort_after_a_supervisor_died_between_launch_and_record_stops_the_command(home, tmp_path):
    """A supervisor killed after it launched the command but before the commit recording it leaves a STARTING row
    without a target pid while the command runs on (found by the random kill -9 explorer). The row alone would say
    "nothing launched"; the command's lock says otherwise, so abort stops the command instead of just closing the
    record."""
    child = tmp_path / "child"
    caller = popen_cli(
        home,
        "start",
        "--run-key",
        "half",
        "--",
        "sh",
        "-c",
        'echo $$ > "$0"; exec sleep 300',
        str(child),
        env={"ORCHESJOB_PAUSE_AT": "supervisor-after-launch"},
    )
    out, err = caller.communicate(timeout=60)
    assert caller.returncode == 0, err
    started = json.loads(out)
    command = int(wait_until(lambda: child.exists() and child.read_text().strip(), 30, what="the command to start"))
    sup = started["worker_pid"]
    wait_until(lambda: stat_state(sup) == "T", 30, what="the supervisor to stop after the launch")
    os.kill(sup, signal.SIGKILL)  # its write transaction rolls back: the launch is never recorded
    wait_pids_gone([sup], timeout=30)
    seen = check_ok(run_cli(home, "status", "--run-key", "half"))
    assert seen["status"] == "STARTING" and not seen.get("target_pid"), seen
    assert seen["liveness"] == "verified", seen
    assert pid_alive(command)
    aborted = check_ok(run_cli(home, "abort", "--run-key", "half", "--grace-seconds", "5"))
    assert aborted["status"] == "ABORTED"
    wait_pids_gone([command], timeout=30)
    final = check_ok(run_cli(home, "status", "--run-key", "half"))
    assert final["status"] == "ABORTED" and final["finished_at"], final


def test_abort_while_the_supervisor_waits_to_launch_closes_the_record_and_nothing_starts(home, tmp_path):
    """The other side of the same rule: with its supervisor alive (holding its lock) and not yet launched, abort
    closes the record at once and the supervisor, deciding under the write lock, launches nothing."""
    marker = tmp_path / "runs"
    caller = popen_cli(
        home,
        "start",
        "--run-key",
        "early",
        "--",
        *counting(marker),
        env={"ORCHESJOB_PAUSE_AT": "supervisor-before-launch"},
    )
    out, err = caller.communicate(timeout=60)
    assert caller.returncode == 0, err
    sup = json.loads(out)["worker_pid"]
    wait_until(lambda: stat_state(sup) == "T", 30, what="the supervisor to stop before the launch")
    aborted = check_ok(run_cli(home, "abort", "--run-key", "early"))
    assert aborted["status"] == "ABORTED" and aborted["finished_at"]
    assert "before its command was launched" in aborted["end_reason"]
    os.kill(sup, signal.SIGCONT)
    wait_pids_gone([sup], timeout=30)
    assert runs(marker) == 0
    final = check_ok(run_cli(home, "status", "--run-key", "early"))
    assert final["status"] == "ABORTED" and not final.get("target_pid")


# -- 11. a shared directory named as the state directory ---------------------------------------------------------------
def test_a_shared_directory_as_state_directory_is_never_chmoded(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(str(shared), 0o1777)
    (shared / "someone-elses-file").write_text("x")
    r = run_cli(shared, "status", "--run-key", "k")
    check_error(r, 3, "not_found")
    assert stat.S_IMODE(os.lstat(str(shared)).st_mode) == 0o1777
    job = check_ok(run_cli(shared, "start", "--run-key", "k", "--sync", "--", "true"))
    assert job["status"] == "SUCCEEDED"
    assert stat.S_IMODE(os.lstat(str(shared)).st_mode) == 0o1777
    assert stat.S_IMODE(os.lstat(str(shared / "orchesjob.db")).st_mode) == 0o600
    assert stat.S_IMODE(os.lstat(str(shared / "logs")).st_mode) == 0o700
    r = run_cli(shared, "status", "--run-key", "k")
    assert check_ok(r)["status"] == "SUCCEEDED" and "left as it is" in r.err
    assert stat.S_IMODE(os.lstat(str(shared)).st_mode) == 0o1777


# -- 12. nothing of the user's on any command line ---------------------------------------------------------------------
@pytest.mark.parametrize("form", ["argv", "request"])
def test_no_env_value_cwd_or_argument_shows_on_a_command_line(home, tmp_path, form):
    secret_env, secret_arg = "hunter2-envvalue", "argument-only-the-command-may-show"
    workdir = tmp_path / "cwd-holding-a-secret-name"
    workdir.mkdir()
    go = tmp_path / "go"
    command = ["sh", "-c", 'while [ ! -e "$0" ]; do sleep 0.05; done', str(go), secret_arg]
    if form == "argv":
        r = run_cli(
            home, "start", "--run-key", "s", "--env", "TOKEN=" + secret_env, "--cwd", str(workdir), "--", *command
        )
    else:
        request = {"run_key": "s", "env": {"TOKEN": secret_env}, "cwd": str(workdir), "command": command}
        p = subprocess.run(
            cli_argv("start", "--request", "-"),
            env=cli_env(home),
            input=json.dumps(request).encode() + b"\n",
            capture_output=True,
            timeout=60,
        )
        assert p.returncode == 0, p.stderr
        out = p.stdout.decode()
        r = Result(p.returncode, parse_json(out), out, p.stderr.decode())
    job = check_ok(r)
    target = job["target_pid"]
    try:
        # The launch returns once the command's exec has replaced its memory, a moment before the kernel has set up
        # its argument and environment areas (both read empty until then): wait for them, then look at everyone.
        wait_until(lambda: cmdline(target)[:2] == [b"sh", b"-c"] and environ(target) != [b""], 30, what="the exec")
        parents = {pid: (stat_fields(pid) or ["?", "0"])[1] for pid in processes_of_home(home)}
        shown = {pid: b"\0".join(cmdline(pid)) for pid in parents}
        assert job["worker_pid"] in shown and target in shown
        for pid, line in shown.items():
            assert secret_env.encode() not in line, (pid, line)
            assert b"cwd-holding-a-secret-name" not in line, (pid, line)
            # the command itself may show its arguments, and so may its own child in the instant between its
            # fork and its exec (sh forks for each `sleep`), which still has the command's command line
            if target not in (pid, int(parents[pid])):
                assert secret_arg.encode() not in line, (pid, line)
        assert shown[job["worker_pid"]].startswith(b"orchesjob supervisor " + job["job_id"].encode())
        assert ("TOKEN=" + secret_env).encode() in environ(target)  # the command still gets it
    finally:
        go.touch()
    done = check_ok(run_cli(home, "wait", "--job-id", job["job_id"], "--timeout", "30"))
    assert done["status"] == "SUCCEEDED" and done["env"] == {"TOKEN": secret_env} and done["cwd"] == str(workdir)


# -- 14. closed standard streams ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("closed", ["2>&-", ">&-", "<&-"])
def test_start_with_a_closed_standard_stream_runs_the_command_once(home, tmp_path, closed):
    marker = tmp_path / "runs"
    argv = " ".join("'%s'" % a for a in cli_argv("start", "--run-key", "c", "--sync", "--", *counting(marker)))
    p = subprocess.run(["sh", "-c", "exec %s %s" % (argv, closed)], env=cli_env(home), capture_output=True, timeout=60)
    assert p.returncode == 0, p
    assert b"Traceback" not in p.stdout + p.stderr
    if closed != ">&-":
        assert json.loads(p.stdout)["status"] == "SUCCEEDED"
    job = check_ok(run_cli(home, "status", "--run-key", "c"))
    assert job["status"] == "SUCCEEDED" and job["attempt_no"] == 1 and runs(marker) == 1


# -- 15. the error path without descriptors or memory ----------------------------------------------------------------
@pytest.mark.parametrize("limit", ["-n 5", "-n 6", "-n 7", "-v 15000", "-v 16000", "-v 20000"])
def test_the_error_path_answers_in_json_under_tight_limits(home, tmp_path, limit):
    check_ok(run_cli(home, "start", "--run-key", "l", "--sync", "--", "true"))
    for args in (("status", "--run-key", "l"), ("start", "--run-key", "l2", "--", "true")):
        argv = " ".join("'%s'" % a for a in cli_argv(*args))
        p = subprocess.run(["sh", "-c", "ulimit %s; exec %s" % (limit, argv)], env=cli_env(home), capture_output=True)
        assert b"Traceback" not in p.stdout + p.stderr, (limit, args, p)
        out = json.loads(p.stdout)
        assert p.returncode == 0 or (p.returncode == 1 and out["error"] in ("os_error", "error")), (limit, out)
        if p.returncode:
            assert "descriptor" in out["message"] or "memory" in out["message"], out
    # whatever failed, no job was left half started
    for job in check_ok(run_cli(home, "status", "--running")):
        raise AssertionError("a job was left active: %s" % job)


_SHM_UNDER_A_LIMIT = r"""
import os, resource, sqlite3, subprocess, sys
from orchesjob import store
db = sys.argv[1]
# another process holds the database open, so this one must map the WAL's shared-memory file itself
holder = subprocess.Popen([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                           "c.execute('select * from t').fetchall(); sys.stdout.write('ready\\n'); sys.stdout.flush(); "
                           "sys.stdin.read()", db], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
assert holder.stdout.readline() == b"ready\n"
import json
found = {}
# the limit is this process's own size, plus a little where Python itself needs a page more to get that far (a
# MemoryError before SQLite's turn); SQLite's shared memory needs 32 KiB more, which no step grants
for extra in (0, 4096, 8192, 16384):
    with open("/proc/self/status") as f:
        size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (size + extra, resource.RLIM_INFINITY))
    try:
        sqlite3.connect(db).execute("select * from t").fetchall()
    except sqlite3.DatabaseError as exc:
        err = store.database_error(exc, db)
        found = {"sqlite": str(exc), "error": err.error_type, "message": str(err), "extra": extra}
    except MemoryError:
        continue
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    break
print(json.dumps(found))
holder.stdin.close()
holder.wait()
"""


def test_sqlite_out_of_address_space_is_named_as_memory_not_disk(tmp_path):
    """SQLite reports a failed mapping of its shared-memory file as "disk I/O error"; under `ulimit -v` that would
    send a user to check a healthy disk. A process that can map no memory now is told it is out of memory."""
    db = tmp_path / "x.db"
    conn = sqlite3.connect(str(db))
    conn.execute("pragma journal_mode=wal")
    conn.execute("create table t(x)")
    conn.commit()
    conn.close()
    p = subprocess.run(
        [sys.executable, "-c", _SHM_UNDER_A_LIMIT, str(db)],
        cwd=str(REPO_ROOT),
        capture_output=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out, "SQLite mapped its shared memory under an address-space limit of the process's own size"
    assert out["sqlite"] in ("disk I/O error", "out of memory"), out
    assert out["error"] == "os_error" and "ulimit -v" in out["message"] and str(db) in out["message"], out
    # the same message without that evidence (memory maps fine here) stays a database error, SQLite's words kept
    err = database_error(sqlite3.OperationalError("disk I/O error"), str(db))
    assert err.error_type == "database" and "disk I/O error" in str(err)


# -- 16. a setting no command can work with ----------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e9", "soon"])
def test_an_impossible_lock_timeout_is_refused_before_anything(home, value):
    err = check_error(
        run_cli(home, "start", "--run-key", "k", "--", "true", env={"ORCHESJOB_LOCK_TIMEOUT": value}),
        2,
        "invalid_argument",
    )
    assert "ORCHESJOB_LOCK_TIMEOUT" in err["message"]
    assert not home.exists()


# -- also seen: two watch entries of one job and cursor -------------------------------------------------------------
def test_two_watch_entries_of_one_cursor_record_the_further_offset(home, db):
    job = check_ok(run_cli(home, "start", "--run-key", "w", "--sync", "--", "sh", "-c", "printf 0123456789"))
    jid = job["job_id"]
    spec_far, spec_near = "%s:10:0:8:0:c" % jid, "%s:4:0:2:0:c" % jid
    check_ok(run_cli(home, "wait", "--watch", spec_far, "--watch", spec_near, "--timeout", "1"))
    rows = db().execute("SELECT stdout_offset FROM watch_cursors WHERE job_id = ? AND cursor = 'c'", (jid,)).fetchall()
    assert [r[0] for r in rows] == [8]
    check_ok(run_cli(home, "wait", "--watch", spec_near, "--watch", spec_near, "--timeout", "1"))
    rows = db().execute("SELECT stdout_offset FROM watch_cursors WHERE job_id = ? AND cursor = 'c'", (jid,)).fetchall()
    assert [r[0] for r in rows] == [8]  # never back


# -- the request on standard input -----------------------------------------------------------------------------------
def _request(home: Path, verb: str, request, *, keep_open: bool = False, extra_env=None):
    data = (request if isinstance(request, bytes) else json.dumps(request).encode()) + b"\n"
    p = subprocess.run(
        cli_argv(verb, "--request", "-"), env=cli_env(home, extra_env), input=data, capture_output=True, timeout=60
    )
    return p.returncode, json.loads(p.stdout) if p.stdout.strip() else None, p.stderr.decode()


def test_a_request_on_stdin_does_what_the_flags_do(home, tmp_path):
    state = tmp_path / "elsewhere"
    code, job, err = _request(
        home,
        "start",
        {
            "run_key": "req",
            "command": ["sh", "-c", 'echo "$GREETING from $PWD"; exit 4'],
            "env": {"GREETING": 'it\'s "quoted" $HOME `x` \\'},
            "cwd": str(tmp_path),
            "timeout": 30,
            "sync": True,
            "request_id": "r-1",
            "state_dir": str(state),
        },
    )
    assert code == 0, err
    assert job["status"] == "FAILED" and job["exit_code"] == 4 and job["request_id"] == "r-1"
    assert job["stdout_file"].startswith(str(state)) and not home.exists()
    assert Path(job["stdout_file"]).read_text() == 'it\'s "quoted" $HOME `x` \\ from %s\n' % tmp_path
    code, same, err = _request(home, "status", {"job_id": job["job_id"], "state_dir": str(state)})
    assert code == 0 and same["job_id"] == job["job_id"], err
    code, again, err = _request(
        home, "start", {"run_key": "req", "command": ["true"], "request_id": "r-1", "state_dir": str(state)}
    )
    assert code == 0 and again["same_request"] is True and again["job_id"] == job["job_id"], err


@pytest.mark.parametrize(
    "request_body, fragment",
    [
        (b"not json", "not a JSON object"),
        (b"[1, 2]", "must be a JSON object"),
        (b"", "holds no request"),
        ({"run_key": "k", "command": ["true"], "bogus": 1}, "no field 'bogus'"),
        ({"run_key": "k", "command": "true"}, "command must be a list of strings"),
        ({"run_key": "k", "command": ["true"], "sync": "yes"}, "sync must be true or false"),
        ({"run_key": "k", "command": ["true"], "env": {"A=B": "c"}}, "env must map names"),
        ({"run_key": "k", "command": ["true"], "state_dir": "relative/dir"}, "state_dir must be an absolute path"),
        ({"run_key": "", "command": ["true"]}, "--run-key must not be empty"),
        ({"run_key": "k", "command": []}, "command is required"),
        ({"run_key": "k", "command": ["true"], "timeout": True}, "timeout must be a string or a number"),
    ],
)
def test_a_bad_request_is_one_clear_error_and_starts_nothing(home, request_body, fragment):
    code, out, err = _request(home, "start", request_body)
    assert code == 2 and out["error"] == "invalid_argument" and fragment in out["message"], (out, err)
    assert not home.exists()


def test_request_mode_takes_no_other_arguments(home):
    check_error(run_cli(home, "start", "--request", "-", "--run-key", "k"), 2, "invalid_argument")
    check_error(run_cli(home, "status", "--run-key", "k", "--request", "-"), 2, "invalid_argument")


def test_a_watch_request_keeps_stdin_for_its_wake_on_eof(home):
    """The request is the first line of stdin; the end of stdin after it still cuts the long poll short."""
    job = check_ok(run_cli(home, "start", "--run-key", "w2", "--", "sleep", "60"))
    p = subprocess.Popen(
        cli_argv("wait", "--request", "-"),
        env=cli_env(home),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdin is not None
    p.stdin.write(json.dumps({"watch": [job["job_id"]], "timeout": 60, "wake_on_eof": True}).encode() + b"\n")
    p.stdin.flush()
    time.sleep(0.5)  # the watcher is in its long poll now (a wrong reading of stdin would have ended it already)
    assert p.poll() is None
    started = time.monotonic()
    p.stdin.close()
    p.stdin = None  # closed by hand: communicate() only reads now
    out, err = p.communicate(timeout=30)
    answer = json.loads(out)
    assert answer["woken"] is True and answer["timed_out"] is False, err
    assert time.monotonic() - started < 20


def test_a_request_of_arguments_is_read_as_a_command_line(home, tmp_path):
    """The provider's form: `argv` holds the command's arguments, `state_dir` (here under ~/) the directory."""
    fake_home = tmp_path / "h"
    fake_home.mkdir()
    argv = ["--run-key", "a", "--sync", "--env", "X=one; two $(three)", "--", "sh", "-c", 'printf %s "$X"']
    code, job, err = _request(home, "start", {"argv": argv, "state_dir": "~/st"}, extra_env={"HOME": str(fake_home)})
    assert code == 0 and job["status"] == "SUCCEEDED", err
    assert Path(job["stdout_file"]).read_text() == "one; two $(three)"
    assert job["stdout_file"].startswith(str(fake_home / "st" / "logs"))
    code, out, err = _request(home, "status", {"argv": ["--run-key", "a"], "run_key": "a"})
    assert code == 2 and "not both" in out["message"], out
    code, out, err = _request(home, "status", {"argv": ["--bogus"]})
    assert code == 2 and "unknown option --bogus" in out["message"], out
