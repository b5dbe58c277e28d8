"""Upgrading a state directory of orchesjob 1.1.0 in place, with real 1.1.0 databases and real 1.1.0 jobs.

A session fixture installs the published orchesjob 1.1.0 (`pip install orchesjob==1.1.0`) into a throwaway venv
made with a Python >= 3.12 found on this machine (1.1.0 requires it; pyenv's versions are looked for as
tools/test-other-pythons.sh does), and the tests drive that CLI to build real state: finished, failed, signalled,
unlaunchable, aborted, strict and rerun jobs, pending, used and expired unlocks, and jobs still RUNNING under a 1.1.0
worker. Nothing of 1.1.0 is kept in the repository. Without such a Python, or without PyPI, the tests are skipped,
except under CI (CI set), where that is a failure.

Every command a job runs appends a line to a file outside the state directory, so "how many times did it run" is
counted from evidence no CLI can fake.
"""

import json
import os
import random
import shutil
import signal
import sqlite3
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from orchesjob.store import SCHEMA_VERSION
from tests.support.cli import (
    REFERENCE_JOB_FIELDS,
    REPO_ROOT,
    Result,
    check_error,
    check_ok,
    cli_argv,
    cli_env,
    finish,
    open_files,
    parse_json,
    pid_alive,
    popen_cli,
    run_cli,
    stat_state,
    wait_pids_gone,
    wait_until,
    with_stderr_on_a_terminal,
)
from tests.support.guards import unavailable
from tests.support.v110 import V110

pytestmark = pytest.mark.timeout(300)

CI = bool(os.environ.get("CI"))
UNSHARE = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")
BACKUP = "orchesjob.db.1.1.0-backup"
# The pause points inside the upgrade (processes.pause_point): after the checks, after the backup, after the copy,
# and right before COMMIT.
UPGRADE_POINTS = ("upgrade-1.1.0-start", "upgrade-1.1.0-backup", "upgrade-1.1.0-copy", "upgrade-1.1.0-commit")


# -- helpers ------------------------------------------------------------------------------------------------------
def counting(marker: Path, then: str = "true") -> list[str]:
    """A command that records one line per execution in `marker`, then runs `then` (a shell snippet)."""
    return ["sh", "-c", 'echo "$$" >> %s; %s' % (marker, then)]


def runs(marker: Path) -> int:
    try:
        return len(marker.read_text().split())
    except FileNotFoundError:
        return 0


def stopped(pid: int) -> bool:
    return stat_state(pid) == "T"


def db_path(home: Path) -> Path:
    return home / "orchesjob.db"


def user_version(path: Path) -> int:
    c = sqlite3.connect(str(path))
    try:
        return int(c.execute("PRAGMA user_version").fetchone()[0])
    finally:
        c.close()


def dump(path: Path) -> list[str]:
    """The database's whole logical content (schema and rows), to compare two files."""
    c = sqlite3.connect(str(path))
    try:
        return list(c.iterdump()) + ["user_version=%d" % c.execute("PRAGMA user_version").fetchone()[0]]
    finally:
        c.close()


def tables(path: Path, *names: str) -> dict[str, list[tuple[Any, ...]]]:
    c = sqlite3.connect(str(path))
    try:
        return {n: sorted(tuple(r) for r in c.execute("SELECT * FROM %s" % n)) for n in names}
    finally:
        c.close()


def file_digests(home: Path) -> dict[str, Any]:
    """Every file of the state directory with its content; the -shm index (which readers touch) by name only."""
    import hashlib

    out: dict[str, Any] = {}
    for p in sorted(home.rglob("*")):
        rel = str(p.relative_to(home))
        out[rel] = None if rel.endswith("-shm") or not p.is_file() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def shape(path: Path) -> tuple[dict[str, list[tuple[Any, ...]]], list[str]]:
    c = sqlite3.connect(str(path))
    try:
        cols = {}
        for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            cols[name] = sorted((r[1], r[2], r[3], r[5]) for r in c.execute("PRAGMA table_info(%s)" % name))
        indexes = sorted(r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'index'"))
        return cols, indexes
    finally:
        c.close()


def as_110_sees_it(job: dict[str, Any]) -> dict[str, Any]:
    """Our job's reference fields as 1.1.0 recorded them: it stored a kill by signal N as exit code -N, and a
    command it could not launch as -1 (here: no exit code, the signal or the reason in their own fields)."""
    out = {f: job[f] for f in REFERENCE_JOB_FIELDS}
    if job.get("signal") is not None:
        out["exit_code"] = -job["signal"]
    elif job["exit_code"] is None and "exit code -1" in (job.get("end_reason") or ""):
        out["exit_code"] = -1
    return out


KEYS = ("failed", "twice", "signalled", "unlaunchable", "strict", "used", "expired", "aborted")


def build_history(v: V110, home: Path) -> None:
    """Finished state of every kind, written by the real 1.1.0 CLI."""
    v.ok(home, "start", "--run-key", "failed", "--sync", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    v.ok(home, "start", "--run-key", "twice", "--sync", "--", "sh", "-c", "echo first")
    v.ok(home, "start", "--run-key", "twice", "--sync", "--", "sh", "-c", "echo second")
    v.ok(home, "rerun", "--run-key", "twice", "--sync", "--reason", "once more")
    v.ok(home, "start", "--run-key", "signalled", "--sync", "--", "sh", "-c", "kill -TERM $$")
    v.ok(home, "start", "--run-key", "unlaunchable", "--sync", "--", "/nonexistent/program")
    v.ok(home, "start", "--run-key", "strict", "--strict", "--sync", "--", "true")
    v.ok(home, "unlock", "--run-key", "strict", "--reason", "again please")  # pending
    v.ok(home, "start", "--run-key", "used", "--strict", "--sync", "--", "true")
    v.ok(home, "unlock", "--run-key", "used", "--reason", "used once")
    v.ok(home, "start", "--run-key", "used", "--strict", "--sync", "--", "true")  # consumed it
    v.ok(home, "start", "--run-key", "expired", "--strict", "--sync", "--", "true")
    v.ok(home, "unlock", "--run-key", "expired", "--ttl", "1")
    v.ok(home, "start", "--run-key", "aborted", "--", "sleep", "300")
    v.ok(home, "abort", "--run-key", "aborted", "--reason", "not today", "--grace-seconds", "2")
    time.sleep(1.2)  # a gap longer than its 1 s TTL: the unlock of "expired" has expired


@pytest.fixture(scope="session")
def pristine(v110: V110, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A 1.1.0 state directory with every kind of finished job and nothing running, built once; tests copy it.

    It is built elsewhere and then moved, so the log paths 1.1.0 recorded in it point nowhere: a copy's jobs find
    their logs in the copy (a state directory moved or restored elsewhere)."""
    base = tmp_path_factory.mktemp("pristine110")
    built = base / "built"
    build_history(v110, built)
    job = v110.ok(built, "status", "--run-key", "aborted")
    wait_pids_gone([p for p in (job["worker_pid"], job["target_pid"]) if p])
    assert not (built / "orchesjob.db-wal").exists() or (built / "orchesjob.db-wal").stat().st_size == 0
    home = base / "ojhome"
    built.rename(home)
    yield home


def copy_state(src: Path, dst: Path) -> Path:
    shutil.copytree(str(src), str(dst))
    return dst


# -- reading without upgrading ------------------------------------------------------------------------------------
def test_reads_of_a_1_1_0_database_write_nothing(v110, pristine, home, tmp_path, run):
    copy_state(pristine, home)
    marker = tmp_path / "runs"
    running = v110.ok(home, "start", "--run-key", "running", "--", *counting(marker, "echo out; sleep 300"))
    # a job whose worker and command vanished (kill -9): a reader sees LOST, and must not record it here
    vanished = v110.ok(home, "start", "--run-key", "vanished", "--", "sleep", "300")
    for pid in (vanished["target_pid"], vanished["worker_pid"]):
        os.kill(pid, signal.SIGKILL)
    wait_pids_gone([vanished["target_pid"], vanished["worker_pid"]])
    wait_until(lambda: runs(marker) == 1, what="the 1.1.0 job to run")
    before = file_digests(home)

    def read(*args: str) -> Any:
        return check_ok(run(*args))

    failed = read("status", "--run-key", "failed")
    assert (failed["status"], failed["exit_code"], failed["end_reason"]) == ("FAILED", 3, "exited with code 3")
    assert failed["imported_from"] == "1.1.0" and failed["stdout_file"] == str(
        home / "logs" / (failed["job_id"] + ".stdout")
    )
    signalled = read("status", "--run-key", "signalled")
    assert (signalled["exit_code"], signalled["signal"], signalled["signal_name"]) == (None, 15, "SIGTERM")
    assert [j["attempt_no"] for j in read("status", "--all", "--run-key", "twice")] == [3, 2, 1]
    live = read("status", "--job-id", running["job_id"])
    assert (live["status"], live["liveness"], live["target_pid"]) == ("RUNNING", "verified", running["target_pid"])
    assert running["job_id"] in [j["job_id"] for j in read("status", "--running")]
    lost = read("status", "--run-key", "vanished")
    assert lost["status"] == "LOST" and lost["job_id"] == vanished["job_id"]
    assert run("logs", "--run-key", "failed").out == "out\n"
    assert run("logs", "--run-key", "failed", "--stream", "stderr").out == "err\n"
    assert read("wait", "--run-key", "failed", "--timeout", "1")["status"] == "FAILED"
    waited = read("wait", "--run-key", "running", "--timeout", "0.3")
    assert waited["timed_out"] is True and waited["status"] == "RUNNING"
    preview = read("clean", "--all", "--dry-run")
    assert preview["matched"] >= 10 and running["job_id"] not in [i["job_id"] for i in preview["items"]]

    assert file_digests(home) == before  # not a byte written, no backup, no upgrade
    assert user_version(db_path(home)) == 0
    # 1.1.0 itself still finds the vanished job active: nothing of the verdict was recorded
    assert v110.ok(home, "status", "--run-key", "vanished")["status"] in ("LOST", "RUNNING")


# -- the upgrade ----------------------------------------------------------------------------------------------------


def test_the_upgrade_shows_its_progress_when_stderr_is_a_terminal(pristine, home):
    """A big 1.1.0 database takes seconds to upgrade: on a terminal each phase is counted on stderr, and erased."""
    copy_state(pristine, home)
    conn = sqlite3.connect(str(db_path(home)))
    jobs = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    conn.close()
    code, out, shown = with_stderr_on_a_terminal(home, "unlock", "--run-key", "failed")
    assert code == 0 and json.loads(out)["migrated_from"]["version"] == "1.1.0"
    for phase in ("checking %d jobs" % jobs, "converting %d jobs" % jobs):
        assert "orchesjob: upgrading the orchesjob 1.1.0 database: %s: %d / %d (100%%)" % (phase, jobs, jobs) in shown
    assert "upgrading the orchesjob 1.1.0 database: backing it up: " in shown
    assert "orchesjob: making the 1.1.0 logs private (600): %d / %d" % (2 * jobs, 2 * jobs) in shown
    assert "orchesjob: warning: upgraded the orchesjob 1.1.0 database" in shown


def test_the_first_write_upgrades_in_place_and_everything_survives(v110, home, run, ok, tmp_path):
    build_history(v110, home)
    theirs = {k: v110.ok(home, "status", "--all", "--run-key", k) for k in KEYS}
    seen_before = {k: check_ok(run("status", "--all", "--run-key", k)) for k in KEYS}  # through the views
    original = dump(db_path(home))

    r = run("unlock", "--run-key", "failed", "--reason", "the first write")
    first = check_ok(r)
    backup = home / BACKUP
    assert first["migrated_from"] == {"version": "1.1.0", "backup": str(backup)}
    warnings = [ln for ln in r.err.splitlines() if ln.startswith("orchesjob: warning:")]
    assert len(warnings) == 1 and str(backup) in warnings[0] and "1.1.0" in warnings[0], r.err
    assert os.stat(str(backup)).st_mode & 0o777 == 0o600
    assert dump(backup) == original  # the backup is the database as 1.1.0 left it
    assert user_version(db_path(home)) == SCHEMA_VERSION
    fresh = tmp_path / "fresh"
    check_ok(run_cli(fresh, "start", "--run-key", "x", "--sync", "--", "true"))
    assert shape(db_path(home)) == shape(db_path(fresh))  # no trace of 1.1.0's tables

    for key in KEYS:
        now = check_ok(run("status", "--all", "--run-key", key))
        assert now == seen_before[key], key  # the views showed exactly what the upgrade wrote
        assert [as_110_sees_it(j) for j in now] == [{f: j[f] for f in REFERENCE_JOB_FIELDS} for j in theirs[key]]
        assert all(j["imported_from"] == "1.1.0" for j in now)
    assert "migrated_from" not in check_ok(run("unlock", "--run-key", "failed"))  # once only

    unlaunchable = ok("status", "--run-key", "unlaunchable")
    assert unlaunchable["exit_code"] is None and "-1" in unlaunchable["end_reason"]
    lineage = ok("status", "--all", "--run-key", "twice")
    assert lineage[0]["rerun_of_job_id"] and lineage[0]["rerun_reason"] == "once more"
    aborted = ok("status", "--run-key", "aborted")
    assert (aborted["status"], aborted["abort_reason"]) == ("ABORTED", "not today")
    used = ok("status", "--all", "--run-key", "used")
    assert used[0]["strict_override_used"] is True and used[0]["override_reason"] == "used once"
    # logs of old jobs, where 1.1.0 wrote them
    assert (
        ok("logs", "--run-key", "twice", "--json")["data"] == "second\n"
        or run("logs", "--job-id", lineage[0]["job_id"]).out == "second\n"
    )
    assert run("logs", "--job-id", lineage[2]["job_id"]).out == "first\n"

    # pending unlock: consumed by a strict start, with its reason; the used and expired ones are not pending
    override = ok("start", "--run-key", "strict", "--strict", "--sync", "--", "true")
    assert override["accepted"] is True and override["strict_override_used"] is True
    assert override["override_reason"] == "again please" and override["attempt_no"] == 2
    for key in ("used", "expired", "strict"):
        assert ok("start", "--run-key", key, "--strict", "--", "true")["existing"] is True, key
    # attempt numbers go on where 1.1.0 left them; rerun of an old job
    assert ok("start", "--run-key", "twice", "--sync", "--", "true")["attempt_no"] == 4
    again = ok("rerun", "--run-key", "failed", "--sync")
    assert (again["attempt_no"], again["exit_code"], again["command"]) == (2, 3, lineage and again["command"])
    assert again["command"] == ["sh", "-c", "echo out; echo err >&2; exit 3"]
    old_logs = [Path(j["stdout_file"]) for j in lineage]
    assert all(p.exists() for p in old_logs)
    cleaned = ok("clean", "--all")
    assert cleaned["skipped"] == [] and cleaned["deleted"] >= 14
    assert not any(p.exists() for p in old_logs)  # clean removes the old jobs' logs too
    assert backup.exists()  # never cleaned


def test_a_running_1_1_0_job_is_returned_never_run_beside_and_its_result_lands(v110, home, tmp_path, ok, wait_terminal):
    marker = tmp_path / "runs"
    release = tmp_path / "release"
    job = v110.ok(
        home,
        "start",
        "--run-key",
        "nightly",
        "--",
        *counting(marker, "while [ ! -e %s ]; do sleep 0.05; done; exit 7" % release),
    )
    assert job["status"] == "RUNNING"
    wait_until(lambda: runs(marker) == 1, what="the 1.1.0 job to run")
    answers = [ok("start", "--run-key", "nightly", "--", *counting(marker)) for _ in range(3)]
    assert [a["existing"] for a in answers] == [True] * 3
    assert {a["job_id"] for a in answers} == {job["job_id"]}
    assert "migrated_from" in answers[0] and "migrated_from" not in answers[1]
    assert user_version(db_path(home)) == SCHEMA_VERSION
    release.touch()  # the 1.1.0 worker records the result in the upgraded database, with its own UPDATE
    ended = wait_terminal(job["job_id"])
    assert (ended["status"], ended["exit_code"], ended["end_reason"]) == ("FAILED", 7, "exited with code 7")
    assert runs(marker) == 1
    nxt = ok("start", "--run-key", "nightly", "--sync", "--", *counting(marker))
    assert (nxt["accepted"], nxt["attempt_no"], nxt["status"], nxt["rerun_of_job_id"]) == (
        True,
        2,
        "SUCCEEDED",
        job["job_id"],
    )
    assert runs(marker) == 2


def test_a_1_1_0_job_that_ends_during_the_upgrade_keeps_its_result(v110, home, tmp_path, ok, wait_terminal):
    """The 1.1.0 worker's final UPDATE waits for the upgrade's lock (up to its 10 s), then lands in our table."""
    marker, release, ended = tmp_path / "runs", tmp_path / "release", tmp_path / "ended"
    job = v110.ok(
        home,
        "start",
        "--run-key",
        "k",
        "--",
        *counting(marker, "while [ ! -e %s ]; do sleep 0.05; done; echo >> %s; exit 5" % (release, ended)),
    )
    wait_until(lambda: runs(marker) == 1)
    upgrader = popen_cli(
        home, "start", "--run-key", "k", "--", "true", env={"ORCHESJOB_PAUSE_AT": "upgrade-1.1.0-copy"}
    )
    try:
        wait_until(lambda: stopped(upgrader.pid), what="the upgrade to pause")
        release.touch()
        wait_until(ended.exists, what="the command to end")
        wait_until(lambda: not pid_alive(job["target_pid"]))
        # a negative check: the worker cannot record its result while the paused upgrade holds the lock, so half
        # a second later it is still there, waiting
        time.sleep(0.5)
        assert pid_alive(job["worker_pid"])
    finally:
        os.kill(upgrader.pid, signal.SIGCONT)
    answer = check_ok(finish(upgrader))
    assert answer["migrated_from"]["version"] == "1.1.0"
    # The upgrade commits before the start decides, and the waiting worker may take the lock in between: then the
    # start finds the job FAILED and runs its `true` as attempt 2; otherwise it finds the job still ending and
    # returns it. Either way the 1.1.0 job's result lands and its command ran once.
    if answer["job_id"] != job["job_id"]:
        assert answer["attempt_no"] == 2 and answer["rerun_of_job_id"] == job["job_id"], answer
    final = wait_terminal(job["job_id"])
    assert (final["status"], final["exit_code"]) == ("FAILED", 5)
    assert runs(marker) == 1


def test_abort_stops_a_running_1_1_0_job(v110, home, tmp_path, ok):
    marker = tmp_path / "runs"
    job = v110.ok(home, "start", "--run-key", "k", "--", *counting(marker, "sleep 300"))
    wait_until(lambda: runs(marker) == 1)
    out = ok("abort", "--run-key", "k", "--reason", "upgrade day", "--grace-seconds", "3")
    assert out["migrated_from"]["version"] == "1.1.0"
    assert (out["status"], out["abort_reason"], out["aborted"]) == ("ABORTED", "upgrade day", True)
    assert out["sent_term_target"] is True
    wait_pids_gone([job["target_pid"], job["worker_pid"]], timeout=10)
    assert ok("status", "--run-key", "k")["finished_at"] is not None
    assert ok("start", "--run-key", "k", "--sync", "--", *counting(marker))["attempt_no"] == 2
    assert runs(marker) == 2


def test_a_recycled_pid_is_never_taken_for_a_1_1_0_job(v110, home, spawn, run, ok, assert_error):
    """1.1.0 stored no start times: a pid counts only with the command line 1.1.0 ran there. Recorded pids that now
    belong to unrelated processes make the job LOST, and abort signals none of them."""
    job = v110.ok(home, "start", "--run-key", "k", "--", "sleep", "300")
    # the worker first: killed after its command, it could still record the command's death as FAILED
    for pid in (job["worker_pid"], job["target_pid"]):
        os.kill(pid, signal.SIGKILL)
    wait_pids_gone([job["target_pid"], job["worker_pid"]])
    # the pids now run other things: the worker's a process that is no 1.1.0 worker, the target's the very same
    # argv, but not as the session leader 1.1.0 made its targets
    decoys = [spawn(["sleep", "300"], start_new_session=True), spawn(["sleep", "300"])]
    c = sqlite3.connect(str(db_path(home)))
    c.execute(
        "UPDATE jobs SET worker_pid = ?, target_pid = ? WHERE job_id = ?", (decoys[0].pid, decoys[1].pid, job["job_id"])
    )
    c.commit()
    c.close()
    assert check_ok(run("status", "--run-key", "k"))["status"] == "LOST"
    assert_error(run("abort", "--run-key", "k", "--grace-seconds", "1"), 4, "inconsistent_state")
    assert all(d.poll() is None for d in decoys)
    assert ok("status", "--run-key", "k")["status"] == "LOST"  # recorded once the database was upgraded


# -- kill -9 during the upgrade, and concurrent CLIs ------------------------------------------------------------------
def _our_tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Our tables' rows, with the state directory in the log paths written as <home> (each try is a copy)."""
    home = str(path.parent)

    def norm(v: Any) -> Any:
        return "<home>" + v[len(home) :] if isinstance(v, str) and v.startswith(home + "/") else v

    return {
        n: [tuple(norm(v) for v in row) for row in rows]
        for n, rows in tables(path, "jobs", "run_keys", "start_requests").items()
    }


def test_a_backup_left_unnamed_by_a_kill_after_the_commit_gets_its_name(pristine, tmp_path):
    """A kill between the upgrade's COMMIT and the renaming of its backup leaves the database upgraded and the whole
    backup under its `.partial` name; the next writing command names it, and it is the original database."""
    original = dump(db_path(pristine))
    home = copy_state(pristine, tmp_path / "home")
    check_error(run_cli(home, "abort", "--run-key", "failed"), 4)  # upgrades, then refuses: nothing else written
    (home / BACKUP).rename(home / (BACKUP + ".partial"))  # as the kill would have left it
    check_ok(run_cli(home, "status", "--run-key", "failed"))  # a reader does not touch it
    assert (home / (BACKUP + ".partial")).exists() and not (home / BACKUP).exists()
    check_error(run_cli(home, "abort", "--run-key", "failed"), 4)
    assert not list(home.glob("*.partial*"))
    assert dump(home / BACKUP) == original


def test_kill_9_at_any_moment_of_the_upgrade_leaves_the_old_database_or_the_new_one(pristine, tmp_path):
    original = dump(db_path(pristine))
    reference = copy_state(pristine, tmp_path / "reference")
    # abort of a finished job: the upgrade commits, then the command fails (exit 4) without writing anything else
    check_error(run_cli(reference, "abort", "--run-key", "failed"), 4)
    upgraded = _our_tables(db_path(reference))
    seed = int(os.environ.get("ORCHESJOB_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    moments: list[Any] = list(UPGRADE_POINTS) + [rng.uniform(0.0, 0.4) for _ in range(8)]
    outcomes = []
    for i, moment in enumerate(moments):
        home = copy_state(pristine, tmp_path / ("try%d" % i))
        env = {"ORCHESJOB_PAUSE_AT": moment} if isinstance(moment, str) else None
        p = popen_cli(home, "abort", "--run-key", "failed", env=env)
        if env:
            wait_until(lambda p=p: stopped(p.pid) or p.poll() is not None, what="the pause at %s" % moment)
            assert p.poll() is None, "the pause point %s was never reached (seed %d)" % (moment, seed)
        else:
            time.sleep(moment)  # a random moment of the upgrade to kill it at (the seed above repeats it)
        p.kill()
        p.communicate()
        ctx = "moment %r, seed %d" % (moment, seed)
        db = db_path(home)
        c = sqlite3.connect(str(db))
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok", ctx
        c.close()
        if user_version(db) == 0:
            assert dump(db) == original, ctx
            outcomes.append("old")
        else:
            assert user_version(db) == SCHEMA_VERSION and _our_tables(db) == upgraded, ctx
            assert shape(db) == shape(db_path(reference)), ctx
            outcomes.append("new")
        for b in home.glob(BACKUP + "*"):
            assert ".partial" in b.name or dump(b) == original, (b, ctx)
        # whatever the kill left, the next command works and finds the same upgraded state
        check_error(run_cli(home, "abort", "--run-key", "failed"), 4)
        assert _our_tables(db) == upgraded, ctx
        assert not list(home.glob("*.partial*")), ctx
        if outcomes[-1] == "old":
            assert (home / BACKUP).exists(), ctx
    assert outcomes[: len(UPGRADE_POINTS)] == ["old"] * len(UPGRADE_POINTS)


def test_concurrent_clis_during_the_upgrade_queue_and_then_see_the_upgraded_state(v110, home, tmp_path):
    marker = tmp_path / "runs"
    build_history(v110, home)
    job = v110.ok(home, "start", "--run-key", "running", "--", *counting(marker, "sleep 300"))
    wait_until(lambda: runs(marker) == 1)
    upgrader = popen_cli(
        home, "start", "--run-key", "running", "--", *counting(marker), env={"ORCHESJOB_PAUSE_AT": "upgrade-1.1.0-copy"}
    )
    others: list[tuple[str, subprocess.Popen]] = []
    try:
        wait_until(lambda: stopped(upgrader.pid), what="the upgrade to pause")
        for _ in range(4):
            others.append(("same", popen_cli(home, "start", "--run-key", "running", "--", *counting(marker))))
        for i in range(2):
            others.append(
                (
                    "new",
                    popen_cli(
                        home, "start", "--run-key", "new%d" % i, "--sync", "--", *counting(tmp_path / ("new%d" % i))
                    ),
                )
            )
        others.append(("read", popen_cli(home, "status", "--run-key", "failed")))
        others.append(("read", popen_cli(home, "status", "--all", "--run-key", "twice")))
        # they are all waiting for the lock now (they have the database open), or have read the old state and left
        db = str(db_path(home))
        wait_until(
            lambda: all(p.poll() is not None or db in open_files(p.pid) for _, p in others),
            60,
            what="the other CLIs to reach the database",
        )
    finally:
        os.kill(upgrader.pid, signal.SIGCONT)
    first = check_ok(finish(upgrader))
    assert first["existing"] is True and first["job_id"] == job["job_id"]
    assert first["migrated_from"] == {"version": "1.1.0", "backup": str(home / BACKUP)}
    for kind, p in others:
        r = finish(p)
        out = check_ok(r)
        if kind == "same":
            assert out["existing"] is True and out["job_id"] == job["job_id"], out
        elif kind == "new":
            assert out["accepted"] is True and out["status"] == "SUCCEEDED", out
        assert "migrated_from" not in (out if isinstance(out, dict) else {}), out
    assert runs(marker) == 1
    assert runs(tmp_path / "new0") == 1 and runs(tmp_path / "new1") == 1
    assert [p.name for p in home.iterdir() if p.name.startswith(BACKUP)] == [BACKUP]
    assert user_version(db_path(home)) == SCHEMA_VERSION


# -- the default state directory of a user who is not root ------------------------------------------------------------
USER = "ojupgrade110"


@pytest.fixture
def other_user(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    """A user account made for the test (useradd), with a home of its own; removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create a user and a private mount namespace")
    if not (UNSHARE and SETPRIV and shutil.which("useradd")):
        unavailable("useradd, unshare and setpriv are needed to act as another user with its own /var/lib")
    base = Path(tempfile.mkdtemp(prefix="oj110user-"))
    os.chmod(str(base), 0o755)
    user_home = base / "home"
    subprocess.run(["userdel", USER], capture_output=True)
    subprocess.run(
        ["useradd", "--no-create-home", "--home-dir", str(user_home), "--shell", "/bin/sh", USER],
        check=True,
        capture_output=True,
    )
    import pwd

    pw = pwd.getpwnam(USER)
    user_home.mkdir(mode=0o700)
    os.chown(str(user_home), pw.pw_uid, pw.pw_gid)
    try:
        yield pw.pw_uid, pw.pw_gid, base
    finally:
        _kill_marked(str(base))
        subprocess.run(["userdel", USER], capture_output=True)
        shutil.rmtree(str(base), ignore_errors=True)


def _kill_marked(token: str) -> None:
    needle = ("OJ110_TEST=%s" % token).encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as f:
                if needle in f.read().split(b"\0"):
                    os.kill(int(name), signal.SIGKILL)
        except OSError:
            pass


def _unreachable_ancestor(path: str) -> Optional[str]:
    """The highest directory above `path` that other users cannot enter (e.g. /root for pyenv's Pythons)."""
    parts = Path(path).parts
    for i in range(2, len(parts) + 1):
        d = os.path.join(*parts[:i])
        if not os.stat(d).st_mode & 0o001:
            return d
    return None


class AsUser:
    """Runs argv as the test user in a private mount namespace whose /var/lib is a temporary directory (so the
    machine's /var/lib/orchesjob is never touched), with pyenv's interpreter made reachable there when it lives
    under a directory the user cannot enter (a tmpfs over that directory with the interpreter bound back in)."""

    def __init__(self, uid: int, gid: int, base: Path, v: V110) -> None:
        self.uid, self.gid, self.base, self.v = uid, gid, base, v
        self.home = base / "home"
        self.var_lib = base / "var-lib"
        self.var_lib.mkdir(mode=0o755, exist_ok=True)
        self.stage = base / "stage"
        self.stage.mkdir(mode=0o755, exist_ok=True)
        blocker = _unreachable_ancestor(v.base_prefix)
        for needed in (REPO_ROOT, str(base)):
            if blocker and (needed + "/").startswith(blocker + "/"):
                unavailable("the test user cannot reach %s" % needed)
        self.blocker = blocker

    def argv(self, argv: list[str]) -> list[str]:
        script = ["set -e", 'mount --bind "%s" /var/lib' % self.var_lib]
        if self.blocker:
            script += [
                'mount --bind "%s" "%s"' % (self.v.base_prefix, self.stage),
                'mount -t tmpfs -o mode=0755 tmpfs "%s"' % self.blocker,
                'mkdir -p "%s"' % self.v.base_prefix,
                'mount --move "%s" "%s"' % (self.stage, self.v.base_prefix),
            ]
        script.append('exec "%s" --reuid=%d --regid=%d --clear-groups -- "$@"' % (SETPRIV, self.uid, self.gid))
        return [str(UNSHARE), "--mount", "--propagation", "private", "sh", "-c", "\n".join(script), "sh"] + argv

    def env(self, extra: Optional[dict[str, str]] = None) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "OJ110_TEST": str(self.base),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        env.update(extra or {})
        return env

    def _run(self, argv: list[str], env: dict[str, str]) -> Result:
        p = subprocess.run(
            self.argv(argv), env=env, cwd=str(self.home), stdin=subprocess.DEVNULL, capture_output=True, timeout=120
        )
        out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
        return Result(p.returncode, parse_json(out), out, err)

    def v110(self, *args: str) -> Result:
        return self._run([self.v.python, "-m", "orchesjob"] + list(args), self.env())

    def ours(self, *args: str, env: Optional[dict[str, str]] = None) -> Result:
        return self._run(
            [self.v.python, "-m", "orchesjob"] + list(args), self.env(dict(env or {}, PYTHONPATH=REPO_ROOT))
        )


def test_a_user_whose_1_1_0_state_is_in_var_lib_keeps_it(v110, other_user):
    """1.1.0 kept every user's state in /var/lib/orchesjob. A user whose job still runs there under 1.1.0 upgrades
    and, with no ORCHESJOB_HOME, our CLI finds that job and never runs it a second time."""
    uid, gid, base = other_user
    u = AsUser(uid, gid, base, v110)
    state = u.var_lib / "orchesjob"
    state.mkdir(mode=0o700)
    os.chown(str(state), uid, gid)  # as an administrator prepares it for 1.1.0 (it cannot create /var/lib/x)
    marker = u.home / "runs"
    r = u.v110("start", "--run-key", "nightly", "--", *counting(marker, "sleep 300"))
    assert r.code == 0, r
    job = r.json
    assert job["status"] == "RUNNING" and job["stdout_file"].startswith("/var/lib/orchesjob/logs/")
    assert os.stat(str(state / "orchesjob.db")).st_uid == uid
    wait_until(lambda: runs(marker) == 1)

    seen = check_ok(u.ours("status", "--run-key", "nightly"))
    assert (seen["job_id"], seen["status"], seen["liveness"]) == (job["job_id"], "RUNNING", "verified")
    r = u.ours("start", "--run-key", "nightly", "--", *counting(marker))
    again = check_ok(r)
    assert again["existing"] is True and again["job_id"] == job["job_id"]
    assert again["migrated_from"] == {"version": "1.1.0", "backup": "/var/lib/orchesjob/" + BACKUP}
    assert (state / BACKUP).stat().st_uid == uid
    # no second execution: the key has one attempt (a copy runs only as a job of its own) and the command ran once
    assert [j["job_id"] for j in check_ok(u.ours("status", "--run-key", "nightly", "--all"))] == [job["job_id"]]
    assert runs(marker) == 1

    # state in both places: the rule picks /var/lib/orchesjob and says once that the other one is ignored
    xdg = u.home / ".local" / "state" / "orchesjob"
    check_ok(u.ours("start", "--run-key", "elsewhere", "--sync", "--", "true", env={"ORCHESJOB_HOME": str(xdg)}))
    r = u.ours("status", "--run-key", "nightly")
    assert check_ok(r)["job_id"] == job["job_id"]
    warnings = [ln for ln in r.err.splitlines() if ln.startswith("orchesjob: warning:")]
    assert len(warnings) == 1 and "/var/lib/orchesjob" in warnings[0] and str(xdg) in warnings[0], r.err

    stopped_job = check_ok(u.ours("abort", "--run-key", "nightly", "--grace-seconds", "3"))
    assert stopped_job["status"] == "ABORTED"
    wait_pids_gone([job["target_pid"], job["worker_pid"]], timeout=10)
    assert runs(marker) == 1

    # a /var/lib/orchesjob that is not the user's own is not the user's default: the XDG directory is
    os.chown(str(state), 0, 0)
    os.chown(str(state / "orchesjob.db"), 0, 0)
    r = u.ours("status", "--run-key", "elsewhere")
    assert check_ok(r)["status"] == "SUCCEEDED" and "warning" not in r.err, r.err


def test_a_1_1_0_job_whose_worker_died_still_holds_its_key_while_its_command_runs(v110, home, tmp_path, ok):
    """1.1.0 calls such a job LOST (and would run the key again beside the command): the upgrade makes it RUNNING
    again while its verified command lives, so the key stays busy, and abort stops it (its whole process group)."""
    marker = tmp_path / "runs"
    job = v110.ok(home, "start", "--run-key", "k", "--", *counting(marker, "sleep 300 & wait"))
    wait_until(lambda: runs(marker) == 1)
    os.kill(job["worker_pid"], signal.SIGKILL)
    wait_pids_gone([job["worker_pid"]])
    assert v110.ok(home, "status", "--run-key", "k")["status"] == "LOST"  # 1.1.0's verdict, recorded by it
    again = ok("start", "--run-key", "k", "--", *counting(marker))
    assert again["existing"] is True and again["job_id"] == job["job_id"] and again["status"] == "RUNNING"
    assert again["finished_at"] is None
    # no second execution: the key has one attempt (a copy runs only as a job of its own) and the command ran once
    assert [j["job_id"] for j in ok("status", "--run-key", "k", "--all")] == [job["job_id"]]
    assert runs(marker) == 1
    seen = ok("status", "--run-key", "k")
    assert (seen["status"], seen["liveness"]) == ("RUNNING", "verified")
    out = ok("abort", "--run-key", "k", "--grace-seconds", "3")
    assert out["status"] == "ABORTED" and out["sent_term_target"] is True
    wait_pids_gone([job["target_pid"]], timeout=10)
    assert ok("start", "--run-key", "k", "--sync", "--", *counting(marker))["attempt_no"] == 2
    assert runs(marker) == 2


# -- never twice, second round: 1.1.0 jobs are alive until proven dead ---------------------------------------------
def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("kind", ["shebang-script", "exec-another-program"])
def test_a_running_1_1_0_script_is_recognised_after_the_upgrade_and_abort_stops_it(v110, home, tmp_path, ok, kind):
    """A `#!` script runs as /bin/sh SCRIPT, and a command may exec another program: neither shows the argv 1.1.0
    recorded. They still hold the job's logs (their stdout and stderr), which is what they are known by."""
    marker = tmp_path / "runs"
    if kind == "shebang-script":
        command = [str(_script(tmp_path / "backup.sh", 'echo "$$" >> %s; sleep 300' % marker))]
    else:
        command = ["sh", "-c", 'echo "$$" >> %s; exec sleep 300' % marker]
    job = v110.ok(home, "start", "--run-key", "k", "--", *command)
    wait_until(lambda: runs(marker) == 1, what="the 1.1.0 job to run")
    ok("start", "--run-key", "other", "--sync", "--", "true")  # the first write upgrades the database
    assert user_version(db_path(home)) == SCHEMA_VERSION
    seen = ok("status", "--run-key", "k")
    assert (seen["status"], seen["liveness"], seen["imported_from"]) == ("RUNNING", "verified", "1.1.0"), seen
    again = ok("start", "--run-key", "k", "--", *counting(marker))
    assert again["existing"] is True and again["job_id"] == job["job_id"]
    aborted = ok("abort", "--run-key", "k", "--grace-seconds", "2")
    assert aborted["status"] == "ABORTED" and aborted["sent_term_target"] is True
    wait_pids_gone([job["target_pid"], job["worker_pid"]], timeout=15)
    assert runs(marker) == 1


@pytest.mark.parametrize("value", ["~/state", ""])
def test_orchesjob_home_as_1_1_0_read_it_still_finds_its_running_job(v110, tmp_path, value):
    """1.1.0 took ORCHESJOB_HOME verbatim: '~/state' is a directory named '~' under the working directory (cron and
    systemd do not expand it), '' the working directory itself. This CLI reads the value its own way, but a start
    looks in 1.1.0's place too and returns the job running there, which then answers to its job id."""
    cwd, fake_home = tmp_path / "cwd", tmp_path / "h"
    cwd.mkdir()
    fake_home.mkdir()
    marker = tmp_path / "runs"
    env = {"ORCHESJOB_HOME": value, "HOME": str(fake_home), "XDG_STATE_HOME": str(fake_home / ".xdg")}
    r = v110.run(tmp_path, "start", "--run-key", "nightly", "--", *counting(marker, "sleep 300"), cwd=cwd, extra=env)
    assert r.code == 0, r
    job = r.json
    their_place = cwd / "~" / "state" if value else cwd
    assert (their_place / "orchesjob.db").exists()  # 1.1.0 records the log paths relative to it, too
    wait_until(lambda: runs(marker) == 1, what="the 1.1.0 job to run")

    def ours(*args: str) -> Result:
        e = cli_env(tmp_path, env)
        e["ORCHESJOB_HOME"] = value
        p = subprocess.run(cli_argv(*args), env=e, cwd=str(cwd), capture_output=True, timeout=60)
        return Result(p.returncode, parse_json(p.stdout.decode()), p.stdout.decode(), p.stderr.decode())

    try:
        again = check_ok(ours("start", "--run-key", "nightly", "--", *counting(marker)))
        assert again["existing"] is True and again["job_id"] == job["job_id"], again
        assert again["state_dir"] == str(their_place)
        waited = check_ok(ours("wait", "--job-id", job["job_id"], "--timeout", "0.2"))
        assert waited["status"] == "RUNNING" and waited["timed_out"] and waited["state_dir"] == str(their_place)
        stopped_job = check_ok(ours("abort", "--job-id", job["job_id"], "--grace-seconds", "2"))
        assert stopped_job["status"] == "ABORTED"
        wait_pids_gone([job["target_pid"], job["worker_pid"]], timeout=15)
        assert runs(marker) == 1
    finally:  # its ORCHESJOB_HOME is no path the home fixture's cleanup would recognise
        for kill, pid in ((os.killpg, job["target_pid"]), (os.kill, job["worker_pid"])):
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.mark.skipif(not UNSHARE or (os.geteuid() != 0 and not CI), reason="unshare --pid needs root")
def test_an_imported_job_is_never_lost_to_a_reader_in_another_pid_namespace(v110, home, tmp_path, ok, run):
    """Imported rows carry no pid namespace the reader could compare: what another namespace cannot see is no
    evidence, and the job stays alive there (the logs' writers prove it), or unknown once they are gone."""
    marker = tmp_path / "runs"
    job = v110.ok(home, "start", "--run-key", "k", "--", *counting(marker, "sleep 300"))
    wait_until(lambda: runs(marker) == 1, what="the 1.1.0 job to run")
    ok("start", "--run-key", "other", "--sync", "--", "true")  # upgraded

    def from_other_namespace(*args: str) -> dict[str, Any]:
        argv = [str(UNSHARE), "--pid", "--fork", "--mount-proc"] + cli_argv(*args)
        p = subprocess.run(argv, env=cli_env(home), capture_output=True, timeout=60, cwd=REPO_ROOT)
        assert p.returncode == 0, p
        return json.loads(p.stdout)

    shown = from_other_namespace("status", "--run-key", "k")
    assert (shown["status"], shown["liveness"]) == ("RUNNING", "verified")
    os.kill(job["worker_pid"], signal.SIGKILL)  # the command runs on, holding the logs
    wait_pids_gone([job["worker_pid"]])
    shown = from_other_namespace("status", "--run-key", "k")
    assert (shown["status"], shown["liveness"]) == ("RUNNING", "verified")
    again = from_other_namespace("start", "--run-key", "k", "--", *counting(marker))
    assert again["existing"] is True and again["job_id"] == job["job_id"]
    os.killpg(job["target_pid"], signal.SIGKILL)  # the command and its `sleep`, which holds the logs too
    wait_until(lambda: not _group_alive(job["target_pid"]), 30, what="the job's process group to be gone")
    shown = from_other_namespace("status", "--run-key", "k")
    assert (shown["status"], shown["liveness"]) == ("RUNNING", "unknown"), shown
    assert runs(marker) == 1
    # from the host's own pid namespace every process is visible: there, gone is gone
    assert ok("status", "--run-key", "k")["status"] == "LOST"


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is in process group `pgid`."""
    return any(
        _pgid_or_none(int(n)) == pgid and stat_state(int(n)) not in (None, "Z")
        for n in os.listdir("/proc")
        if n.isdigit()
    )


def _pgid_or_none(pid: int) -> Optional[int]:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def test_an_upgrade_killed_before_its_commit_leaves_no_backup_under_the_documented_name(v110, home, tmp_path, ok):
    """The backup is named once the upgrade has committed. A killed one leaves only its .partial; the next upgrade
    writes the backup under the documented name, as the database was at that (later) moment."""
    v110.ok(home, "start", "--run-key", "early", "--sync", "--", "true")
    killed = popen_cli(
        home, "start", "--run-key", "mine", "--sync", "--", "true", env={"ORCHESJOB_PAUSE_AT": "upgrade-1.1.0-commit"}
    )
    wait_until(lambda: stopped(killed.pid), 60, what="the upgrade to stop before its commit")
    killed.kill()
    killed.wait()
    assert user_version(db_path(home)) == 0
    assert not (home / BACKUP).exists() and not list(home.glob(BACKUP + ".[0-9]*"))
    late = v110.ok(home, "start", "--run-key", "late", "--sync", "--", "true")  # 1.1.0 goes on meanwhile
    out = ok("start", "--run-key", "mine", "--sync", "--", "true")
    assert out["migrated_from"]["backup"] == str(home / BACKUP)
    assert not list(home.glob(BACKUP + ".*"))
    c = sqlite3.connect(str(home / BACKUP))
    try:
        assert c.execute("SELECT status FROM jobs WHERE job_id = ?", (late["job_id"],)).fetchone() == ("SUCCEEDED",)
    finally:
        c.close()


def test_a_watch_never_upgrades_a_1_1_0_database(v110, home, tmp_path, run):
    job = v110.ok(home, "start", "--run-key", "k", "--sync", "--", "sh", "-c", "echo out")
    before = file_digests(home)
    w = check_ok(run("wait", "--watch", "%s:0:0:0:0:watcher" % job["job_id"], "--timeout", "1"))
    assert w["jobs"][0]["news"] is True and w["jobs"][0]["status"] == "SUCCEEDED"
    assert w["jobs"][0]["logs"]["stdout"]["data"] == "out\n"
    assert user_version(db_path(home)) == 0 and file_digests(home) == before


def test_the_upgrade_makes_imported_logs_private_and_doctor_names_1_1_0_run_again(v110, home, tmp_path, ok, run):
    job = v110.ok(home, "start", "--run-key", "k", "--sync", "--", "sh", "-c", "echo out")
    assert stat.S_IMODE(os.stat(job["stdout_file"]).st_mode) & 0o044  # 1.1.0 leaves them readable
    ok("start", "--run-key", "other", "--sync", "--", "true")  # upgraded
    for path in (job["stdout_file"], job["stderr_file"]):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    doctor = json.loads(run("doctor", "--format", "json").out)
    assert doctor["healthy"] is True, doctor
    v110.run(home, "status", "--run-key", "k")  # 1.1.0 run again on the upgraded database makes its tables
    r = run("doctor", "--format", "json")
    report = json.loads(r.out)
    (f,) = [f for f in report["findings"] if f["check"] == "schema"]
    assert r.code == 1 and "orchesjob 1.1.0 was run on it since" in f["problem"]
    assert "strict_overrides" in f["problem"] or "schema_meta" in f["problem"]


def test_a_users_state_directory_does_not_flip_when_1_1_0_first_runs_there(v110, other_user):
    """A non-root user's job runs in ~/.local/state/orchesjob; then orchesjob 1.1.0 runs for that user from cron and
    creates /var/lib/orchesjob/orchesjob.db (a directory an administrator made for the user). The retry of the
    first job must still find it, not start it again in the other place."""
    uid, gid, base = other_user
    u = AsUser(uid, gid, base, v110)
    marker = u.home / "runs"
    first = check_ok(u.ours("start", "--run-key", "import", "--", *counting(marker, "sleep 300")))
    assert first["stdout_file"].startswith(str(u.home / ".local" / "state" / "orchesjob"))
    wait_until(lambda: runs(marker) == 1)
    state = u.var_lib / "orchesjob"
    state.mkdir(mode=0o700)
    os.chown(str(state), uid, gid)
    r = u.v110("start", "--run-key", "cron-thing", "--sync", "--", "true")
    assert r.code == 0 and r.json["stdout_file"].startswith("/var/lib/orchesjob/"), r
    again = check_ok(u.ours("start", "--run-key", "import", "--", *counting(marker)))
    assert again["existing"] is True and again["job_id"] == first["job_id"], again
    # no second copy: the key has one attempt (a copy runs only as a job of its own) and the command ran once
    assert [j["job_id"] for j in check_ok(u.ours("status", "--run-key", "import", "--all"))] == [first["job_id"]]
    assert runs(marker) == 1
    assert check_ok(u.ours("abort", "--run-key", "import", "--grace-seconds", "2"))["status"] == "ABORTED"
