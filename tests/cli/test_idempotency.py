"""Every row of the reference idempotency table, for default, --strict and --reuse-success, and parameters_match."""

import os
import signal

import pytest

from tests.support.cli import wait_pids_gone, wait_until_waiting_on_a_job

pytestmark = pytest.mark.timeout(120)

CMD = ("sleep", "30")


def _make_state(state, start_job, ok, db):
    """A job of run key 'idem' in `state`; returns its job_id."""
    if state == "RUNNING":
        return start_job("idem", *CMD)["job_id"]
    if state == "STARTING":
        j = start_job("idem", *CMD)
        db().execute("UPDATE jobs SET status = 'STARTING' WHERE job_id = ?", (j["job_id"],))
        assert ok("status", "--job-id", j["job_id"])["status"] == "STARTING"
        return j["job_id"]
    if state == "SUCCEEDED":
        return start_job("idem", "true", opts=("--sync",))["job_id"]
    if state == "FAILED":
        return start_job("idem", "false", opts=("--sync",))["job_id"]
    if state == "ABORTED":
        j = start_job("idem", *CMD)
        ok("abort", "--job-id", j["job_id"], "--grace-seconds", "1")
        return j["job_id"]
    if state == "LOST":
        j = start_job("idem", *CMD)
        os.kill(j["worker_pid"], signal.SIGKILL)
        os.killpg(j["target_pid"], signal.SIGKILL)
        wait_pids_gone([j["worker_pid"], j["target_pid"]])
        assert ok("status", "--job-id", j["job_id"])["status"] == "LOST"
        return j["job_id"]
    if state == "CANCELLED":  # reserved by the reference; no command produces it, so set it directly
        j = start_job("idem", "true", opts=("--sync",))
        db().execute("UPDATE jobs SET status = 'CANCELLED' WHERE job_id = ?", (j["job_id"],))
        return j["job_id"]
    raise AssertionError(state)


MODES = {"default": (), "strict": ("--strict",), "reuse_success": ("--reuse-success",)}
# (state, mode) -> True when the existing job is returned, False when a new one starts
TABLE = {
    ("RUNNING", "default"): True,
    ("RUNNING", "strict"): True,
    ("RUNNING", "reuse_success"): True,
    ("STARTING", "default"): True,
    ("STARTING", "strict"): True,
    ("STARTING", "reuse_success"): True,
    ("SUCCEEDED", "default"): False,
    ("SUCCEEDED", "strict"): True,
    ("SUCCEEDED", "reuse_success"): True,
    ("FAILED", "default"): False,
    ("FAILED", "strict"): True,
    ("FAILED", "reuse_success"): False,
    ("ABORTED", "default"): False,
    ("ABORTED", "strict"): True,
    ("ABORTED", "reuse_success"): False,
    ("LOST", "default"): False,
    ("LOST", "strict"): True,
    ("LOST", "reuse_success"): False,
    ("CANCELLED", "default"): False,
    ("CANCELLED", "strict"): True,
    ("CANCELLED", "reuse_success"): False,
}


@pytest.mark.parametrize("state,mode", sorted(TABLE))
def test_idempotency_table(state, mode, start_job, ok, db):
    old = _make_state(state, start_job, ok, db)
    before = ok("status", "--job-id", old)
    r = start_job("idem", *CMD, opts=MODES[mode])
    assert r["strict"] is (mode == "strict") and r["reuse_success"] is (mode == "reuse_success")
    assert r["mode"] == "async"
    if TABLE[(state, mode)]:
        assert r["existing"] is True and r["accepted"] is False, r
        assert r["job_id"] == old and r["status"] == before["status"] == state
        assert r["attempt_no"] == 1
        assert r["strict_override_used"] is False
        assert len(ok("status", "--run-key", "idem", "--all")) == 1
    else:
        assert r["existing"] is False and r["accepted"] is True, r
        assert r["job_id"] != old and r["attempt_no"] == 2 and r["status"] == "RUNNING"
        assert r["parameters_match"] is True
        hist = ok("status", "--run-key", "idem", "--all")
        assert [h["job_id"] for h in hist] == [r["job_id"], old]
        assert hist[1]["status"] == state


@pytest.mark.parametrize("mode", sorted(MODES))
def test_no_existing_job_starts_new(mode, start_job):
    r = start_job("fresh", *CMD, opts=MODES[mode])
    assert r["accepted"] is True and r["existing"] is False and r["attempt_no"] == 1
    assert r["parameters_match"] is True and r["status"] == "RUNNING"


@pytest.mark.parametrize("mode", sorted(MODES))
def test_sync_start_on_running_job_waits_for_it(mode, start_job, ok, tmp_path):
    go = tmp_path / "go"
    j = start_job("sync-existing", "sh", "-c", 'while [ ! -e "$0" ]; do sleep 0.05; done', str(go))
    import subprocess

    from tests.support.cli import cli_argv, cli_env, parse_json

    p = subprocess.Popen(
        cli_argv(
            "start",
            "--run-key",
            "sync-existing",
            "--sync",
            *MODES[mode],
            "--",
            "sh",
            "-c",
            'while [ ! -e "$0" ]; do sleep 0.05; done',
            str(go),
        ),
        env=cli_env(tmp_path / "ojhome"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # the caller has found the running job and blocks on it
    wait_until_waiting_on_a_job(p.pid)
    assert p.poll() is None, "start --sync returned while the existing job was still running"
    go.touch()
    out, err = p.communicate(timeout=60)
    r = parse_json(out.decode())
    assert p.returncode == 0, err
    assert r["existing"] is True and r["job_id"] == j["job_id"] and r["status"] == "SUCCEEDED", r
    assert r["mode"] == "sync"


def test_strict_flag_is_not_sticky_for_default_start(start_job):
    a = start_job("mix", "true", opts=("--sync", "--strict"))
    b = start_job("mix", "true", opts=("--sync",))
    assert b["accepted"] is True and b["job_id"] != a["job_id"]


def test_strict_and_reuse_success_are_exclusive(run, assert_error, home):
    assert_error(run("start", "--run-key", "x", "--strict", "--reuse-success", "--", "true"), 2, "invalid_argument")
    assert not home.exists()


# -- parameters_match -----------------------------------------------------------------------------------------------
def test_parameters_match_on_running_job(start_job, tmp_path):
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    d1.mkdir()
    d2.mkdir()
    base = ("--cwd", str(d1), "--env", "A=1", "--env", "B=2", "--timeout", "100")
    j = start_job("pm", *CMD, opts=base)
    assert j["parameters_match"] is True
    same = start_job("pm", *CMD, opts=("--env", "B=2", "--env", "A=1", "--cwd", str(d1), "--timeout", "100"))
    assert same["existing"] is True and same["parameters_match"] is True and same["job_id"] == j["job_id"]
    variants = {
        "command": (("sleep", "31"), base),
        "cwd": (CMD, ("--cwd", str(d2), "--env", "A=1", "--env", "B=2", "--timeout", "100")),
        "no cwd": (CMD, ("--env", "A=1", "--env", "B=2", "--timeout", "100")),
        "env value": (CMD, ("--cwd", str(d1), "--env", "A=9", "--env", "B=2", "--timeout", "100")),
        "env missing": (CMD, ("--cwd", str(d1), "--env", "A=1", "--timeout", "100")),
        "env extra": (CMD, base + ("--env", "C=3")),
        "timeout": (CMD, ("--cwd", str(d1), "--env", "A=1", "--env", "B=2", "--timeout", "5")),
    }
    for what, (cmd, opts) in variants.items():
        r = start_job("pm", *cmd, opts=opts)
        assert r["existing"] is True and r["job_id"] == j["job_id"], what
        assert r["parameters_match"] is False, what
        # the job returned is the existing one, with its own parameters
        assert r["command"] == list(CMD) and r["cwd"] == str(d1) and r["env"] == {"A": "1", "B": "2"}, what


def test_parameters_match_on_terminal_strict_and_reuse_success(start_job):
    a = start_job("pm2", "echo", "a", opts=("--sync", "--strict"))
    r = start_job("pm2", "echo", "b", opts=("--strict",))
    assert r["existing"] is True and r["job_id"] == a["job_id"] and r["parameters_match"] is False
    r = start_job("pm2", "echo", "a", opts=("--strict",))
    assert r["existing"] is True and r["parameters_match"] is True
    r = start_job("pm2", "echo", "b", opts=("--reuse-success",))
    assert r["existing"] is True and r["job_id"] == a["job_id"] and r["parameters_match"] is False
    r = start_job("pm2", "echo", "b", opts=("--reuse-success", "--env", "X=1"))
    assert r["parameters_match"] is False
