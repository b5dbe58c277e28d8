"""Commands that cannot be launched end FAILED (not LOST); the supervisor is detached from its caller."""

import json
import os
import signal

import pytest

from tests.support.cli import parse_json, popen_cli, wait_until

pytestmark = pytest.mark.timeout(120)


def _stderr_log(job):
    with open(job["stderr_file"]) as f:
        return f.read()


@pytest.mark.parametrize("sync", [True, False])
def test_command_not_found_is_failed_127(start_job, wait_terminal, tmp_path, sync):
    missing = str(tmp_path / "no-such-command")
    j = start_job("nf", missing, "arg", opts=("--sync",) if sync else ())
    if not sync:
        j = wait_terminal(j["job_id"])
    assert j["status"] == "FAILED" and j["exit_code"] == 127, j
    assert j["end_reason"] and "no-such-command" in j["end_reason"]
    log = _stderr_log(j)
    assert "no-such-command" in log and log.strip()


def test_command_not_on_path_is_failed_127(start_job):
    j = start_job("nf2", "orchesjob-test-no-such-binary-xyz", opts=("--sync",))
    assert j["status"] == "FAILED" and j["exit_code"] == 127
    assert "orchesjob-test-no-such-binary-xyz" in j["end_reason"]
    assert "orchesjob-test-no-such-binary-xyz" in _stderr_log(j)


def test_command_not_executable_is_failed_126(start_job, tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho should not run\n")
    os.chmod(str(script), 0o644)
    j = start_job("nx", str(script), opts=("--sync",))
    assert j["status"] == "FAILED" and j["exit_code"] == 126, j
    assert j["end_reason"] and "script.sh" in j["end_reason"]
    assert "script.sh" in _stderr_log(j)
    with open(j["stdout_file"]) as f:
        assert f.read() == ""


def test_directory_as_command_is_failed_126(start_job, tmp_path):
    j = start_job("dir", str(tmp_path), opts=("--sync",))
    assert j["status"] == "FAILED" and j["exit_code"] == 126, j


@pytest.mark.parametrize("sync", [True, False])
def test_bad_cwd_is_failed_not_lost(start_job, wait_terminal, tmp_path, sync):
    bad = str(tmp_path / "no-such-dir")
    j = start_job("cwd", "true", opts=(("--sync",) if sync else ()) + ("--cwd", bad))
    if not sync:
        j = wait_terminal(j["job_id"])
    assert j["status"] == "FAILED", j
    assert j["exit_code"] not in (None, 0)
    assert bad in j["end_reason"]
    assert bad in _stderr_log(j)


def test_cwd_that_is_a_file_is_failed(start_job, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    j = start_job("cwdf", "true", opts=("--sync", "--cwd", str(f)))
    assert j["status"] == "FAILED" and j["end_reason"]


# -- detachment -----------------------------------------------------------------------------------------------------
def test_supervisor_runs_in_its_own_session_with_devnull_stdio(start_job):
    j = start_job("det", "sleep", "300")
    w, t = j["worker_pid"], j["target_pid"]
    assert os.getsid(w) != os.getsid(0)
    assert os.getsid(w) != os.getsid(os.getpid())
    for fd in (0, 1, 2):
        assert os.readlink("/proc/%d/fd/%d" % (w, fd)) == "/dev/null", fd
    # the target runs in a process group of its own, with stdin from /dev/null and its logs as stdout/stderr
    assert os.getpgid(t) == t
    assert os.readlink("/proc/%d/fd/0" % t) == "/dev/null"
    assert os.readlink("/proc/%d/fd/1" % t) == j["stdout_file"]
    assert os.readlink("/proc/%d/fd/2" % t) == j["stderr_file"]


def test_supervisor_has_no_controlling_terminal(start_job):
    j = start_job("det2", "sleep", "300")
    with open("/proc/%d/stat" % j["worker_pid"]) as f:
        tty_nr = int(f.read().rsplit(")", 1)[1].split()[4])
    assert tty_nr == 0


def _popen_start(home, *args):
    return popen_cli(home, "start", *args, start_new_session=True)


def test_sighup_to_async_caller_leaves_job_running(home, ok, wait_terminal, tmp_path):
    go, done = tmp_path / "go", tmp_path / "done"
    p = _popen_start(
        home,
        "--run-key",
        "hup",
        "--",
        "sh",
        "-c",
        'while [ ! -e "$0" ]; do sleep 0.05; done; echo ok > "$1"',
        str(go),
        str(done),
    )
    buf = b""
    while True:  # read until the JSON is complete, then hang up on the caller's whole process group at once
        chunk = p.stdout.read1(65536) if hasattr(p.stdout, "read1") else p.stdout.read(1)
        if not chunk:
            break
        buf += chunk
        if parse_json(buf.decode("utf-8", "replace")) is not None:
            break
    try:
        os.killpg(p.pid, signal.SIGHUP)
    except ProcessLookupError:
        pass
    p.communicate(timeout=30)
    j = json.loads(buf.decode())
    assert j["status"] == "RUNNING"
    go.touch()
    final = wait_terminal(j["job_id"])
    assert final["status"] == "SUCCEEDED", final
    assert done.read_text() == "ok\n"


def test_sighup_to_sync_caller_mid_wait_leaves_job_running(home, ok, wait_terminal, tmp_path):
    started, go, done = tmp_path / "started", tmp_path / "go", tmp_path / "done"
    p = _popen_start(
        home,
        "--run-key",
        "hup2",
        "--sync",
        "--",
        "sh",
        "-c",
        'touch "$0"; while [ ! -e "$1" ]; do sleep 0.05; done; echo ok > "$2"',
        str(started),
        str(go),
        str(done),
    )
    wait_until(started.exists, 30, what="the job to start")
    assert p.poll() is None
    os.killpg(p.pid, signal.SIGHUP)
    p.communicate(timeout=30)
    assert p.returncode != 0  # the caller died of the hangup ...
    job = check_ok_status(ok, "hup2")
    assert job["status"] == "RUNNING"  # ... the job did not
    go.touch()
    final = wait_terminal(job["job_id"])
    assert final["status"] == "SUCCEEDED" and final["exit_code"] == 0
    assert done.read_text() == "ok\n"


def check_ok_status(ok, key):
    """The job once its launch is recorded: the command runs a moment before the supervisor commits RUNNING, so a
    status right after the command's first act can still read STARTING. It must never read an end here."""
    seen = []

    def running():
        job = ok("status", "--run-key", key)
        seen.append(job["status"])
        assert job["status"] in ("STARTING", "RUNNING"), job
        return job if job["status"] == "RUNNING" else None

    return wait_until(running, 30, what=lambda: "RUNNING to be recorded (seen: %s)" % sorted(set(seen)))


def test_job_outlives_caller_killed_with_sigkill(home, ok, wait_terminal, tmp_path):
    started, go = tmp_path / "started", tmp_path / "go"
    p = _popen_start(
        home,
        "--run-key",
        "kill-caller",
        "--sync",
        "--",
        "sh",
        "-c",
        'touch "$0"; while [ ! -e "$1" ]; do sleep 0.05; done',
        str(started),
        str(go),
    )
    wait_until(started.exists, 30, what="the job to start")
    os.killpg(p.pid, signal.SIGKILL)
    p.communicate(timeout=30)
    job = check_ok_status(ok, "kill-caller")
    assert job["status"] == "RUNNING"
    go.touch()
    assert wait_terminal(job["job_id"])["status"] == "SUCCEEDED"


def test_ctrl_c_on_sync_caller_is_a_json_error_and_the_job_goes_on(home, ok, wait_terminal, tmp_path):
    started, go = tmp_path / "started", tmp_path / "go"
    p = _popen_start(
        home,
        "--run-key",
        "sigint",
        "--sync",
        "--",
        "sh",
        "-c",
        'touch "$0"; while [ ! -e "$1" ]; do sleep 0.05; done',
        str(started),
        str(go),
    )
    wait_until(started.exists, 30, what="the job to start")
    os.kill(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=30)
    out, err = out.decode(), err.decode()
    assert "Traceback" not in out + err
    assert p.returncode not in (0, 2, 3, 4, 5)
    body = parse_json(out)
    assert isinstance(body, dict) and body.get("error") and body.get("exit_code") == p.returncode, out
    assert err.strip().startswith("orchesjob: ")
    job = check_ok_status(ok, "sigint")
    assert job["status"] == "RUNNING"
    go.touch()
    assert wait_terminal(job["job_id"])["status"] == "SUCCEEDED"
