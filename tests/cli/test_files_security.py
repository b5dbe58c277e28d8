"""File modes of the state directory, and commands run as argv lists, never through a shell."""

import os
import stat

import pytest

from cli_helpers import check_ok, run_cli, wait_pids_gone

pytestmark = pytest.mark.timeout(120)


def _mode(path):
    return stat.S_IMODE(os.stat(str(path)).st_mode)


@pytest.fixture
def open_umask():
    old = os.umask(0)
    yield
    os.umask(old)


def test_state_dir_0700_and_files_0600_whatever_the_umask(home, open_umask, start_job):
    j = start_job("modes", "sh", "-c", "echo out; echo err >&2; sleep 300")
    # while the job runs the database's -wal/-shm files exist too
    assert _mode(home) == 0o700
    assert _mode(home / "logs") == 0o700
    for name in ("orchesjob.db", "orchesjob.db-wal", "orchesjob.db-shm"):
        p = home / name
        if p.exists():
            assert _mode(p) == 0o600, name
    assert _mode(j["stdout_file"]) == 0o600
    assert _mode(j["stderr_file"]) == 0o600
    for p in (home / "logs").iterdir():
        assert _mode(p) == 0o600, p


def test_finished_job_files_are_0600(home, open_umask, start_job):
    j = start_job("modes2", "sh", "-c", "echo out; exit 4", opts=("--sync",))
    wait_pids_gone([j["worker_pid"]])
    assert _mode(home) == 0o700 and _mode(home / "logs") == 0o700
    assert _mode(home / "orchesjob.db") == 0o600
    for p in list((home / "logs").iterdir()):
        assert _mode(p) == 0o600, p


@pytest.mark.parametrize("which", ["home", "logs"])
def test_existing_wide_state_dir_is_tightened_or_warned(home, run, which):
    (home / "logs").mkdir(parents=True)
    target = home if which == "home" else home / "logs"
    os.chmod(str(home), 0o700)
    os.chmod(str(target), 0o755)
    r = run("start", "--run-key", "wide", "--sync", "--", "true")
    assert r.code == 0, r
    assert "Traceback" not in r.err
    tightened = _mode(target) == 0o700
    warned = "warning" in r.err.lower() and str(target) in r.err
    assert tightened or warned, "mode %o and stderr %r" % (_mode(target), r.err)
    assert r.json is not None and r.json["status"] == "SUCCEEDED"  # a warning never goes to stdout


def test_created_state_dir_parents(tmp_path):
    h = tmp_path / "a" / "b" / "ojhome"
    j = check_ok(run_cli(h, "start", "--run-key", "deep", "--sync", "--", "true"))
    assert j["status"] == "SUCCEEDED" and _mode(h) == 0o700


# -- argv, never a shell ----------------------------------------------------------------------------------------------
def _stdout(job):
    with open(job["stdout_file"]) as f:
        return f.read()


def test_command_substitution_is_not_expanded(start_job):
    j = start_job("shell1", "echo", "$(id)", opts=("--sync",))
    assert j["command"] == ["echo", "$(id)"]
    assert _stdout(j) == "$(id)\n"


def test_shell_metacharacters_are_passed_literally(start_job, tmp_path):
    canary = tmp_path / "canary"
    args = ["a; touch %s" % canary, "|", "cat", "&&", "`id`", "$HOME", "*", ">", str(canary), "'\"", "\\n"]
    j = start_job("shell2", "echo", *args, opts=("--sync",))
    assert j["command"] == ["echo"] + args
    assert _stdout(j) == " ".join(args) + "\n"
    assert not canary.exists()


def test_arguments_with_newlines_and_unicode(start_job):
    args = ["line1\nline2", "ümlaut ジョブ", "", "  spaced  "]
    j = start_job("shell3", "printf", "[%s]", *args, opts=("--sync",))
    assert j["command"] == ["printf", "[%s]"] + args
    assert _stdout(j) == "".join("[%s]" % a for a in args)


def test_run_key_with_shell_metacharacters_is_just_a_key(start_job, ok):
    key = "k'; touch /tmp/x $(id) | cat"
    j = start_job(key, "true", opts=("--sync",))
    assert j["run_key"] == key
    assert ok("status", "--run-key", key)["job_id"] == j["job_id"]
    assert ok("status", "--run-key", key, "--all")[0]["run_key"] == key
