"""Fixtures for the black-box CLI tests: every test talks to `python -m orchesjob` as a separate process.

Each test gets a fresh ORCHESJOB_HOME under its tmp_path (the shared ``home`` fixture, tests/support/fixtures.py,
which also kills whatever the test left running there). `run(*args)` runs the CLI there and returns
(exit_code, parsed_json_or_None, stdout, stderr).
"""

import signal
import sqlite3
import subprocess
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.support.cli import Result, check_error, check_ok, run_cli
from tests.support.cli import wait_terminal as support_wait_terminal

# Ctrl-C tests send SIGINT to the CLI and expect its handler. A test run started in the background of a shell
# (`make test &`, a CI runner's job) inherits SIGINT *ignored*, and an ignored signal stays ignored across exec, so
# every CLI the tests start would ignore it too. Handling it in this process instead makes exec reset it to the
# default in every child, as in a run from a terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)
# Likewise SIGHUP, which a run under `nohup` inherits ignored: the hang-up tests expect a caller to die of it.
signal.signal(signal.SIGHUP, signal.SIG_DFL)


# -- fixtures -----------------------------------------------------------------------------------------------------
@pytest.fixture
def run(home: Path):
    """run(*args, env=None, timeout=60) -> Result(code, json, stdout, stderr) with ORCHESJOB_HOME=home."""

    def _run(*args: str, env: Optional[dict[str, str]] = None, timeout: float = 60) -> Result:
        return run_cli(home, *args, env=env, timeout=timeout)

    return _run


@pytest.fixture
def ok(run):
    """ok(*args) -> the parsed JSON of a command that must exit 0."""

    def _ok(*args: str, env: Optional[dict[str, str]] = None, timeout: float = 60) -> Any:
        return check_ok(run(*args, env=env, timeout=timeout))

    return _ok


@pytest.fixture
def assert_error():
    """assert_error(result, code, error_type=None) -> the error JSON."""
    return check_error


@pytest.fixture
def wait_terminal(run):
    """wait_terminal(job_id, timeout=60) -> the job once it is terminal (uses `orchesjob wait`)."""

    def _wait(job_id: str, timeout: float = 60) -> dict[str, Any]:
        return support_wait_terminal(lambda *a, timeout: check_ok(run(*a, timeout=timeout)), job_id, timeout)

    return _wait


@pytest.fixture
def start_job(ok):
    """start_job(run_key, *command, opts=()) -> start JSON (async unless opts has --sync)."""

    def _start(run_key: str, *command: str, opts=(), env=None) -> dict[str, Any]:
        return ok("start", "--run-key", run_key, *opts, "--", *command, env=env)

    return _start


@pytest.fixture
def db(home: Path):
    """db() -> a new sqlite3 connection to the state database (autocommit)."""
    conns = []

    def _db() -> sqlite3.Connection:
        c = sqlite3.connect(str(home / "orchesjob.db"), timeout=30, isolation_level=None)
        c.row_factory = sqlite3.Row
        conns.append(c)
        return c

    yield _db
    for c in conns:
        try:
            c.close()
        except Exception:  # noqa: BLE001 - teardown: a connection the test already broke
            pass


@pytest.fixture
def dead_pid():
    """The pid of a process that has exited and been reaped."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.fixture
def spawn():
    """spawn(argv, **popen_kwargs) -> Popen of an unrelated helper process, killed at teardown."""
    procs = []

    def _spawn(argv, **kw):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw)
        procs.append(p)
        return p

    yield _spawn
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
