"""`logs --follow`, driven as a person or a script would: through a pipe and in a real pseudo-terminal, ended by the
job, by Ctrl-C, by SIGINT or by a closed pipe, from an offset, a tail or a run key that goes on into a new attempt."""

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import IO, Optional

from tests.support.cli import (
    REPO_ROOT,
    Pty,
    check_error,
    cli_argv,
    cli_env,
    popen_cli,
    read_to_end,
    read_until,
    stat_state,
    wait_until,
    wait_until_waiting_on_a_job,
)

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
    return popen_cli(home, "logs", "--follow", *args, env=env)


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
