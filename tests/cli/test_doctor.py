"""`doctor` on a healthy state directory and on directories broken in each way it checks, what `--fix` repairs and
what it leaves alone (another user's directory, a corrupt database, a lock held by another process)."""

import json
import os
import shutil
import sqlite3
import struct
import subprocess
import time
from pathlib import Path

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
    db_exec,
    kill_job_processes,
    popen_cli,
    run_cli,
)

DATA = Path(__file__).resolve().parents[1] / "data"


def db_row(home: Path, job_id: str) -> sqlite3.Row:
    c = sqlite3.connect(str(home / "orchesjob.db"))
    c.row_factory = sqlite3.Row
    try:
        return c.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    finally:
        c.close()


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


def test_doctor_reports_a_database_creation_a_kill_left_unfinished(home, run):
    """A first command killed between making the new database and linking it into place leaves its private file;
    doctor names it and says how to remove it, never while its creator may still be at work, and never deletes."""
    from tests.support.cli import stat_state, wait_until

    first = popen_cli(home, "start", "--run-key", "k", "--", "true", env={"ORCHESJOB_PAUSE_AT": "database-before-link"})
    try:
        wait_until(lambda: stat_state(first.pid) == "T", 30, what="the first command to stop before the link")
        left = sorted(p.name for p in home.iterdir() if p.name.startswith("orchesjob.db.new-%d-" % first.pid))
        assert len(left) == 1 and not (home / "orchesjob.db").exists(), sorted(os.listdir(home))
        code, report = doctor(run)  # its creator is alive (stopped): perhaps at work, not reported
        assert findings(report, "state_dir") == [], report
        first.kill()
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    code, report = doctor(run)
    (found,) = findings(report, "state_dir")
    assert code == 1 and found["items"] == left and "hold no jobs" in found["problem"] and not found["fixable"]
    assert found["action"].endswith(": cd %s && rm -f -- %s" % (home, left[0]))
    # the next command makes the database as if nothing had happened; the leftover stays until removed
    job = check_ok(run_cli(home, "start", "--run-key", "k", "--sync", "--", "true"))
    assert job["status"] == "SUCCEEDED" and (home / left[0]).exists()
    code, report = doctor(run, "--fix")
    assert code == 1 and [f["items"] for f in findings(report, "state_dir")] == [left] and (home / left[0]).exists()
    subprocess.run(["sh", "-c", found["action"].rsplit(": ", 1)[1]], check=True)  # the command it gives
    assert doctor(run)[0] == 0
    # a kill after the link leaves a second name of the database itself: that is no leftover without jobs (the
    # database's own check names its extra link, and the next command drops that name)
    second = home / ("orchesjob.db.new-%d-0123abcd" % first.pid)
    os.link(home / "orchesjob.db", second)
    code, report = doctor(run)
    assert code == 1 and not [f for f in findings(report, "state_dir") if "hold no jobs" in f["problem"]], report
    assert check_ok(run_cli(home, "status", "--run-key", "k"))["status"] == "SUCCEEDED" and not second.exists()
    assert doctor(run)[0] == 0
