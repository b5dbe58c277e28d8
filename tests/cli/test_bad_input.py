"""Bad input: the documented exit code, one clear error, no traceback, and nothing written."""

import os
import shutil
import sqlite3
import subprocess

import pytest

from orchesjob.contract import CONTRACT_VERSION
from tests.support.cli import (
    Result,
    check_error,
    check_ok,
    cli_argv,
    cli_env,
    parse_json,
    run_cli,
    snapshot,
    wait_pids_gone,
)

pytestmark = pytest.mark.timeout(120)

K = "known"  # a run key with one finished (strict) job in the populated home

INVALID = [  # (id, argv) -> exit 2, invalid_argument
    ("empty-run-key", ["start", "--run-key", "", "--", "true"]),
    ("run-key-300", ["start", "--run-key", "k" * 300, "--", "true"]),
    ("run-key-newline", ["start", "--run-key", "a\nb", "--", "true"]),
    ("run-key-escape", ["start", "--run-key", "a\x1b[31mb", "--", "true"]),
    ("run-key-tab", ["start", "--run-key", "a\tb", "--", "true"]),
    ("no-command", ["start", "--run-key", K]),
    ("no-command-after-dashes", ["start", "--run-key", K, "--"]),
    ("empty-command", ["start", "--run-key", K, "--", ""]),
    ("no-run-key", ["start", "--", "true"]),
    ("timeout-negative", ["start", "--run-key", K, "--timeout", "-1", "--", "true"]),
    ("timeout-garbage", ["start", "--run-key", K, "--timeout", "soon", "--", "true"]),
    ("timeout-nan", ["start", "--run-key", K, "--timeout", "nan", "--", "true"]),
    ("env-no-equals", ["start", "--run-key", K, "--env", "NOEQUALS", "--", "true"]),
    ("env-empty-name", ["start", "--run-key", K, "--env", "=value", "--", "true"]),
    ("start-timeout-garbage", ["start", "--run-key", K, "--start-timeout", "abc", "--", "true"]),
    ("start-timeout-negative", ["start", "--run-key", K, "--start-timeout", "-3", "--", "true"]),
    ("start-unknown-flag", ["start", "--run-key", K, "--frobnicate", "--", "true"]),
    ("strict-and-reuse", ["start", "--run-key", K, "--strict", "--reuse-success", "--", "true"]),
    ("grace-negative", ["abort", "--run-key", K, "--grace-seconds", "-5"]),
    ("grace-garbage", ["abort", "--run-key", K, "--grace-seconds", "five"]),
    ("ttl-bad-unit", ["unlock", "--run-key", K, "--ttl", "5x"]),
    ("ttl-negative", ["unlock", "--run-key", K, "--ttl", "-5m"]),
    ("ttl-empty", ["unlock", "--run-key", K, "--ttl", ""]),
    ("clean-before-yesterday", ["clean", "--before", "yesterday"]),
    ("clean-after-garbage", ["clean", "--after", "2026-02-30"]),
    ("clean-no-selection", ["clean"]),
    ("clean-dry-run-only", ["clean", "--dry-run"]),
    ("status-unknown-flag", ["status", "--bogus"]),
    ("status-empty-run-key", ["status", "--run-key", ""]),
    ("status-control-run-key", ["status", "--run-key", "a\x07"]),
    ("status-all-no-run-key", ["status", "--all"]),
    ("logs-tail-negative", ["logs", "--run-key", K, "--tail", "-1"]),
    ("logs-stream-bad", ["logs", "--run-key", K, "--stream", "stdin"]),
    ("rerun-start-timeout", ["rerun", "--run-key", K, "--start-timeout", "abc"]),
    ("wait-timeout-negative", ["wait", "--run-key", K, "--timeout", "-2"]),
    ("unknown-command", ["frobnicate"]),
    ("no-command-at-all", []),
    ("top-level-unknown-flag", ["--frobnicate"]),
]

NOT_FOUND = [  # exit 3, not_found
    ("status-job-id", ["status", "--job-id", "00000000-0000-4000-8000-000000000000"]),
    ("status-run-key", ["status", "--run-key", "unknown-key"]),
    ("status-all", ["status", "--run-key", "unknown-key", "--all"]),
    ("logs-job-id", ["logs", "--job-id", "00000000-0000-4000-8000-000000000000"]),
    ("wait-job-id", ["wait", "--job-id", "00000000-0000-4000-8000-000000000000", "--timeout", "1"]),
    ("abort-job-id", ["abort", "--job-id", "00000000-0000-4000-8000-000000000000"]),
    ("abort-run-key", ["abort", "--run-key", "unknown-key"]),
    ("rerun-job-id", ["rerun", "--job-id", "00000000-0000-4000-8000-000000000000"]),
    ("unlock-run-key", ["unlock", "--run-key", "unknown-key"]),
    ("clean-job-id", ["clean", "--job-id", "00000000-0000-4000-8000-000000000000"]),
]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A state directory holding one finished strict job, copied fresh for each test."""
    h = tmp_path_factory.mktemp("template") / "ojhome"
    j = check_ok(run_cli(h, "start", "--run-key", K, "--sync", "--strict", "--", "echo", "hi"))
    wait_pids_gone([j["worker_pid"]])
    return h


@pytest.fixture
def populated(template, tmp_path):
    h = tmp_path / "ojhome"
    shutil.copytree(str(template), str(h))
    os.chmod(str(h), 0o700)
    return h


@pytest.mark.parametrize("argv", [c[1] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_argument_writes_nothing(populated, argv):
    before = snapshot(populated)
    r = run_cli(populated, *argv)
    check_error(r, 2, "invalid_argument")
    assert snapshot(populated) == before


@pytest.mark.parametrize("argv", [c[1] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_argument_on_fresh_host_creates_nothing(tmp_path, argv):
    h = tmp_path / "ojhome"
    check_error(run_cli(h, *argv), 2, "invalid_argument")
    assert not h.exists()


@pytest.mark.parametrize("argv", [c[1] for c in NOT_FOUND], ids=[c[0] for c in NOT_FOUND])
def test_not_found_writes_nothing(populated, argv):
    before = snapshot(populated)
    check_error(run_cli(populated, *argv), 3, "not_found")
    after = snapshot(populated)
    # a read may open the database (its -wal/-shm come and go with the connection); nothing else changes
    strip = lambda s: {k: v for k, v in s.items() if k not in (".", "orchesjob.db-wal", "orchesjob.db-shm")}  # noqa: E731
    assert strip(after) == strip(before)


@pytest.mark.parametrize("argv", [c[1] for c in NOT_FOUND], ids=[c[0] for c in NOT_FOUND])
def test_not_found_on_fresh_host(tmp_path, argv):
    h = tmp_path / "ojhome"
    check_error(run_cli(h, *argv), 3, "not_found")
    assert not h.exists()


def test_run_key_of_256_printable_chars_is_fine(tmp_path):
    h = tmp_path / "ojhome"
    key = "ü" * 256
    j = check_ok(run_cli(h, "start", "--run-key", key, "--sync", "--", "true"))
    assert j["run_key"] == key and j["status"] == "SUCCEEDED"
    check_error(run_cli(h, "start", "--run-key", key + "x", "--", "true"), 2, "invalid_argument")


# -- a state directory that cannot be used --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["start", "--run-key", "k", "--", "true"],
        ["start", "--run-key", "k", "--sync", "--", "true"],
        ["status", "--run-key", "k"],
        ["status", "--running"],
        ["clean", "--all"],
        ["logs", "--run-key", "k"],
        ["unlock", "--run-key", "k"],
    ],
)
def test_home_is_a_regular_file(tmp_path, argv):
    h = tmp_path / "not-a-dir"
    h.write_bytes(b"precious")
    r = run_cli(h, *argv)
    err = check_error(r, 1)
    assert str(h) in err["message"]
    assert h.read_bytes() == b"precious"


def _as_unprivileged(argv, env):
    """Root ignores directory modes, so as root the CLI is run as `nobody` (uid 65534) with the system Python,
    which that user can read; the repository must be readable by it, as a fresh checkout is."""
    if os.geteuid() != 0:
        return argv
    python = shutil.which("python3", path="/usr/bin:/bin")
    assert python, "running as root: /usr/bin/python3 is needed to run the CLI as an unprivileged user"
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python] + argv[1:]


def test_home_not_writable(tmp_path):
    parent = tmp_path / "parent"
    parent.mkdir()
    h = parent / "ro"
    h.mkdir()
    os.chmod(str(tmp_path), 0o755)
    os.chmod(str(parent), 0o755)
    os.chmod(str(h), 0o555)
    try:
        env = cli_env(h)
        p = subprocess.run(
            _as_unprivileged(cli_argv("start", "--run-key", "k", "--", "true"), env),
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            cwd="/",
        )
        r = Result(p.returncode, parse_json(p.stdout.decode()), p.stdout.decode(), p.stderr.decode())
        err = check_error(r, 1, "state_dir")
        assert str(h) in err["message"]
        assert os.listdir(str(h)) == []
    finally:
        os.chmod(str(h), 0o700)


def test_version_works_whatever_the_home(tmp_path):
    h = tmp_path / "file"
    h.write_text("x")
    assert check_ok(run_cli(h, "version"))["contract"] == CONTRACT_VERSION


# -- a database that is not ours ------------------------------------------------------------------------------------
CORRUPT_ARGV = [
    ["status", "--run-key", "k"],
    ["status", "--running"],
    ["start", "--run-key", "k", "--", "true"],
    ["start", "--run-key", "k", "--sync", "--", "true"],
    ["clean", "--all"],
    ["abort", "--run-key", "k"],
    ["unlock", "--run-key", "k"],
    ["logs", "--run-key", "k"],
    ["wait", "--run-key", "k", "--timeout", "1"],
    ["rerun", "--run-key", "k"],
]


def _corrupt_home(tmp_path):
    h = tmp_path / "ojhome"
    (h / "logs").mkdir(parents=True)
    os.chmod(str(h), 0o700)
    os.chmod(str(h / "logs"), 0o700)
    data = os.urandom(8192)
    while data.startswith(b"SQLite"):
        data = os.urandom(8192)
    (h / "orchesjob.db").write_bytes(data)
    os.chmod(str(h / "orchesjob.db"), 0o600)
    return h, data


@pytest.mark.parametrize(
    "argv", CORRUPT_ARGV, ids=[" ".join(a[:2]) + ("-sync" if "--sync" in a else "") for a in CORRUPT_ARGV]
)
def test_corrupt_database_is_reported_and_left_untouched(tmp_path, argv):
    h, data = _corrupt_home(tmp_path)
    r = run_cli(h, *argv)
    err = check_error(r, 1, "corrupt_database")
    assert "orchesjob.db" in err["message"]
    assert (h / "orchesjob.db").read_bytes() == data
    assert os.listdir(str(h / "logs")) == [], "a job was launched against a corrupt database"


def test_foreign_sqlite_database_is_left_untouched(tmp_path):
    h = tmp_path / "ojhome"
    h.mkdir(mode=0o700)
    db = h / "orchesjob.db"
    c = sqlite3.connect(str(db))
    c.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT)")
    c.execute("INSERT INTO accounts (owner) VALUES ('alice')")
    c.commit()
    c.close()
    os.chmod(str(db), 0o600)
    data = db.read_bytes()
    check_error(run_cli(h, "start", "--run-key", "k", "--", "true"), 1, "corrupt_database")
    assert db.read_bytes() == data
    c = sqlite3.connect(str(db))
    assert c.execute("SELECT owner FROM accounts").fetchall() == [("alice",)]
    assert [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["accounts"]
    c.close()
