"""Helpers of the fault suite: the CLI's output contract, evidence left by fault_job.py, and /proc scans.

The CLI is always driven as a separate process (through ``tests.support.cli``); nothing here imports the
product. /proc is read directly so a test can see what is alive without trusting the code under test.
"""

from __future__ import annotations

import collections
import json
import os
import random
import sqlite3
import sys
from pathlib import Path
from typing import Any

from tests.support.cli import Result, run_cli, wait_until
from tests.support.cli import wait_terminal as support_wait_terminal
from tests.support.procs import environ as _environ
from tests.support.procs import live_pids
from tests.support.procs import stat_fields as _stat

FAULT_JOB = str(Path(__file__).resolve().with_name("fault_job.py"))
EXIT_CODES = {0, 1, 2, 3, 4, 5}
ERROR_TYPES = {
    1: {"error", "state_dir", "corrupt_database", "database", "os_error", "unsupported_python"},
    2: {"invalid_argument"},
    3: {"not_found"},
    4: {"inconsistent_state", "other_pid_namespace", "not_owner", "liveness_known", "request_cleaned"},
    5: {"lock_timeout"},
}
ACTIVE = ("STARTING", "RUNNING")
TERMINAL = ("SUCCEEDED", "FAILED", "LOST", "CANCELLED", "ABORTED")

# -- the run's randomness and sizes -------------------------------------------------------------------------------
# Here, not in conftest.py: pytest imports a conftest under a name of its own, so a test importing it would get a
# second copy with a second random seed, not the one the run prints.
_seed_text = os.environ.get("ORCHESJOB_FAULT_SEED")
SEED = int(_seed_text) if _seed_text else random.SystemRandom().randrange(1, 2**31)
FULL = bool(os.environ.get("ORCHESJOB_FAULT_TRIALS"))
# {family of generated calls: {exit code: count}}, filled by the argv fuzz, printed in the run's summary.
FUZZ_TALLY: dict[str, dict[str, int]] = {}


def trials(ci: int, full: int | None = None) -> int:
    """The number of trials of a test: its CI size, or in the full run (ORCHESJOB_FAULT_TRIALS set) that number,
    or ``full`` for the few tests whose one trial is itself large (hundreds of processes)."""
    value = os.environ.get("ORCHESJOB_FAULT_TRIALS")
    if not value:
        return ci
    return full if full is not None else max(1, int(value))


# -- the CLI's output contract ------------------------------------------------------------------------------------
def contract_problems(r: Result, raw_ok: bool = False) -> list[str]:
    """Everything wrong with one CLI answer, as sentences (empty when it keeps the contract).

    The contract: never a traceback; an exit code from the table; stdout is exactly one JSON value (``raw_ok``:
    a successful ``logs`` without ``--json`` prints the log itself); a failure is one JSON object
    ``{error, message, exit_code}`` with a type that belongs to its exit code, and one ``orchesjob: MESSAGE`` line
    on stderr (besides ``orchesjob: warning:`` lines); and no "internal error" (the CLI's last-resort answer to an
    exception it did not foresee: a bug, never a way to reject input).
    """
    problems = []
    for name, text in (("stdout", r.out), ("stderr", r.err)):
        if "Traceback (most recent call last)" in text:
            problems.append("a traceback on %s" % name)
    if r.code not in EXIT_CODES:
        problems.append("exit code %r is not in the documented table" % r.code)
    if r.code == 0 and raw_ok:
        return problems
    try:
        value = json.loads(r.out)
    except ValueError:
        problems.append("stdout is not exactly one JSON value")
        return problems
    if r.code != 0:
        if not isinstance(value, dict) or not {"error", "message", "exit_code"} <= set(value):
            problems.append("a failure without an {error, message, exit_code} object")
            return problems
        if value["exit_code"] != r.code:
            problems.append("JSON exit_code %r differs from the process exit code %r" % (value["exit_code"], r.code))
        if value["error"] not in ERROR_TYPES.get(r.code, set()):
            problems.append("error type %r does not belong to exit code %d" % (value["error"], r.code))
        if str(value.get("message", "")).startswith("internal error"):
            problems.append("an internal error: an exception the CLI did not foresee")
        lines = [ln for ln in r.err.split("\n") if ln and not ln.startswith("orchesjob: warning:")]
        if len(lines) != 1 or not lines[0].startswith("orchesjob: "):
            problems.append("stderr is not one 'orchesjob: ...' line: %r" % r.err[:500])
    return problems


def assert_contract(r: Result, what: str = "", raw_ok: bool = False) -> Result:
    problems = contract_problems(r, raw_ok=raw_ok)
    assert not problems, "%s: %s\nexit %s\nstdout: %s\nstderr: %s" % (
        what or "CLI answer",
        "; ".join(problems),
        r.code,
        r.out[:2000],
        r.err[:2000],
    )
    return r


def cli(home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    """One CLI call that must keep the output contract, whatever its exit code."""
    r = run_cli(home, *args, env=env, timeout=timeout)
    return assert_contract(r, "orchesjob %s" % " ".join(str(a) for a in args[:4]), raw_ok=prints_raw(args))


def prints_raw(args) -> bool:
    """`logs` without --json prints the log itself, not JSON (when it succeeds)."""
    return bool(args) and args[0] == "logs" and "--json" not in args


def ok(home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Any:
    r = cli(home, *args, env=env, timeout=timeout)
    assert r.code == 0, "orchesjob %s: exit %d\nstdout: %s\nstderr: %s" % (" ".join(args[:4]), r.code, r.out, r.err)
    return r.json


def status(home: Path, job_id: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    return ok(home, "status", "--job-id", job_id, env=env)


def history(home: Path, run_key: str) -> list[dict[str, Any]]:
    r = cli(home, "status", "--run-key", run_key, "--all")
    if r.code == 3:
        return []
    assert r.code == 0, r
    return r.json


def wait_terminal(home: Path, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """The job once it has ended, each call held to the output contract (tests.support.cli.wait_terminal)."""
    return support_wait_terminal(lambda *a, timeout: ok(home, *a, timeout=timeout), job_id, timeout)


# -- evidence from fault_job.py -----------------------------------------------------------------------------------
def job_argv(
    marker: Path,
    lock: Path,
    duration: float = 0.0,
    exit: int = 0,
    children: int = 0,
    daemons: int = 0,
    linger: float = 30.0,
    ignore_term: bool = False,
    gate: Path | None = None,
    write_bytes: int = 0,
) -> list[str]:
    argv = [
        sys.executable,
        FAULT_JOB,
        "--marker",
        str(marker),
        "--lock",
        str(lock),
        "--duration",
        "%g" % duration,
        "--exit",
        str(exit),
        "--linger",
        "%g" % linger,
    ]
    if children:
        argv += ["--children", str(children)]
    if daemons:
        argv += ["--daemons", str(daemons)]
    if ignore_term:
        argv.append("--ignore-term")
    if gate is not None:
        argv += ["--gate", str(gate)]
    if write_bytes:
        argv += ["--write-bytes", str(write_bytes)]
    return argv


class Evidence:
    """The marker file of fault_job.py, parsed."""

    def __init__(self, marker: Path) -> None:
        try:
            text = marker.read_text()
        except FileNotFoundError:
            text = ""
        self.lines = [ln.split() for ln in text.splitlines() if ln.strip()]

    def begins(self, job_id: str | None = None) -> list[list[str]]:
        return [ln for ln in self.lines if ln[0] == "begin" and (job_id is None or ln[1] == job_id)]

    def ends(self, job_id: str) -> list[int]:
        return [int(ln[2]) for ln in self.lines if ln[0] == "end" and ln[1] == job_id]

    def overlaps(self) -> list[list[str]]:
        return [ln for ln in self.begins() if ln[3] == "OVERLAP"]

    def executions(self) -> collections.Counter:
        return collections.Counter(ln[1] for ln in self.begins())


# -- /proc (the shared part: tests/support/procs.py) ----------------------------------------------------------------
def job_processes(job_id: str, pgid: int | None = None) -> set[int]:
    """Live processes carrying the job's ORCHESJOB_JOB_ID, or in its process group."""
    needle = ("ORCHESJOB_JOB_ID=%s" % job_id).encode()
    found = set()
    for pid in live_pids():
        st = _stat(pid)
        if st is None:
            continue
        if (pgid and int(st[2]) == pgid) or needle in _environ(pid):
            found.add(pid)
    return found


def wait_gone(pids_fn, timeout: float, what: str) -> None:
    wait_until(lambda: not pids_fn(), timeout=timeout, step=0.05, what=what)


# -- the database, read from outside ----------------------------------------------------------------------------------
def db_rows(db: Path) -> list[Any]:
    """Every row of every table, in a stable order (a read-only look that changes nothing)."""
    if not db.exists():
        return []
    c = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=30)
    try:
        out = []
        tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        for t in tables:
            out.append((t, sorted(map(tuple, c.execute('SELECT * FROM "%s"' % t).fetchall()), key=repr)))
        return out
    finally:
        c.close()


def checkpoint(db: Path) -> None:
    """Move everything from the WAL into the main file (no CLI may be running)."""
    c = sqlite3.connect(str(db), timeout=30)
    try:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        c.close()
