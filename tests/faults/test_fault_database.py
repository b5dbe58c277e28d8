"""Database faults: long write transactions held by another process, corrupt and truncated database files, and
a full disk for logs (a file-size limit, and a tiny tmpfs where mounting is allowed).

The CLI runs as separate processes; the only things read directly are the SQLite file (read-only, to compare its
bytes and rows) and the documented layout of the state directory.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.faults.faultlib import (
    FULL,
    TERMINAL,
    Evidence,
    assert_contract,
    checkpoint,
    cli,
    contract_problems,
    history,
    job_argv,
    job_processes,
    ok,
    prints_raw,
    trials,
    wait_gone,
    wait_terminal,
    wait_until,
)
from tests.support.cli import REPO_ROOT, Result, cli_argv, cli_env, finish, popen_cli, run_cli
from tests.support.procs import processes_of_home

pytestmark = pytest.mark.timeout(900)

# A process that holds write transactions on the state database: BEGIN IMMEDIATE, hold, COMMIT, pause, again.
# It says "held" on stdout each time it has the lock, and stops at the next release once STOP exists.
HOLDER = r"""
import os, random, sqlite3, sys, time
db, stop, hold_min, hold_max, gap, seed = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:6]), sys.argv[6]
rnd = random.Random(seed)
while not (os.path.exists(db) and sqlite3.connect(db, timeout=60).execute("PRAGMA user_version").fetchone()[0]):
    time.sleep(0.01)
c = sqlite3.connect(db, timeout=600, isolation_level=None)
holds = 0
while not os.path.exists(stop):
    c.execute("BEGIN IMMEDIATE")
    holds += 1
    print("held", holds, flush=True)
    end = time.monotonic() + rnd.uniform(hold_min, hold_max)
    while time.monotonic() < end and not os.path.exists(stop):
        time.sleep(0.02)
    c.execute("COMMIT")
    time.sleep(rnd.uniform(0, gap))  # random jitter: a gap before the next hold
print("holds", holds, flush=True)
"""


class Holder:
    """The lock-holding process, started and stopped by the test (by its pid)."""

    def __init__(self, db: Path, tmp: Path, hold: tuple[float, float], gap: float, seed: str) -> None:
        self.stop_file = tmp / ("stop-holder-%d" % time.monotonic_ns())
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(db), str(self.stop_file), str(hold[0]), str(hold[1]), str(gap), seed],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def wait_held(self) -> None:
        assert self.proc.stdout is not None and self.proc.stderr is not None  # both are pipes
        line = self.proc.stdout.readline().decode()
        assert line.startswith("held"), "lock holder failed: %r %r" % (line, self.proc.stderr.read())

    def stop(self) -> str:
        self.stop_file.touch()
        try:
            out, err = self.proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        assert self.proc.returncode == 0, "lock holder failed: %s" % err.decode()
        return out.decode()


def _settle_all(home: Path, timeout: float = 300) -> None:
    """Wait until no job of the home is active (status --running settles dead ones)."""
    wait_until(
        lambda: ok(home, "status", "--running") == [], timeout=timeout, step=0.5, what="every job of %s to end" % home
    )


# ------------------------------------------------------------------------------------------------ lock contention
def test_concurrent_starts_while_another_process_holds_long_write_transactions(home: Path, tmp_path: Path, rng) -> None:
    """200 `start`s on distinct keys and 50 on one key, all at once, on a fresh state directory, while another
    process keeps taking the write lock for 1.5-3 s at a time, with ORCHESJOB_LOCK_TIMEOUT=1. Every caller gets
    the job or a clean lock_timeout (exit 5); no traceback; one execution per key; every answer for the shared
    key names the same job; a lock_timeout wrote nothing."""
    for rnd in range(trials(1, full=3)):
        h = home.parent / ("ojhome-%d" % rnd) if rnd else home
        marker = tmp_path / ("marker-%d" % rnd)
        locks = tmp_path / ("locks-%d" % rnd)
        locks.mkdir()
        gate = tmp_path / ("gate-%d" % rnd)
        env = {"ORCHESJOB_LOCK_TIMEOUT": "1"}
        holder = Holder(h / "orchesjob.db", tmp_path, (1.5, 3.0), 0.4, "%s-%d" % (rng.random(), rnd))
        calls: list[Any] = []
        try:
            order = ["d%03d" % i for i in range(200)] + ["shared"] * 50
            rng.shuffle(order)
            for key in order:
                cmd = job_argv(marker, locks / key, gate=gate if key == "shared" else None)
                calls.append((key, popen_cli(h, "start", "--run-key", key, "--", *cmd, env=env)))
            results = [(key, finish(p, 600)) for key, p in calls]
        finally:
            for _, p in calls:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            holds = holder.stop()
        gate.touch()
        codes: dict[int, int] = {}
        for key, r in results:
            assert_contract(r, "start --run-key %s under lock contention" % key)
            assert r.code in (0, 5), "start %s: exit %d %s %s" % (key, r.code, r.out, r.err)
            if r.code == 5:
                assert r.json["error"] == "lock_timeout", r.out
            codes[r.code] = codes.get(r.code, 0) + 1
        print("round %d: exit codes %s; lock holder: %s" % (rnd, codes, holds.strip().splitlines()[-1]))
        assert codes.get(5), "the lock holder never made a caller time out: the fault was not exercised"
        assert codes.get(0), "no caller ever got through"

        _settle_all(h)
        ev = Evidence(marker)
        assert not ev.overlaps()
        assert all(n == 1 for n in ev.executions().values()), ev.executions()
        by_key: dict[str, list[Result]] = {}
        for key, r in results:
            by_key.setdefault(key, []).append(r)
        for key, rs in by_key.items():
            answered = {r.json["job_id"] for r in rs if r.code == 0}
            jobs = history(h, key)
            assert len(answered) <= 1, "callers of %s got different jobs: %s" % (key, answered)
            if not answered:
                assert jobs == [], "%s: every caller timed out, yet jobs exist: %s" % (key, jobs)
                continue
            (job_id,) = answered
            assert [j["job_id"] for j in jobs] == [job_id], "%s: %s" % (key, [(j["job_id"], j["status"]) for j in jobs])
            assert jobs[0]["status"] == "SUCCEEDED", "%s: %s %s" % (key, jobs[0]["status"], jobs[0]["end_reason"])
            assert ev.executions()[job_id] == 1, "%s ran %d times" % (key, ev.executions()[job_id])
        assert sum(ev.executions().values()) == len([k for k, rs in by_key.items() if any(r.code == 0 for r in rs)])


def _gated_job(home: Path, key: str, tmp: Path, exit: int = 0) -> tuple[dict[str, Any], Path, Path]:
    gate = tmp / ("gate-" + key)
    marker = tmp / ("marker-" + key)
    job = ok(home, "start", "--run-key", key, "--", *job_argv(marker, tmp / ("lock-" + key), exit=exit, gate=gate))
    wait_until(lambda: Evidence(marker).begins(), timeout=60, what="job %s to begin" % key)
    return job, gate, marker


def test_reads_keep_answering_while_a_writer_holds_the_lock(home: Path, tmp_path: Path, rng) -> None:
    """While another process holds the write lock (indefinitely): status, status --all, status --running, wait and
    logs of finished and running jobs answer without waiting for the lock (ORCHESJOB_LOCK_TIMEOUT is 600 s, so a
    reader that queued for the lock would hang and fail here). A job that finishes meanwhile has its result shown
    from the result file and recorded once the lock is free. A start gives up cleanly with exit 5 and writes
    nothing."""
    done = ok(home, "start", "--sync", "--run-key", "done", "--", "sh", "-c", "echo finished; exit 4")
    running, running_gate, _ = _gated_job(home, "running", tmp_path)
    ending, ending_gate, ending_marker = _gated_job(home, "ending", tmp_path, exit=6)
    holder = Holder(home / "orchesjob.db", tmp_path, (3600, 3600), 0, "x")
    slow = {"ORCHESJOB_LOCK_TIMEOUT": "600"}
    try:
        holder.wait_held()
        for args in (
            ["status", "--job-id", done["job_id"]],
            ["status", "--run-key", "done", "--all"],
            ["status", "--run-key", "running"],
            ["status", "--running"],
            ["wait", "--job-id", running["job_id"], "--timeout", "1"],
            ["wait", "--job-id", done["job_id"], "--stdout-offset", "0"],
            ["logs", "--run-key", "done"],
            ["logs", "--run-key", "running", "--json"],
        ):
            r = cli(home, *args, env=slow, timeout=120)
            assert r.code == 0, (args, r)
        assert ok(home, "status", "--job-id", done["job_id"], env=slow)["exit_code"] == 4

        # a job that ends while the lock is held: its result waits in the file, and readers show it
        ending_gate.touch()
        wait_until(lambda: Evidence(ending_marker).ends(ending["job_id"]), timeout=60, what="the job to end")
        result_file = home / "logs" / (ending["job_id"] + ".result")
        wait_until(result_file.exists, timeout=60, what="the supervisor to leave the result in its file")
        shown = ok(home, "status", "--job-id", ending["job_id"], env={"ORCHESJOB_LOCK_TIMEOUT": "2"})
        assert (shown["status"], shown["exit_code"]) == ("FAILED", 6), shown

        # a start cannot decide without the lock: a clean exit 5, and nothing written
        r = cli(home, "start", "--run-key", "new-key", "--", "true", env={"ORCHESJOB_LOCK_TIMEOUT": "1"})
        assert (r.code, r.json["error"]) == (5, "lock_timeout"), r
    finally:
        holder.stop()
        running_gate.touch()
        ending_gate.touch()
    assert cli(home, "status", "--run-key", "new-key").code == 3, "a start that timed out on the lock left a job"
    final = wait_terminal(home, ending["job_id"])
    assert (final["status"], final["exit_code"]) == ("FAILED", 6), final
    wait_gone(result_file.exists, 60, "the result file to be applied and removed")
    assert wait_terminal(home, running["job_id"])["status"] == "SUCCEEDED"


def test_a_dead_job_is_reported_while_a_writer_holds_the_lock(home: Path, tmp_path: Path) -> None:
    """A job whose supervisor and command were killed (nothing alive, no result) while another process holds the
    write lock: `status` of it and `status --running` still answer (the job is LOST, whether or not that verdict
    can be stored yet), instead of failing because the verdict cannot be written now."""
    victim, _, marker = _gated_job(home, "victim", tmp_path)
    holder = Holder(home / "orchesjob.db", tmp_path, (3600, 3600), 0, "x")
    try:
        holder.wait_held()
        for pid in (victim["worker_pid"], victim["target_pid"]):
            os.kill(pid, signal.SIGKILL)
        wait_gone(lambda: job_processes(victim["job_id"], victim["target_pid"]), 60, "the victim to die")
        env = {"ORCHESJOB_LOCK_TIMEOUT": "2"}
        one = cli(home, "status", "--job-id", victim["job_id"], env=env)
        listing = cli(home, "status", "--running", env=env)
    finally:
        holder.stop()
    assert one.code == 0 and one.json["status"] == "LOST", (
        "status of a dead job while the database is locked: exit %d %s" % (one.code, one.out)
    )
    assert listing.code == 0 and listing.json == [], "status --running while the database is locked: exit %d %s" % (
        listing.code,
        listing.out,
    )
    assert ok(home, "status", "--job-id", victim["job_id"])["status"] == "LOST"


# ------------------------------------------------------------------------------------------- corrupt / truncated
def _populated_home(home: Path, tmp: Path) -> list[str]:
    keys = []
    for i, code in enumerate([0, 3, 0, 1]):
        key = "k%d" % i
        ok(home, "start", "--sync", "--run-key", key, "--", "sh", "-c", "echo out %d; exit %d" % (i, code))
        keys.append(key)
    ok(home, "start", "--sync", "--strict", "--run-key", "strict", "--", "true")
    ok(home, "unlock", "--run-key", "strict", "--reason", "fault test")
    keys.append("strict")
    checkpoint(home / "orchesjob.db")
    return keys


def _corrupt(data: bytes, rng) -> tuple[bytes, str]:
    page = 4096
    size = len(data)
    kind = rng.choice(
        ["truncate", "truncate-page", "truncate-header", "bytes", "header-bytes", "zero-page", "garbage-page", "magic"]
    )
    b = bytearray(data)
    if kind == "truncate":
        n = rng.randint(1, size - 1)
        return bytes(b[:n]), "%s to %d of %d bytes" % (kind, n, size)
    if kind == "truncate-page":
        n = page * rng.randint(1, max(1, size // page - 1))
        return bytes(b[:n]), "%s to %d of %d bytes" % (kind, n, size)
    if kind == "truncate-header":
        n = rng.randint(1, 99)
        return bytes(b[:n]), "%s to %d bytes" % (kind, n)
    if kind in ("bytes", "header-bytes"):
        top = 100 if kind == "header-bytes" else size
        spots = sorted(rng.randrange(top) for _ in range(rng.randint(1, 32)))
        for i in spots:
            b[i] = rng.randrange(256)
        return bytes(b), "%s at %s" % (kind, spots[:8])
    if kind in ("zero-page", "garbage-page"):
        p = rng.randrange(1, max(2, size // page))
        fill = bytes(page) if kind == "zero-page" else bytes(rng.randrange(256) for _ in range(page))
        b[p * page : (p + 1) * page] = fill
        return bytes(b), "%s %d" % (kind, p)
    b[0:16] = b"NotSQLite format"
    return bytes(b), kind


def _quiesce(home: Path) -> None:
    """Wait until no process of the home (a job an earlier command started, its supervisor) can still write."""
    wait_gone(lambda: processes_of_home(home), 120, "the jobs of %s to end" % home)


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def test_corrupt_and_truncated_databases_give_clear_errors_and_are_left_as_they_were(
    home: Path, tmp_path: Path, rng
) -> None:
    """A real database, then damaged at random (truncated anywhere, inside the header, at a page boundary; random
    bytes; a page zeroed or filled with garbage; the magic overwritten). Every command keeps the output contract
    (never a traceback or an "internal error"); every command that fails leaves the database file byte for byte
    as it was and launches nothing; a damaged header is always reported as corrupt_database naming the file."""
    _populated_home(home, tmp_path)
    pristine = (home / "orchesjob.db").read_bytes()
    some_job = history(home, "k0")[0]["job_id"]
    commands = [
        ["status", "--run-key", "k1"],
        ["status", "--running"],
        ["status", "--run-key", "k2", "--all"],
        ["status", "--job-id", some_job],
        ["logs", "--run-key", "k0"],
        ["logs", "--run-key", "k0", "--json"],
        ["wait", "--run-key", "k3", "--timeout", "1"],
        ["start", "--run-key", "k0", "--", "true"],
        ["start", "--run-key", "new", "--", "true"],
        ["start", "--strict", "--run-key", "strict", "--", "true"],
        ["start", "--reuse-success", "--run-key", "k2", "--", "true"],
        ["abort", "--run-key", "k1"],
        ["rerun", "--run-key", "k1"],
        ["unlock", "--run-key", "k3"],
        ["clean", "--all", "--dry-run"],
        ["clean", "--all"],
    ]
    kinds: dict[str, dict[int, int]] = {}
    violations: list[str] = []
    runs = 0
    for n in range(trials(12)):
        h = tmp_path / ("corrupt-%03d" % n)
        shutil.copytree(home, h)
        damaged, what = _corrupt(pristine, rng)
        db = h / "orchesjob.db"
        db.write_bytes(damaged)
        for extra in ("orchesjob.db-wal", "orchesjob.db-shm"):
            if (h / extra).exists():
                (h / extra).unlink()
        for args in rng.sample(commands, rng.randint(3, len(commands))):
            runs += 1
            _quiesce(h)
            before = _digest(db)
            logs_before = sorted(os.listdir(h / "logs"))
            r = run_cli(h, *args)
            ctx = "trial %d, %s, then orchesjob %s: exit %d %s" % (
                n,
                what,
                " ".join(args),
                r.code,
                r.out.strip().replace("\n", " ")[:400],
            )
            tally = kinds.setdefault(what.split()[0], {})
            tally[r.code] = tally.get(r.code, 0) + 1
            problems = contract_problems(r, raw_ok=prints_raw(args))
            if r.code != 0 and not problems:
                if _digest(db) != before:
                    problems.append("the failing command changed the database file")
                if args[0] in ("start", "rerun") and sorted(os.listdir(h / "logs")) != logs_before:
                    problems.append("the failing command launched a job")
                if r.code == 1 and (
                    r.json["error"] not in ("corrupt_database", "database") or str(db) not in r.json["message"]
                ):
                    problems.append("exit 1 that is not a database error naming the file")
            if (what == "magic" or what.startswith("truncate-header")) and not problems:
                if r.code != 1 or r.json["error"] != "corrupt_database":
                    problems.append("a damaged header was not reported as corrupt_database")
                elif _digest(db) != before:
                    problems.append("the command changed the database file")
            if r.code == 0 and args[0] == "start" and r.json and r.json.get("accepted"):
                # an undetected damage let it through: the job it started must still end
                final = _final_or_error(h, r.json["job_id"])
                if final is not None and final["status"] not in TERMINAL:
                    problems.append("the job never ended")
            for p in problems:
                violations.append("%s: %s" % (p, ctx))
        _kill_jobs(h)
    print("exit codes by damage (%d commands):" % runs, kinds)
    by_problem: dict[str, list[str]] = {}
    for v in violations:
        by_problem.setdefault(v.split(":")[0], []).append(v)
    assert not violations, "%d of %d commands on a damaged database broke a rule:\n%s" % (
        len(violations),
        runs,
        "\n".join("- %d x %s\n  e.g. %s" % (len(vs), k, vs[0]) for k, vs in by_problem.items()),
    )


GARBAGE = [
    ("text that is not UTF-8", "CAST(X'F1FF' AS TEXT)"),
    ("a blob", "X'00FF00'"),
    ("a word", "'bogus'"),
    ("a negative number", "-1"),
    ("a huge number", "9223372036854775807"),
    ("a float", "1e308"),
    ("NULL", "NULL"),
    ("an empty string", "''"),
]


def test_damaged_rows_give_clear_errors(home: Path, rng) -> None:
    """What the random damage above meets now and then, made systematic and independent of how the CLI encodes
    its rows: every column of a job row (read from the schema) set to each kind of garbage SQLite will store - text
    that is not UTF-8, a blob, a word, numbers at the edges, NULL, an empty string. Reading and writing commands
    must answer normally or with a clear error (never an internal error), and a failing one must leave the file
    as it was. CI tries a random sample of the combinations; the full run tries them all."""
    ok(home, "start", "--sync", "--run-key", "k", "--", "sh", "-c", "echo out")
    ok(home, "start", "--sync", "--strict", "--run-key", "s", "--", "true")
    db = home / "orchesjob.db"
    checkpoint(db)
    c = sqlite3.connect(str(db))
    columns = [row[1] for row in c.execute("PRAGMA table_info(jobs)")]
    c.close()
    combos = [(col, g) for col in columns for g in GARBAGE]
    if not FULL:
        combos = rng.sample(combos, min(len(combos), 24))
    commands = [
        ["status", "--run-key", "k"],
        ["status", "--running"],
        ["status", "--run-key", "k", "--all"],
        ["logs", "--run-key", "k", "--json"],
        ["start", "--run-key", "k", "--", "true"],
        ["rerun", "--run-key", "k"],
        ["clean", "--all", "--dry-run"],
    ]
    violations: list[str] = []
    tried = 0
    for n, (column, (what, value)) in enumerate(combos):
        h = home.parent / ("rows-%03d" % n)
        shutil.copytree(home, h)
        hdb = h / "orchesjob.db"
        c = sqlite3.connect(str(hdb))
        try:
            c.execute("UPDATE jobs SET %s = %s WHERE run_key = 'k'" % (column, value))
            c.commit()
        except sqlite3.DatabaseError:
            continue  # a constraint refuses it: SQLite would not store such a row
        finally:
            c.close()
        checkpoint(hdb)
        for args in commands:
            tried += 1
            _quiesce(h)
            before = _digest(hdb)
            r = run_cli(h, *args)
            problems = contract_problems(r, raw_ok=prints_raw(args))
            if r.code != 0 and not problems and _digest(hdb) != before:
                problems.append("the failing command changed the database file")
            for p in problems:
                violations.append(
                    "%s: column %s = %s, then orchesjob %s: exit %d %s"
                    % (p, column, what, " ".join(args), r.code, r.out.strip().replace("\n", " ")[:300])
                )
        _kill_jobs(h)
    print("damaged rows: %d combinations, %d commands, %d violations" % (len(combos), tried, len(violations)))
    for v in violations:
        print("  " + v)
    by_problem: dict[str, list[str]] = {}
    for v in violations:
        by_problem.setdefault(v.split(":")[0], []).append(v)
    assert not violations, "%d of %d commands on damaged rows broke a rule:\n%s" % (
        len(violations),
        tried,
        "\n".join("- %d x %s\n  e.g. %s" % (len(vs), k, "\n  e.g. ".join(vs[:3])) for k, vs in by_problem.items()),
    )


def _final_or_error(home: Path, job_id: str) -> dict[str, Any] | None:
    """The job once terminal, or None when the damaged database cannot tell (a clean error is fine there)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = run_cli(home, "wait", "--job-id", job_id, "--timeout", "5")
        if r.code != 0:
            return None
        if r.json["status"] in TERMINAL:
            return r.json
    raise AssertionError("job %s never ended on a damaged database" % job_id)


def _kill_jobs(home: Path) -> None:
    for pid in processes_of_home(home):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------------- full disk
def _limited(limit: int):
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_file_size_limit_while_the_job_writes_its_log(home: Path, tmp_path: Path, rng) -> None:
    """`start` (and so its supervisor and the command) under RLIMIT_FSIZE, with a command that writes more or less
    than the limit to its stdout. A Python command sees EFBIG and exits with its own code; a shell command's
    writer is killed by SIGXFSZ. The database is small, but its WAL can reach the limit too, so sometimes the
    database itself cannot be written. Whatever happens: every CLI answer keeps the contract, the log never exceeds
    the limit, and once read without the limit a command that began has its real end recorded, never LOST."""
    seen: dict[str, int] = {}
    for n in range(trials(8)):
        h = tmp_path / ("fsize-%03d" % n)
        marker = tmp_path / ("marker-%03d" % n)
        limit = rng.choice([48 << 10, 128 << 10, 1 << 20])
        amount = int(limit * rng.choice([0.25, 2, 8]))
        shell = rng.random() < 0.4
        if shell:
            cmd = [
                "sh",
                "-c",
                'echo "begin $ORCHESJOB_JOB_ID 0 alone" >>"$1"; head -c "$2" /dev/zero',
                "sh",
                str(marker),
                str(amount),
            ]
        else:
            cmd = job_argv(marker, tmp_path / ("lock-%03d" % n), exit=2, write_bytes=amount)
        p = subprocess.Popen(
            cli_argv("start", "--run-key", "big", "--", *cmd),
            env=cli_env(h),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_limited(limit),
        )
        r = assert_contract(finish(p, 300), "start under RLIMIT_FSIZE=%d" % limit)
        ctx = "limit %d, writes %d, %s: start exit %d %s" % (limit, amount, "sh" if shell else "python", r.code, r.out)
        if r.code != 0:
            assert r.json["error"] in ("database", "os_error", "state_dir"), ctx
            jobs = history(h, "big") if (h / "orchesjob.db").exists() else []
            assert not jobs or all(not Evidence(marker).begins(j["job_id"]) for j in jobs), ctx
            seen["start-refused"] = seen.get("start-refused", 0) + 1
            continue
        job = r.json
        wait_gone(lambda: job_processes(job["job_id"], job.get("target_pid")), 120, "the job to end: " + ctx)
        final = wait_terminal(h, job["job_id"])
        ev = Evidence(marker)
        ctx += "\nfinal %s %s %s %s\nevidence %s" % (
            final["status"],
            final["exit_code"],
            final["signal_name"],
            final["end_reason"],
            ev.lines,
        )
        size = os.path.getsize(final["stdout_file"]) if os.path.exists(final["stdout_file"]) else 0
        assert size <= limit, ctx
        if not ev.begins(job["job_id"]):
            assert final["status"] == "LOST", ctx
            seen["never-launched"] = seen.get("never-launched", 0) + 1
            continue
        assert final["status"] in ("SUCCEEDED", "FAILED"), "a command that ran lost its result: " + ctx
        if shell:
            if amount <= limit:
                assert final["exit_code"] == 0, ctx
            else:
                assert final["signal_name"] == "SIGXFSZ" or final["exit_code"] == 128 + signal.SIGXFSZ, ctx
        else:
            assert [final["exit_code"]] == ev.ends(job["job_id"]), ctx
            assert final["exit_code"] == (2 if amount <= limit else 3), ctx
        key = "%s-%s" % ("sh" if shell else "py", "fits" if amount <= limit else "too-big")
        seen[key] = seen.get(key, 0) + 1
    print("outcomes:", seen)


@pytest.fixture
def tiny_logs_fs(home: Path):
    """The state directory with logs/ on a 128 KiB tmpfs (needs mount rights; skipped where there are none)."""
    logs = home / "logs"
    logs.mkdir(parents=True)
    os.chmod(home, 0o700)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128k,mode=0700", "tmpfs", str(logs)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(
            "cannot mount a tmpfs here (%s); the RLIMIT_FSIZE test covers a full disk for logs" % r.stderr.strip()
        )
    try:
        yield logs
    finally:
        _kill_jobs(home)
        for _ in range(50):
            if subprocess.run(["umount", str(logs)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(logs)], capture_output=True)


def test_full_disk_for_logs_loses_no_result(home: Path, tmp_path: Path, tiny_logs_fs: Path) -> None:
    """logs/ on a full 128 KiB file system: a command that writes 1 MiB sees ENOSPC and exits with its own code;
    later jobs cannot write a byte of output, and the supervisor cannot write its result file, yet every result
    reaches the database, also for a job that ends while another process holds the database lock."""
    marker = tmp_path / "marker"
    lock = tmp_path / "lock"
    big = ok(home, "start", "--run-key", "big", "--", *job_argv(marker, lock, exit=4, write_bytes=1 << 20))
    final = wait_terminal(home, big["job_id"])
    ev = Evidence(marker)
    assert any(ln[0] == "write" and ln[2] == "write-error" for ln in ev.lines), ev.lines
    assert (final["status"], final["exit_code"]) == ("FAILED", 5), final

    after = ok(home, "start", "--sync", "--run-key", "after", "--", "sh", "-c", "echo no room; exit 7")
    assert (after["status"], after["exit_code"]) == ("FAILED", 7), after
    quiet = ok(home, "start", "--sync", "--run-key", "quiet", "--", *job_argv(marker, lock, exit=0))
    assert (quiet["status"], quiet["exit_code"]) == ("SUCCEEDED", 0), quiet

    gate = tmp_path / "gate"
    late = ok(home, "start", "--run-key", "late", "--", *job_argv(marker, lock, exit=9, gate=gate))
    holder = Holder(home / "orchesjob.db", tmp_path, (3600, 3600), 0, "x")
    try:
        holder.wait_held()
        gate.touch()
        wait_until(lambda: Evidence(marker).ends(late["job_id"]), timeout=60, what="the late job to end")
        # the supervisor now fails to write the result file and waits for the lock (nothing outside shows that
        # state; if it is not there yet, the status below still meets the held lock, and accepts either answer)
        time.sleep(0.5)
        shown = cli(home, "status", "--job-id", late["job_id"], env={"ORCHESJOB_LOCK_TIMEOUT": "1"})
        assert shown.code in (0, 5), shown
    finally:
        holder.stop()
    final = wait_terminal(home, late["job_id"])
    assert (final["status"], final["exit_code"]) == ("FAILED", 9), final

    r = cli(home, "logs", "--run-key", "big", "--json")
    assert r.code == 0 and r.json["size"] <= 128 << 10, r.out[:300]
    cleaned = ok(home, "clean", "--all")
    assert cleaned["deleted"] == 4 and cleaned["errors"] == 0, cleaned
    again = ok(home, "start", "--sync", "--run-key", "again", "--", "sh", "-c", "echo room again")
    assert again["status"] == "SUCCEEDED"
    assert ok(home, "logs", "--run-key", "again", "--json")["data"] == "room again\n"
