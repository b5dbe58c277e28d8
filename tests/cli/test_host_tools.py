"""The host tools, driven as a person or the monitoring stack would: `logs --follow` through a pipe and in a real
pseudo-terminal, `ls` on a terminal and not, `doctor` on a healthy home and on homes broken in each way it checks,
`metrics` read by the real Prometheus parser; and the queries behind them, each served by an index."""

import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import struct
import subprocess
import time
import unicodedata
from pathlib import Path
from typing import IO, Optional

import pytest

from orchesjob.store import SCHEMA_VERSION
from tests.support.cli import (
    REPO_ROOT,
    Pty,
    _kill_leftovers,
    check_error,
    check_ok,
    cli_argv,
    cli_env,
    read_to_end,
    read_until,
    run_cli,
    stat_state,
    wait_until,
    wait_until_waiting_on_a_job,
)

DATA = Path(__file__).resolve().parents[1] / "data"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
EXIT_JOB_DID_NOT_SUCCEED = 6
EXIT_INTERRUPTED = 130


# -- helpers --------------------------------------------------------------------------------------------------------
def fd_of(stream: Optional[IO[bytes]]) -> int:
    assert stream is not None
    return stream.fileno()


def read_of(stream: Optional[IO[bytes]]) -> bytes:
    assert stream is not None
    return stream.read()


def follow(home: Path, *args: str, env: Optional[dict[str, str]] = None) -> subprocess.Popen:
    """`orchesjob logs --follow ARGS` with its stdout and stderr as pipes."""
    return subprocess.Popen(
        cli_argv("logs", "--follow", *args),
        env=cli_env(home, env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
    )


def gate_job(start_job, tmp_path: Path, key: str, before: str, after: str, code: int = 0, stream: str = ""):
    """A job that prints `before`, waits until the test opens its gate, prints `after` and exits with `code`."""
    gate = tmp_path / ("gate-" + key)
    redirect = " >&2" if stream == "stderr" else ""
    script = "printf '%%s' %s%s; while [ ! -e %s ]; do sleep 0.02; done; printf '%%s' %s%s; exit %d" % (
        shlex.quote(before),
        redirect,
        shlex.quote(str(gate)),
        shlex.quote(after),
        redirect,
        code,
    )
    return start_job(key, "sh", "-c", script), gate


def cell_width(text: str) -> int:
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def db_row(home: Path, job_id: str) -> sqlite3.Row:
    c = sqlite3.connect(str(home / "orchesjob.db"))
    c.row_factory = sqlite3.Row
    try:
        return c.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    finally:
        c.close()


def db_exec(home: Path, sql: str, *args) -> None:
    c = sqlite3.connect(str(home / "orchesjob.db"), timeout=30, isolation_level=None)
    try:
        c.execute(sql, args)
    finally:
        c.close()


def kill_job_processes(job: dict) -> None:
    """SIGKILL a job's supervisor and command, so nothing of it is alive and nobody recorded its end."""
    for pid in (job["worker_pid"], job["target_pid"]):
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    wait_until(
        lambda: all(stat_state(p) in (None, "Z") for p in (job["worker_pid"], job["target_pid"]) if p),
        what="the job's processes to die",
    )


# -- logs --follow ------------------------------------------------------------------------------------------------
def test_follow_through_a_pipe_prints_as_the_log_grows_and_exits_0_when_the_job_succeeds(home, start_job, tmp_path):
    job, gate = gate_job(start_job, tmp_path, "grow", "one\n", "two\n")
    p = follow(home, "--job-id", job["job_id"])
    out = read_until(fd_of(p.stdout), b"one\n")
    time.sleep(0.3)  # a negative check: the follow does not end within this while the job runs
    assert p.poll() is None, "the follow ended while the job still runs"
    gate.touch()
    out = read_to_end(fd_of(p.stdout), buf=out)
    assert p.wait(30) == 0
    assert out == b"one\ntwo\n"
    assert read_of(p.stderr) == b""


def test_follow_exits_6_with_one_line_on_stderr_when_the_job_fails(home, start_job, tmp_path):
    job, gate = gate_job(start_job, tmp_path, "fails", "working\n", "broken\n", code=3)
    p = follow(home, "--run-key", "fails")
    out = read_until(fd_of(p.stdout), b"working\n")
    gate.touch()
    out = read_to_end(fd_of(p.stdout), buf=out)
    assert p.wait(30) == EXIT_JOB_DID_NOT_SUCCEED
    assert out == b"working\nbroken\n"
    err = read_of(p.stderr).decode()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("orchesjob: job %s (run key 'fails', attempt 1) FAILED: exited with code 3" % job["job_id"])


def test_follow_of_a_job_aborted_meanwhile_prints_everything_and_exits_6(home, start_job, ok):
    job = start_job("victim", "sh", "-c", "echo started; sleep 60; echo never")
    p = follow(home, "--job-id", job["job_id"])
    out = read_until(fd_of(p.stdout), b"started\n")
    ok("abort", "--job-id", job["job_id"], "--reason", "stop it", "--grace-seconds", "1")
    out = read_to_end(fd_of(p.stdout), buf=out)
    assert p.wait(30) == EXIT_JOB_DID_NOT_SUCCEED
    assert out == b"started\n"
    err = read_of(p.stderr).decode()
    assert "ABORTED: stop it" in err and "Traceback" not in err


def test_follow_of_a_finished_job_prints_its_log_and_its_outcome_at_once(home, start_job):
    job = start_job("done", "sh", "-c", "echo a; echo b; exit 2", opts=("--sync",))
    p = follow(home, "--run-key", "done")
    out, err = p.communicate(timeout=30)
    assert (p.returncode, out) == (EXIT_JOB_DID_NOT_SUCCEED, b"a\nb\n")
    assert "FAILED: exited with code 2" in err.decode() and job["job_id"] in err.decode()


def test_follow_in_a_pseudo_terminal(home, start_job, tmp_path):
    job, gate = gate_job(start_job, tmp_path, "tty", "on a terminal\n", "the end\n")
    t = Pty(home, "logs", "-f", "--job-id", job["job_id"])
    t.read_until(b"on a terminal\r\n")
    time.sleep(0.3)  # a negative check: the follow does not end within this while the job runs
    assert os.waitpid(t.pid, os.WNOHANG) == (0, 0), "the follow ended while the job still runs"
    gate.touch()
    code, out = t.finish()
    assert code == 0
    assert out == "on a terminal\nthe end\n"


def test_ctrl_c_on_the_terminal_ends_the_follow_quietly_with_130(home, start_job):
    start_job("long", "sh", "-c", "echo started; sleep 60")
    t = Pty(home, "logs", "--follow", "--run-key", "long")
    t.read_until(b"started\r\n")
    os.write(t.fd, b"\x03")  # the terminal turns it into SIGINT for its foreground process group
    code, out = t.finish()
    assert code == EXIT_INTERRUPTED
    assert "Traceback" not in out and "error" not in out and "interrupted" not in out
    assert out.replace("^C", "").strip() == "started"


def test_sigint_ends_a_follow_through_a_pipe_quietly_with_130(home, start_job):
    job = start_job("long", "sh", "-c", "echo started; sleep 60")
    p = follow(home, "--job-id", job["job_id"])
    read_until(fd_of(p.stdout), b"started\n")
    p.send_signal(signal.SIGINT)
    assert p.wait(30) == EXIT_INTERRUPTED
    assert read_of(p.stderr) == b"" and read_of(p.stdout) == b""


def test_a_closed_pipe_ends_the_follow_quietly(home, start_job):
    start_job("chatty", "sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); sleep 0.01; done")
    cmd = '%s | head -1; echo "follow exited ${PIPESTATUS[0]}" >&2' % shlex.join(
        cli_argv("logs", "--follow", "--run-key", "chatty")
    )
    p = subprocess.run(
        ["bash", "-c", cmd], env=cli_env(home), stdin=subprocess.DEVNULL, capture_output=True, timeout=60, cwd=REPO_ROOT
    )
    assert p.stdout == b"line 0\n"
    assert p.stderr.decode() == "follow exited 0\n"  # no traceback, no "Exception ignored", exit 0 as `logs | head`


def test_follow_with_tail_and_stream_stderr(home, start_job, tmp_path):
    job, gate = gate_job(start_job, tmp_path, "tailed", "l1\nl2\nl3\nl4\nl5\n", "end\n", stream="stderr")
    p = follow(home, "--job-id", job["job_id"], "--stream", "stderr", "--tail", "2")
    out = read_until(fd_of(p.stdout), b"l5\n")
    assert out == b"l4\nl5\n"
    gate.touch()
    out = read_to_end(fd_of(p.stdout), buf=out)
    assert p.wait(30) == 0
    assert out == b"l4\nl5\nend\n"


def test_follow_from_an_offset_past_the_end_waits_there_and_a_truncated_log_is_followed_from_its_start(
    home, start_job, tmp_path
):
    job, gate = gate_job(start_job, tmp_path, "offset", "abc\n", "defgh\n")
    wait_until(lambda: os.path.getsize(job["stdout_file"]) == 4, what="the first line")
    p = follow(home, "--job-id", job["job_id"], "--offset", "6")
    wait_until_waiting_on_a_job(p.pid, what="the follow")  # it waits at offset 6, past the end
    gate.touch()
    assert read_to_end(fd_of(p.stdout)) == b"fgh\n"
    assert p.wait(30) == 0 and read_of(p.stderr) == b""

    job, gate = gate_job(start_job, tmp_path, "truncated", "before\n", "after\n")
    p = follow(home, "--job-id", job["job_id"])
    out = read_until(fd_of(p.stdout), b"before\n")
    os.truncate(job["stdout_file"], 0)  # as a log rotation by copy and truncate would
    read_until(fd_of(p.stderr), b"orchesjob: the log was truncated; following it from its start\n")
    gate.touch()
    assert read_to_end(fd_of(p.stdout), buf=out) == b"before\nafter\n"
    assert p.wait(30) == 0


def test_follow_by_run_key_goes_on_into_a_new_attempt_and_says_so(home, start_job, tmp_path):
    """A new attempt can only start once the followed one has ended; the follow is stopped right there (a pause
    point, as the other race tests use), the next attempt is started, and the follow is let go."""
    start_job("retried", "sh", "-c", "echo first; exit 1", opts=("--sync",))
    p = follow(home, "--run-key", "retried", env={"ORCHESJOB_PAUSE_AT": "follow-ended"})
    out = read_until(fd_of(p.stdout), b"first\n")
    wait_until(lambda: stat_state(p.pid) == "T", what="the follow to pause after attempt 1")
    second, gate = gate_job(start_job, tmp_path, "retried", "second\n", "done\n")
    assert second["attempt_no"] == 2
    os.kill(p.pid, signal.SIGCONT)
    out = read_until(fd_of(p.stdout), b"second\n", buf=out)
    gate.touch()
    while p.poll() is None:  # it pauses again after attempt 2
        if stat_state(p.pid) == "T":
            os.kill(p.pid, signal.SIGCONT)
        time.sleep(0.05)
    out = read_to_end(fd_of(p.stdout), buf=out)
    assert p.returncode == 0  # the outcome of the attempt followed last
    assert out == b"first\nsecond\ndone\n"
    err = read_of(p.stderr).decode()
    assert "attempt 1) FAILED; attempt 2 started (job %s): following it" % second["job_id"] in err


def test_follow_refuses_what_it_cannot_do(run):
    check_error(run("logs", "--follow", "--run-key", "k", "--json"), 2, "invalid_argument")
    check_error(run("logs", "-f", "--run-key", "k", "--limit", "5"), 2, "invalid_argument")
    check_error(run("logs", "-f", "--run-key", "nothing-here"), 3, "not_found")
    r = run("logs", "--help")
    assert r.code == 0 and "-f, --follow" in r.out


# -- ls -------------------------------------------------------------------------------------------------------------
def _table(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()]


def test_ls_lists_the_running_jobs_by_default_without_colour_on_a_pipe(run, start_job):
    start_job("finished", "true", opts=("--sync",))
    a = start_job("runs-a", "sleep", "60")
    b = start_job("runs-b", "sleep", "60")
    r = run("ls")
    assert r.code == 0 and r.err == ""
    assert "\x1b[" not in r.out
    rows = _table(r.out)
    assert rows[0] == ["JOB", "ID", "RUN", "KEY", "ATTEMPT", "STATUS", "STARTED", "DURATION", "EXIT", "PID"]
    assert sorted(row[1] for row in rows[1:]) == ["runs-a", "runs-b"]
    by_key = {"runs-a": a, "runs-b": b}
    for row in rows[1:]:
        assert row[2:4] == ["1", "RUNNING"] and row[-2] == "-"
        assert int(row[-1]) == by_key[row[1]]["pid"]
        assert row[0] == by_key[row[1]]["job_id"][:8]  # the short id: a prefix status, logs, wait and abort take
    # the JSON rows are the same rows, with both ids; --format json is the same as --json
    rows_json = check_ok(run("ls", "--json"))
    assert [j["run_key"] for j in rows_json] == [row[1] for row in rows[1:]]
    assert [j["short_id"] for j in rows_json] == [row[0] for row in rows[1:]]
    assert {j["pid"] for j in rows_json} == {a["pid"], b["pid"]}
    assert check_ok(run("ls", "--format", "json")) == rows_json


def test_ls_last_and_run_key(run, start_job):
    start_job("k", "sh", "-c", "exit 4", opts=("--sync",))
    time.sleep(1.1)  # start times are whole seconds: keep the order unambiguous
    start_job("k", "sh", "-c", "kill -TERM $$", opts=("--sync",))
    time.sleep(1.1)  # the same: a later whole second for the next start
    start_job("other", "true", opts=("--sync",))
    rows = _table(run("ls", "--last", "2").out)[1:]
    assert [(r[1], r[2], r[3]) for r in rows] == [("other", "1", "SUCCEEDED"), ("k", "2", "FAILED")]
    assert rows[0][-2] == "0" and rows[1][-2] == "SIGTERM"
    rows = _table(run("ls", "--run-key", "k").out)[1:]
    assert [(r[1], r[2], r[3], r[-2]) for r in rows] == [("k", "2", "FAILED", "SIGTERM"), ("k", "1", "FAILED", "4")]
    assert len(_table(run("ls", "--run-key", "k", "--last", "1").out)) == 2
    rows_json = check_ok(run("ls", "--last", "3", "--json"))
    assert [(j["run_key"], j["attempt_no"], j["status"], j["exit_code"], j["signal_name"]) for j in rows_json] == [
        ("other", 1, "SUCCEEDED", 0, None),
        ("k", 2, "FAILED", None, "SIGTERM"),
        ("k", 1, "FAILED", 4, None),
    ]
    assert all(j["duration_seconds"] >= 0 and j["finished_at_iso"] for j in rows_json)


def test_ls_on_a_terminal_is_coloured_unless_no_color_is_set(home, start_job):
    start_job("colourful", "sleep", "60")
    code, out = Pty(home, "ls").finish()
    assert code == 0
    assert "\x1b[1m" in out and "\x1b[36mRUNNING\x1b[0m" in out
    code, out = Pty(home, "ls", env={"NO_COLOR": "1"}).finish()
    assert code == 0 and "\x1b[" not in out and "RUNNING" in out
    code, out = Pty(home, "ls", env={"TERM": "dumb"}).finish()
    assert code == 0 and "\x1b[" not in out


def test_ls_fits_the_terminal_eliding_long_run_keys_in_the_middle(home, run, start_job):
    long_key = "start-" + "x" * 150 + "-end"
    start_job(long_key, "sleep", "60")
    start_job("short", "sleep", "60")
    # not a terminal and no COLUMNS: nothing is cut
    assert long_key in run("ls", env={"COLUMNS": None}).out
    # COLUMNS on a pipe
    out = run("ls", env={"COLUMNS": "80"}).out
    lines = out.splitlines()
    assert all(cell_width(line) <= 80 for line in lines), out
    elided = [line for line in lines if line.split()[1].startswith("start-")]
    assert len(elided) == 1 and "-end " in elided[0] and "\u2026" in elided[0] and long_key not in out
    # 80 columns leave the run key too little room even so: the start time loses its year and seconds
    assert re.search(r"  \d\d-\d\d \d\d:\d\d  ", elided[0]) and not re.search(r"\d\d:\d\d:\d\d", out), out
    # the terminal's own width
    code, out = Pty(home, "ls", cols=90, env={"NO_COLOR": "1"}).finish()
    assert code == 0
    lines = out.splitlines()
    assert all(cell_width(line) <= 90 for line in lines), out
    assert max(cell_width(line) for line in lines) >= 85  # the room is used
    status_at = [line.index("RUNNING") for line in lines[1:]]
    assert len(set(status_at)) == 1, out  # columns stay aligned


def test_ls_aligns_wide_characters_by_their_cells(run, start_job):
    start_job("\u65e5\u672c\u8a9e\u306e\u30ad\u30fc", "sleep", "60")
    start_job("ascii-key", "sleep", "60")
    lines = run("ls").out.splitlines()
    assert len(lines) == 3
    header_status = cell_width(lines[0][: lines[0].index("STATUS")])
    assert {cell_width(line[: line.index("RUNNING")]) for line in lines[1:]} == {header_status}


def test_ls_on_a_fresh_host_and_bad_flags(run, start_job):
    r = run("ls")
    assert (r.code, r.out.strip()) == (0, "no running jobs (orchesjob ls --last 20 lists the latest jobs)")
    assert check_ok(run("ls", "--json")) == []
    assert run("ls", "--last", "5").out.strip() == "no jobs yet"
    check_error(run("ls", "--last", "0"), 2, "invalid_argument")
    check_error(run("ls", "--last", "many"), 2, "invalid_argument")
    check_error(run("ls", "--run-key", ""), 2, "invalid_argument")
    check_error(run("ls", "--run-key", "nope"), 3, "not_found")
    start_job("x", "true", opts=("--sync",))
    check_error(run("ls", "--run-key", "nope"), 3, "not_found")


# -- doctor ---------------------------------------------------------------------------------------------------------
def doctor(run, *args: str, env=None):
    """(exit status, report) of `doctor --format json ARGS`."""
    r = run("doctor", "--format", "json", *args, env=env)
    assert "Traceback" not in r.err, r.err
    assert r.code in (0, 1), r
    report = json.loads(r.out)
    assert report["healthy"] == (r.code == 0)
    assert [c["check"] for c in report["checks"]] == [
        "state_dir",
        "proc",
        "database",
        "schema",
        "wal",
        "free_space",
        "pending_results",
        "active_jobs",
        "log_files",
    ]
    return r.code, report


def findings(report: dict, check: str) -> list[dict]:
    return [f for f in report["findings"] if f["check"] == check]


def test_doctor_on_a_healthy_home_and_on_none(home, run, start_job):
    code, report = doctor(run)
    assert code == 0 and report["checks"][0]["exists"] is False
    start_job("fine", "true", opts=("--sync",))
    start_job("running", "sleep", "60")
    code, report = doctor(run)
    assert code == 0, report
    assert report["findings"] == [] and report["findings_count"] == 0
    assert all(c["ok"] and not c.get("skipped") for c in report["checks"]), report
    by = {c["check"]: c for c in report["checks"]}
    assert (
        by["schema"]["version"] == SCHEMA_VERSION
        and by["log_files"]["jobs"] == 2
        and by["free_space"]["free_bytes"] > 0
    )
    # the same with --fix: nothing to do, nothing changed
    code, again = doctor(run, "--fix")
    assert code == 0 and again["fixed_count"] == 0


def test_doctor_text_on_a_terminal_json_on_a_pipe(home, run, start_job):
    start_job("fine", "true", opts=("--sync",))
    r = run("doctor")
    assert r.code == 0 and json.loads(r.out)["healthy"] is True
    r = run("doctor", "--format", "text")
    assert r.code == 0 and r.out.startswith("orchesjob doctor: ") and r.out.rstrip().endswith("healthy")
    code, out = Pty(home, "doctor").finish()
    assert code == 0 and "\x1b[32mok" in out and "quick_check ok" in out
    check_error(run("doctor", "--format", "yaml"), 2, "invalid_argument")


def test_doctor_finds_open_modes_and_fix_tightens_them(home, run, start_job):
    job = start_job("fine", "true", opts=("--sync",))
    os.chmod(home, 0o755)
    os.chmod(home / "orchesjob.db", 0o644)
    os.chmod(job["stdout_file"], 0o644)
    code, report = doctor(run)
    assert code == 1
    problems = findings(report, "state_dir")
    assert len(problems) == 3 and all(f["fixable"] and not f["fixed"] for f in problems)
    assert os.stat(home).st_mode & 0o777 == 0o755  # looked at, not changed
    assert os.stat(job["stdout_file"]).st_mode & 0o777 == 0o644
    code, report = doctor(run, "--fix")
    # (reading the database made SQLite create its -wal and -shm beside it, with the database's mode: found too)
    assert code == 0 and report["fixed_count"] >= 3
    assert all(f["fixed"] for f in report["findings"])
    assert os.stat(home).st_mode & 0o777 == 0o700
    for name in ("orchesjob.db", "orchesjob.db-wal", "orchesjob.db-shm"):
        assert not (home / name).exists() or (home / name).stat().st_mode & 0o777 == 0o600
    assert os.stat(job["stdout_file"]).st_mode & 0o777 == 0o600
    assert doctor(run)[0] == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the state directory to another user")
def test_doctor_on_a_state_directory_of_another_user_reads_nothing_and_fixes_nothing(home, run, start_job):
    start_job("fine", "true", opts=("--sync",))
    os.chown(home, 65534, 65534)
    try:
        for args in ((), ("--fix",)):
            code, report = doctor(run, *args)
            assert code == 1
            (f,) = report["findings"]
            assert f["check"] == "state_dir" and not f["fixable"] and "belongs to" in f["problem"]
            assert all(c.get("skipped") for c in report["checks"][2:] if c["check"] != "free_space")
            assert os.stat(home).st_uid == 65534
    finally:
        os.chown(home, 0, 0)


def test_doctor_reports_a_corrupt_database_and_leaves_it_as_it_is(home, run, start_job):
    start_job("fine", "true", opts=("--sync",))
    for i in range(30):
        db_exec(home, "INSERT INTO run_keys (run_key, last_attempt) VALUES (?, 1)", "filler-%d-%s" % (i, "x" * 200))
    db = home / "orchesjob.db"
    assert not (home / "orchesjob.db-wal").exists() or (home / "orchesjob.db-wal").stat().st_size == 0
    with open(db, "r+b") as fh:  # every page header but the first: the file still says "SQLite format 3"
        page = struct.unpack(">H", fh.read(18)[16:18])[0]
        for offset in range(page, db.stat().st_size, page):
            fh.seek(offset)
            fh.write(b"\xa5" * 12)
    before = db.read_bytes()
    for args in ((), ("--fix",)):
        code, report = doctor(run, *args)
        assert code == 1
        (f,) = findings(report, "database")
        assert f["problem"].startswith("PRAGMA quick_check: ") and not f["fixable"] and ".recover" in f["action"]
        assert all(c.get("skipped") for c in report["checks"] if c["check"] in ("schema", "active_jobs", "log_files"))
        assert db.read_bytes() == before


def test_doctor_on_an_older_schema_upgrades_it_only_with_fix(home, run):
    home.mkdir(mode=0o700)
    shutil.copy(DATA / "schema-v1.db", home / "orchesjob.db")
    (home / "orchesjob.db").chmod(0o600)
    (home / "logs").mkdir(mode=0o700)
    version = lambda: sqlite3.connect(str(home / "orchesjob.db")).execute("PRAGMA user_version").fetchone()[0]  # noqa: E731
    code, report = doctor(run)
    (f,) = findings(report, "schema")
    assert code == 1 and f["fixable"] and "schema 1" in f["problem"]
    assert version() == 1
    code, report = doctor(run, "--fix")
    assert findings(report, "schema")[0]["fixed"] is True
    assert version() == SCHEMA_VERSION
    # the v1 jobs' logs were never kept with the database: reported, not "fixed"
    assert all(f["check"] in ("schema", "log_files") for f in report["findings"])


V110_SCHEMA = """
CREATE TABLE jobs (job_id TEXT PRIMARY KEY, run_key TEXT, worker_pid INTEGER, target_pid INTEGER, command TEXT,
    status TEXT, exit_code INTEGER, stdout_file TEXT, stderr_file TEXT, started_at TEXT, finished_at TEXT,
    updated_at TEXT, aborted_at TEXT, abort_reason TEXT, rerun_of_job_id TEXT, attempt_no INTEGER,
    rerun_reason TEXT, strict INTEGER);
CREATE TABLE run_keys (run_key TEXT PRIMARY KEY, job_id TEXT, created_at TEXT);
CREATE TABLE strict_overrides (run_key TEXT PRIMARY KEY, allowed_at TEXT, used_at TEXT, reason TEXT, expires_at TEXT);
CREATE TABLE schema_meta (key TEXT PRIMARY KEY, value TEXT);
INSERT INTO schema_meta VALUES ('schema_version', '2');
"""


def test_doctor_on_an_orchesjob_1_1_0_database_upgrades_it_only_with_fix(home, run):
    """(The layout of 1.1.0's tables, empty; test_upgrade_from_1_1_0.py upgrades real 1.1.0 histories.)"""
    home.mkdir(mode=0o700)
    (home / "logs").mkdir(mode=0o700)
    c = sqlite3.connect(str(home / "orchesjob.db"))
    c.executescript(V110_SCHEMA)
    c.close()
    os.chmod(home / "orchesjob.db", 0o600)
    version = lambda: sqlite3.connect(str(home / "orchesjob.db")).execute("PRAGMA user_version").fetchone()[0]  # noqa: E731
    code, report = doctor(run)
    (f,) = report["findings"]
    assert code == 1 and f["check"] == "schema" and f["fixable"] and "1.1.0" in f["problem"]
    assert version() == 0
    code, report = doctor(run, "--fix")
    assert code == 0 and report["findings"][0]["fixed"] is True, report
    assert version() == SCHEMA_VERSION and (home / "orchesjob.db.1.1.0-backup").exists()
    # a database of someone else is no orchesjob's: said, and left alone
    c = sqlite3.connect(str(home / "orchesjob.db"))
    c.executescript(
        "DROP TABLE jobs; DROP TABLE run_keys; DROP TABLE start_requests; CREATE TABLE other (x);"
        "PRAGMA user_version = 0;"
    )
    c.close()
    code, report = doctor(run, "--fix")
    (f,) = report["findings"]
    assert code == 1 and f["check"] == "schema" and "not orchesjob's" in f["problem"] and not f["fixable"]


def test_doctor_on_a_newer_schema_says_to_upgrade_orchesjob(home, run, start_job):
    start_job("fine", "true", opts=("--sync",))
    db_exec(home, "PRAGMA user_version = 99")
    code, report = doctor(run, "--fix")
    (f,) = report["findings"]
    assert code == 1 and f["check"] == "schema" and not f["fixable"] and "upgrade orchesjob" in f["action"]


def test_doctor_finds_a_big_write_ahead_log_and_fix_checkpoints_it(home, run, start_job):
    start_job("fine", "true", opts=("--sync",))
    holder = sqlite3.connect(str(home / "orchesjob.db"), isolation_level=None)  # keeps the WAL from being removed
    try:
        holder.execute("PRAGMA wal_autocheckpoint = 0")
        holder.execute("CREATE TABLE filler (x BLOB)")
        for _ in range(70):
            holder.execute("INSERT INTO filler VALUES (zeroblob(1048576))")
        holder.execute("DROP TABLE filler")
        assert (home / "orchesjob.db-wal").stat().st_size > 64 << 20
        code, report = doctor(run)
        (f,) = findings(report, "wal")
        assert code == 1 and f["fixable"] and not f["fixed"]
        code, report = doctor(run, "--fix")
        assert code == 0 and findings(report, "wal")[0]["fixed"] is True
        assert (home / "orchesjob.db-wal").stat().st_size < 1 << 20
    finally:
        holder.close()


def test_doctor_finds_little_free_space(tmp_path, start_job):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m,nr_inodes=600", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN)")
    small = mnt / "ojhome"
    try:
        check_ok(run_cli(small, "start", "--sync", "--run-key", "k", "--", "true"))
        r = run_cli(small, "doctor", "--format", "json")
        report = json.loads(r.out)
        problems = findings(report, "free_space")
        assert r.code == 1 and len(problems) == 2 and not any(f["fixable"] for f in problems)
        assert "MiB free" in problems[0]["problem"] and "inodes" in problems[1]["problem"]
        assert "orchesjob clean --before" in problems[0]["action"]
    finally:
        _kill_leftovers(small)
        subprocess.run(["umount", "-l", str(mnt)])


def test_doctor_free_space_thresholds(monkeypatch, tmp_path):
    """The same check in-process, for hosts where the test cannot mount a small file system."""
    from orchesjob import doctor as doctor_mod

    monkeypatch.setenv("ORCHESJOB_HOME", str(tmp_path))
    real = os.statvfs(str(tmp_path))
    fake = os.statvfs_result((4096, 4096, 1 << 20, 100, 100, 5000, 10, 10, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda path: fake)
    d = doctor_mod.Doctor(fix=False)
    d.check_free_space()
    assert len(d.findings) == 2 and d.checks[0]["free_bytes"] == 100 * 4096
    monkeypatch.setattr(os, "statvfs", lambda path: real)
    d = doctor_mod.Doctor(fix=False)
    d.check_free_space()
    assert d.findings == [] or real.f_bavail * real.f_frsize < doctor_mod.MIN_FREE_BYTES


def test_doctor_applies_a_waiting_result_only_with_fix(home, run, start_job):
    job = start_job("waiting", "sleep", "60")
    kill_job_processes(job)  # as if the supervisor wrote its result file and died before the database
    result = Path(job["stdout_file"][: -len(".stdout")] + ".result")
    fd = os.open(str(result), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(
        fd,
        json.dumps(
            {"exit_code": 0, "signal": None, "end_reason": "exited with code 0", "finished_at": int(time.time())}
        ).encode(),
    )
    os.close(fd)
    code, report = doctor(run)
    (f,) = report["findings"]
    assert code == 1 and f["check"] == "pending_results" and f["fixable"] and "has not reached" in f["problem"]
    assert db_row(home, job["job_id"])["status"] == "RUNNING" and result.exists()
    code, report = doctor(run, "--fix")
    (f,) = report["findings"]
    assert code == 0 and f["fixed"] is True and "now SUCCEEDED" in f["fix_result"]
    assert db_row(home, job["job_id"])["status"] == "SUCCEEDED" and not result.exists()


def test_doctor_fix_overturns_lost_with_a_waiting_result(home, run, start_job, ok):
    job = start_job("waiting", "sleep", "60")
    kill_job_processes(job)
    assert ok("status", "--job-id", job["job_id"])["status"] == "LOST"
    result = Path(job["stdout_file"][: -len(".stdout")] + ".result")
    result.write_text(json.dumps({"exit_code": 5, "signal": None, "end_reason": "exited with code 5"}))
    result.chmod(0o600)
    code, report = doctor(run, "--fix")
    assert code == 0 and report["fixed_count"] == 1
    row = db_row(home, job["job_id"])
    assert (row["status"], row["exit_code"]) == ("FAILED", 5) and not result.exists()


def test_doctor_settles_jobs_whose_processes_are_gone_only_with_fix(home, run, start_job):
    job = start_job("dead", "sleep", "60")
    kill_job_processes(job)
    code, report = doctor(run)
    (f,) = report["findings"]
    assert code == 1 and f["check"] == "active_jobs" and "nothing of it is alive" in f["problem"]
    assert db_row(home, job["job_id"])["status"] == "RUNNING"
    code, report = doctor(run, "--fix")
    assert code == 0 and report["findings"][0]["fixed"] is True
    assert db_row(home, job["job_id"])["status"] == "LOST"


def test_doctor_fix_while_another_process_holds_the_lock_says_it_could_not(home, run, start_job):
    job = start_job("dead", "sleep", "60")
    kill_job_processes(job)
    holder = sqlite3.connect(str(home / "orchesjob.db"), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        code, report = doctor(run, "--fix", env={"ORCHESJOB_LOCK_TIMEOUT": "0.5"})
        (f,) = report["findings"]
        assert code == 1 and f["fixable"] and f["fixed"] is False and "try again" in f["fix_result"]
    finally:
        holder.close()
    assert db_row(home, job["job_id"])["status"] == "RUNNING"
    assert doctor(run, "--fix")[0] == 0


def test_doctor_settles_jobs_from_an_earlier_boot(home, run, start_job):
    """A job recorded by an earlier build (no lock files) from before the last reboot is dead."""
    job = start_job("old-boot", "sleep", "60")
    db_exec(home, "UPDATE jobs SET boot_id = 'an-earlier-boot', life_lock = 0 WHERE job_id = ?", job["job_id"])
    code, report = doctor(run)
    (f,) = report["findings"]
    assert code == 1 and "the host rebooted after the job started" in f["problem"]
    code, report = doctor(run, "--fix")
    assert code == 0
    row = db_row(home, job["job_id"])
    assert row["status"] == "LOST" and "rebooted" in row["end_reason"]


def test_doctor_without_a_proc_of_its_own(home, run, start_job):
    start_job("fine", "true", opts=("--sync",))
    argv = ["unshare", "--pid", "--fork"] + cli_argv("doctor", "--format", "json")
    p = subprocess.run(argv, env=cli_env(home), capture_output=True, timeout=60, cwd=REPO_ROOT)
    if p.returncode not in (0, 1) or not p.stdout.startswith(b"{"):
        pytest.skip("cannot make a pid namespace here: %s" % p.stderr.decode()[:200])
    report = json.loads(p.stdout)
    (f,) = findings(report, "proc")
    assert p.returncode == 1 and "another pid namespace" in f["problem"] and not f["fixable"]


def test_doctor_finds_log_files_without_a_job_and_jobs_without_log_files(home, run, start_job):
    gone = start_job("gone", "true", opts=("--sync",))
    never = start_job("never-launched", "sleep", "60")
    start_job("fine", "true", opts=("--sync",))
    os.unlink(gone["stdout_file"])
    os.unlink(gone["stderr_file"])
    stray = home / "logs" / "0a0a0a0a-0000-4000-8000-000000000000.stdout"
    stray.write_text("from a database that is gone\n")
    stray.chmod(0o600)
    # a job whose command never launched has no logs, and that is fine
    kill_job_processes(never)
    db_exec(
        home, "UPDATE jobs SET status = 'LOST', target_pid = NULL, finished_at = 1 WHERE job_id = ?", never["job_id"]
    )
    for name in (never["stdout_file"], never["stderr_file"]):
        os.unlink(name)
    for args in ((), ("--fix",)):
        code, report = doctor(run, *args)
        assert code == 1
        problems = findings(report, "log_files")
        assert len(problems) == 2 and not any(f["fixable"] or f["fixed"] for f in problems)
        orphans, missing = problems
        assert orphans["items"] == [stray.name] and missing["items"] == [gone["job_id"]]
        assert stray.exists()
    assert report["checks"][-1]["jobs"] == 3


# -- metrics --------------------------------------------------------------------------------------------------------
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


def test_help_lists_the_host_tools(run):
    out = run("--help").out
    for name in ("ls", "doctor", "metrics"):
        assert "\n  %s " % name in out
    assert "--recent-hours HOURS" in run("metrics", "--help").out
    assert "--fix" in run("doctor", "--help").out and "--last N" in run("ls", "--help").out


# -- every query of the host tools is served by an index --------------------------------------------------------
def test_the_queries_of_ls_doctor_and_metrics_are_served_by_indexes(monkeypatch, tmp_path):
    """Run the tools in-process over a seeded history, record every statement they send to SQLite, and ask SQLite
    for each one's plan: no statement may read the jobs table row by row (a SCAN without an index) or sort it."""
    from orchesjob import doctor as doctor_mod
    from orchesjob import jobs, metrics, store, table

    monkeypatch.setenv("ORCHESJOB_HOME", str(tmp_path / "h"))
    st = store.open_store(create=True)
    assert st is not None
    t = int(time.time())
    with st.write():
        for i in range(300):
            key = "k%d" % (i % 30)
            jid = "%08x-0000-4000-8000-%012x" % (i, i)
            st.insert(
                {
                    "job_id": jid,
                    "run_key": key,
                    "attempt_no": st.next_attempt(key),
                    "status": ("SUCCEEDED", "FAILED", "LOST", "ABORTED")[i % 4],
                    "command": ["true"],
                    "env": {},
                    "strict": False,
                    "exit_code": 0,
                    "stdout_file": str(tmp_path / (jid + ".stdout")),
                    "stderr_file": str(tmp_path / (jid + ".stderr")),
                    "started_at": t - 1000 + i,
                    "finished_at": t - 900 + i,
                    "updated_at": t,
                }
            )
    seen: list[str] = []
    real = store._Connection.execute

    def traced(self, *args):
        seen.append(args[0])
        return real(self, *args)

    monkeypatch.setattr(store._Connection, "execute", traced)
    table.select(st, 20, None)
    table.select(st, None, "k3")
    table.select(st, None, None)
    metrics.collect(st, st.path, 3600, 5)  # 5 of 30 families: the rest of the window is read to count them
    doctor_mod.Doctor(fix=False).run()
    jobs.lookup(st, "k1", None)
    monkeypatch.setattr(store._Connection, "execute", real)
    queries = sorted({q for q in seen if q.lstrip().upper().startswith("SELECT") and "FROM jobs" in q})
    assert len(queries) >= 10, queries
    conn = sqlite3.connect(st.path)
    for q in queries:
        plan = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + q, (None,) * q.count("?"))]
        for step in plan:
            assert not (step.startswith("SCAN jobs") and "INDEX" not in step), (q, plan)
        if "ORDER BY started_at DESC" in q or "ORDER BY finished_at DESC" in q:  # read in index order, never sorted
            assert not any("TEMP B-TREE" in step for step in plan), (q, plan)
    wanted = {
        "SELECT * FROM jobs ORDER BY started_at DESC, rowid DESC LIMIT ?": "jobs_started_at",
        "SELECT count(*) FROM jobs WHERE status = ?": "jobs_status_finished_at",
        "SELECT count(*) FROM jobs WHERE status = ? AND finished_at >= ?": "jobs_status_finished_at",
    }
    for q, index in wanted.items():
        assert q in queries
        assert any(index in r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + q, (None,) * q.count("?"))), q
    conn.close()
