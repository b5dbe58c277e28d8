"""The views for people, driven as processes: `ls` with its JOB ID column, `--status`, `--run-key-prefix` and
`--watch` (in a pseudo-terminal and through a pipe), a job id or a unique prefix of one as the argument of status,
wait, logs and abort, `logs --attempt`, and the feedback of long work: progress on stderr only when stderr is a
terminal (clean, doctor --fix), `clean --summary`, and clean's short summary on a terminal."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.support.cli import (
    REPO_ROOT,
    Pty,
    check_error,
    check_ok,
    cli_argv,
    cli_env,
    read_until,
    with_stderr_on_a_terminal,
)

EXIT_INTERRUPTED = 130


def table(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.strip()]


# -- ls -------------------------------------------------------------------------------------------------------------
def test_ls_status_filter_and_run_key_prefix(run, start_job):
    good = start_job("airflow/etl/load/r1", "true", opts=("--sync",))
    bad = start_job("airflow/etl/extract/r1", "sh", "-c", "exit 2", opts=("--sync",))
    start_job("billing/2026-05-01", "sh", "-c", "exit 1", opts=("--sync",))
    live = start_job("airflow/other/t/r1", "sleep", "60")
    rows = table(run("ls", "--status", "FAILED").out)[1:]
    assert sorted(r[1] for r in rows) == ["airflow/etl/extract/r1", "billing/2026-05-01"]
    assert {r[3] for r in rows} == {"FAILED"}
    rows = table(run("ls", "--status", "running,succeeded").out)[1:]  # any case, comma-separated
    wanted = [("airflow/etl/load/r1", "SUCCEEDED"), ("airflow/other/t/r1", "RUNNING")]
    assert sorted((r[1], r[3]) for r in rows) == wanted
    rows = table(run("ls", "--status", "FAILED", "--status", "RUNNING", "--last", "2").out)[1:]
    assert len(rows) == 2
    rows = table(run("ls", "--run-key-prefix", "airflow/etl/").out)[1:]
    assert sorted(r[0] for r in rows) == sorted([good["job_id"][:8], bad["job_id"][:8]])
    rows = check_ok(run("ls", "--run-key-prefix", "airflow/", "--status", "FAILED", "--format", "json"))
    assert [j["job_id"] for j in rows] == [bad["job_id"]]
    assert run("ls", "--run-key-prefix", "nothing/").out.strip() == "no jobs whose run key starts with 'nothing/'"
    assert run("ls", "--status", "LOST").out.strip() == "no LOST jobs"
    check_error(run("ls", "--status", "DONE"), 2, "invalid_argument")
    check_error(run("ls", "--run-key-prefix", ""), 2, "invalid_argument")
    check_error(run("ls", "--run-key-prefix", "a", "--run-key", "b"), 2, "invalid_argument")
    check_error(run("ls", "--interval", "1"), 2, "invalid_argument")
    check_error(run("ls", "--watch", "--format", "json"), 2, "invalid_argument")
    assert live["status"] == "RUNNING"


def test_ls_watch_redraws_in_place_on_a_terminal_until_ctrl_c(home, start_job, ok):
    start_job("first", "sleep", "60")
    term = Pty(home, "ls", "--watch", "--interval", "0.2", env={"NO_COLOR": "1"})
    term.read_until(b"first")
    start_job("second", "sleep", "60")
    term.read_until(b"second")  # a later drawing has the job that started meanwhile
    assert b"\x1b[H\x1b[2J" in term.out  # each drawing replaces the previous one
    assert term.out.count(b"orchesjob ls") >= 2
    os.write(term.fd, b"\x03")  # Ctrl-C on the terminal
    code, out = term.finish()
    assert code == EXIT_INTERRUPTED and "Traceback" not in out


def test_ls_watch_through_a_pipe_prints_one_table_after_the_other(home, start_job):
    start_job("piped", "sleep", "60")
    p = subprocess.Popen(
        cli_argv("ls", "-w", "--interval", "0.2"),
        env=cli_env(home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=REPO_ROOT,
    )
    assert p.stdout is not None
    out = read_until(p.stdout.fileno(), b"piped")
    out = read_until(p.stdout.fileno(), b"piped", buf=out[out.index(b"piped") + 5 :])
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=30) == EXIT_INTERRUPTED
    assert b"\x1b[" not in out


# -- a job by its id or a unique prefix ------------------------------------------------------------------------------
def test_status_logs_wait_and_abort_take_a_job_id_or_a_unique_prefix(run, ok, start_job):
    done = start_job("by-id", "sh", "-c", "echo hello", opts=("--sync",))
    jid = done["job_id"]
    assert check_ok(run("status", jid))["job_id"] == jid
    assert check_ok(run("status", jid[:8]))["job_id"] == jid
    assert check_ok(run("status", jid[:4]))["job_id"] == jid  # unique among the jobs here
    assert run("logs", jid[:8]).out == "hello\n"
    assert check_ok(run("wait", jid[:8], "--timeout", "5"))["status"] == "SUCCEEDED"
    live = start_job("to-abort", "sleep", "60")
    assert check_ok(run("abort", live["job_id"][:8], "--grace-seconds", "1"))["status"] == "ABORTED"
    err = check_error(run("status", "abc"), 2, "invalid_argument")
    assert "too short" in err["message"]
    check_error(run("status", "ffffffff-0000"), 3, "not_found")
    check_error(run("status", jid[:8], "--job-id", jid), 2, "invalid_argument")
    check_error(run("status", jid[:8], "--run-key", "by-id"), 2, "invalid_argument")


def test_an_ambiguous_prefix_names_the_jobs_and_does_nothing(run, ok, start_job, db):
    a = start_job("amb-a", "true", opts=("--sync",))
    b = start_job("amb-b", "true", opts=("--sync",))
    # two ids that share their first 9 characters (ids are random: make them so)
    conn = db()
    conn.execute("UPDATE jobs SET job_id = 'abcdef12-a' || substr(job_id, 11) WHERE job_id = ?", (a["job_id"],))
    conn.execute("UPDATE jobs SET job_id = 'abcdef12-b' || substr(job_id, 11) WHERE job_id = ?", (b["job_id"],))
    err = check_error(run("status", "abcdef12"), 2, "invalid_argument")
    assert "ambiguous" in err["message"] and err["message"].count("abcdef12-") == 2
    assert check_ok(run("status", "abcdef12-b"))["run_key"] == "amb-b"
    # ls shows each of them by the shortest prefix that is unique
    ids = {j["run_key"]: j["short_id"] for j in check_ok(run("ls", "--last", "5", "--json"))}
    assert ids["amb-a"] == "abcdef12-a" and ids["amb-b"] == "abcdef12-b"


def test_logs_attempt_reads_an_earlier_attempt_of_a_run_key(run, ok, start_job):
    start_job("attempts", "sh", "-c", "echo first", opts=("--sync",))
    start_job("attempts", "sh", "-c", "echo second", opts=("--sync",))
    assert run("logs", "--run-key", "attempts").out == "second\n"
    assert run("logs", "--run-key", "attempts", "--attempt", "1").out == "first\n"
    assert run("logs", "--run-key", "attempts", "--attempt", "2").out == "second\n"
    chunk = check_ok(run("logs", "--run-key", "attempts", "--attempt", "1", "--format", "json"))
    assert chunk["data"] == "first\n"
    err = check_error(run("logs", "--run-key", "attempts", "--attempt", "3"), 3, "not_found")
    assert "no attempt 3" in err["message"]
    check_error(run("logs", "--attempt", "1"), 2, "invalid_argument")
    check_error(run("logs", "--run-key", "attempts", "--attempt", "0"), 2, "invalid_argument")


# -- long work: progress on a terminal, nothing through a pipe ------------------------------------------------------
def seed_finished(home: Path, n: int) -> None:
    """n finished jobs with their log files, written through the project's own store code (the real schema)."""
    script = """
import os, sys, time
os.environ["ORCHESJOB_HOME"] = sys.argv[1]
from orchesjob import store
st = store.open_store(create=True)
logs = os.path.join(sys.argv[1], "logs")
t = int(time.time()) - 86400
with st.write():
    for i in range(int(sys.argv[2])):
        jid = "%08x-0000-4000-8000-%012x" % (i, i)
        paths = [os.path.join(logs, jid + s) for s in (".stdout", ".stderr")]
        for p in paths:
            open(p, "w").close()
        st.insert({"job_id": jid, "run_key": "k%d" % (i % 50), "attempt_no": i // 50 + 1, "status": "SUCCEEDED",
                   "command": ["true"], "env": {}, "strict": False, "exit_code": 0, "stdout_file": paths[0],
                   "stderr_file": paths[1], "started_at": t + i, "finished_at": t + i, "updated_at": t + i,
                   "life_lock": True})
"""
    subprocess.run(cli_argv("version"), env=cli_env(home), check=True, capture_output=True)  # makes the home
    env = cli_env(home)
    subprocess.run([cli_argv()[0], "-c", script, str(home), str(n)], env=env, check=True, cwd=REPO_ROOT)


def test_clean_shows_its_progress_on_a_terminal_and_nothing_through_a_pipe(home, run):
    seed_finished(home, 3000)
    r = run("clean", "--all", "--dry-run")
    assert r.code == 0 and r.err == ""  # a pipe: no progress at all
    listed = json.loads(r.out)
    assert len(listed["items"]) == 3000
    code, out, shown = with_stderr_on_a_terminal(home, "clean", "--all")
    assert code == 0
    answer = json.loads(out)  # stdout keeps 1.1.0's answer: the list of what was deleted
    assert answer["deleted"] == 3000 and len(answer["items"]) == 3000
    for phase in ("checking that nothing of them runs", "deleting the records", "removing the log files"):
        assert "orchesjob: %s: 3000 / 3000 (100%%)" % phase in shown, shown
    assert "/s, " in shown and " left" in shown
    assert shown.endswith("\r"), shown  # the line is erased when the work is done
    assert not list((home / "logs").glob("0000*"))


def test_clean_summary_and_the_view_on_a_terminal(home, run):
    seed_finished(home, 120)
    summary = check_ok(run("clean", "--all", "--dry-run", "--summary"))
    assert summary == {"deleted": 120, "errors": 0, "dry_run": True, "matched": 120, "skipped_count": 0}
    code, out = Pty(home, "clean", "--before", "2100-01-01").finish()
    assert code == 0
    assert out.strip().splitlines()[-1] == "deleted 120 finished jobs and their logs", out
    assert check_ok(run("clean", "--all", "--summary"))["deleted"] == 0


def test_doctor_fix_shows_its_progress_on_a_terminal(home, run, start_job):
    start_job("x", "true", opts=("--sync",))
    logs = home / "logs"
    for i in range(1500):
        path = logs / ("%08x-0000-4000-8000-%012x.stdout" % (i, i))
        path.write_text("")
        path.chmod(0o644)
    code, out, shown = with_stderr_on_a_terminal(home, "doctor", "--fix", "--format", "json")
    report = json.loads(out)
    assert code in (0, 1) and report["fix"] is True
    assert "orchesjob: doctor --fix: tightening log files to 600: 1500 / 1500 (100%)" in shown, shown
    assert all((logs / p).stat().st_mode & 0o077 == 0 for p in os.listdir(logs))
    r = run("doctor", "--fix", "--format", "json")
    assert "\r" not in r.err


def test_progress_is_drawn_at_most_ten_times_a_second(tmp_path):
    """A unit check of the drawing rule with a fake terminal stream: a million steps draw a handful of lines."""
    from orchesjob.progress import Progress

    class Tty:
        def __init__(self) -> None:
            self.text = ""

        def isatty(self) -> bool:
            return True

        def write(self, s: str) -> None:
            self.text += s

        def flush(self) -> None:
            pass

    stream = Tty()
    t0 = time.monotonic()
    with Progress("counting", 1_000_000, stream) as shown:  # type: ignore[arg-type]
        for _ in range(1_000_000):
            shown.step()
    drawn = stream.text.count("\r")
    assert drawn <= 2 + 2 * (10 * (time.monotonic() - t0) + 1), drawn
    assert "1000000 / 1000000 (100%)" in stream.text
