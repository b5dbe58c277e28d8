"""Races around "never twice, never lost", black-box, as random explorers: readers racing a job's launch and end
(some stopped right before their LOST verdict), readers and `start`s from a second pid namespace, a full state
directory, and `abort` at random moments around the launch.

The races are steered with the CLI's pause points (ORCHESJOB_PAUSE_AT=NAME makes a CLI process, or a supervisor,
which inherits the variable, stop itself with SIGSTOP at that step: `supervisor-before-record`,
`supervisor-before-launch`, `lost-verdict`); the test resumes them with SIGCONT in a random order, after random
actions. Every job runs tests/faults/fault_job.py: its marker file says which jobs physically began and ended (and
with which exit code), and its flock turns "a second copy ran while something of the first was alive" into an
OVERLAP line. Every CLI answer is checked with the output contract (faultlib.assert_contract).

What "anything of a job" means here: its command and every process of its tree (children, daemons), the processes
that hold the flock. A supervisor that never recorded itself in the job row (stopped before its record) is not
part of it: the job may be declared LOST and replaced meanwhile, and such a supervisor must then launch nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.faults.faultlib import (
    ACTIVE,
    TERMINAL,
    Evidence,
    assert_contract,
    cli,
    history,
    job_argv,
    job_processes,
    ok,
    trials,
    wait_terminal,
)
from tests.support.cli import (
    REPO_ROOT,
    Result,
    cli_argv,
    cli_env,
    finish,
    parse_json,
    pid_alive,
    popen_cli,
    stat_state,
    wait_until,
    wait_until_waiting_on_a_job,
)
from tests.support.guards import unavailable
from tests.support.procs import processes_of_home, stopped_supervisor, supervisor_pids

pytestmark = pytest.mark.timeout(900)

UNSHARE = shutil.which("unshare") or ""  # "" when util-linux is missing
FULL_DISK_TRIAL = str(Path(__file__).resolve().with_name("full_disk_trial.py"))
LINGER = 1.0  # how long children and daemons of a job live when nobody stops them
SETTLE = 90.0  # generous: the machine may be busy with other suites
PAUSES = ("supervisor-before-record", "supervisor-before-launch")


# -- helpers --------------------------------------------------------------------------------------------------------
def _kill(pid: int, sig: int = signal.SIGKILL) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def _stopped(pid: int) -> bool:
    return stat_state(pid) == "T"


def _ours(home: Path, pid: int | None) -> bool:
    return bool(pid) and pid in processes_of_home(home)


def _ps(pids) -> str:
    out = []
    for pid in sorted(pids):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                out.append(
                    "%d[%s] %s" % (pid, stat_state(pid), f.read().replace(b"\0", b" ").decode(errors="replace")[:160])
                )
        except OSError:
            out.append("%d (gone)" % pid)
    return "; ".join(out)


def _stored_status(home: Path, job_id: str) -> str | None:
    """The job's status as the database file holds it (read-only, like _job_ids)."""
    c = sqlite3.connect("file:%s?mode=ro" % (home / "orchesjob.db"), uri=True, timeout=30)
    try:
        row = c.execute("SELECT status FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    finally:
        c.close()
    return None if row is None else str(row[0])


def _job_ids(home: Path, key: str) -> list[str]:
    """The key's job ids, read from the database file itself: a CLI read could settle (and so change) the job."""
    db = home / "orchesjob.db"
    if not db.exists():
        return []
    c = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=30)
    try:
        return [r[0] for r in c.execute("SELECT job_id FROM jobs WHERE run_key = ? ORDER BY attempt_no", (key,))]
    finally:
        c.close()


def _attempts(home: Path, key: str) -> dict[str, int]:
    """job id -> attempt number of the key's jobs, from the database file (a job a clean deletes later stays known)."""
    db = home / "orchesjob.db"
    if not db.exists():
        return {}
    c = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=30)
    try:
        return dict(c.execute("SELECT job_id, attempt_no FROM jobs WHERE run_key = ?", (key,)).fetchall())
    finally:
        c.close()


def _jobs_in(value: Any) -> list[dict[str, Any]]:
    """The job objects of an answer: one job, a list of them, or the items of a clean."""
    if isinstance(value, list):
        return [j for j in value if isinstance(j, dict) and "job_id" in j]
    if isinstance(value, dict) and "job_id" in value:
        return [value]
    return []


def _settled_home(home: Path, what: str) -> None:
    """Between trials: nothing carrying this state directory is alive (supervisors recorded and left)."""
    try:
        wait_until(lambda: not processes_of_home(home), 60, step=0.05, what=what)
    except AssertionError:
        raise AssertionError("%s; still alive: %s" % (what, _ps(processes_of_home(home)))) from None


class LockHolder(threading.Thread):
    """Another writer: holds the database's write lock (BEGIN IMMEDIATE) for `seconds`, from a thread of the test."""

    def __init__(self, db: Path, seconds: float) -> None:
        super().__init__(daemon=True)
        self.db, self.seconds = db, seconds
        self.held = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        try:
            c = sqlite3.connect(str(self.db), timeout=1.0, isolation_level=None)
        except sqlite3.Error:
            self.done.set()
            return
        try:
            c.execute("BEGIN IMMEDIATE")
            self.held.set()
            time.sleep(self.seconds)  # the scenario: the lock stays taken this long
            c.execute("ROLLBACK")
        except sqlite3.OperationalError:
            pass  # someone else holds it (a reader stopped inside its transaction): nothing to add
        finally:
            c.close()
            self.done.set()


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        unavailable("%s needs root (unshare and mount)" % what)
    if not UNSHARE:
        unavailable("unshare (util-linux) is needed for %s" % what)


# ===================================================================================================================
# 1. racing readers
# ===================================================================================================================
READERS = ("status", "status --running", "wait", "start", "clean --all")
ACTIONS = (
    "cont-supervisor",
    "kill-supervisor",
    "end-command",
    "resume-reader",
    "resume-reader",
    "stop-reader",
    "hold-lock",
    "sleep",
)


class Reader:
    """One reader process of a race: `status`, `status --running`, `wait`, `start` of the key, `clean --all` (or
    the job's own `start`, kind "caller", while it waits for a supervisor stopped at its pause point)."""

    def __init__(
        self, trial: RaceTrial, kind: str, job_id: str, pause: bool, rng, proc: subprocess.Popen | None = None
    ) -> None:
        self.kind, self.pause, self.job_id = kind, pause, job_id
        self.result: Result | None = None
        if proc is not None:
            self.args, self.proc = ["start"], proc
            return
        if kind == "status":
            args = ["status", "--job-id", job_id]
        elif kind == "status --running":
            args = ["status", "--running"]
        elif kind == "wait":
            args = ["wait", "--job-id", job_id, "--timeout", "%g" % rng.choice([0.3, 1, 2])]
        elif kind == "start":
            args = ["start", "--run-key", trial.key] + (["--reuse-success"] if rng.random() < 0.4 else [])
            args += ["--"] + trial.command
        else:
            args = ["clean", "--all"]
        self.args = args
        self.proc = popen_cli(trial.home, *args, env={"ORCHESJOB_PAUSE_AT": "lost-verdict"} if pause else None)

    def __repr__(self) -> str:
        return "%s%s(pid %d)" % (self.kind, " [paused at lost-verdict]" if self.pause else "", self.proc.pid)


class RaceTrial:
    def __init__(self, home: Path, tmp: Path, name: str, rng) -> None:
        self.home, self.key = home, name
        self.sup: int | None = None  # the first job's supervisor, known before it may have recorded itself
        d = tmp / name
        d.mkdir()
        self.marker, self.lock, self.gate = d / "marker", d / "lock", d / "gate"
        self.exit = rng.choice([0, 0, 3])
        self.children, self.daemons = rng.choice([(0, 0), (0, 0), (1, 0), (0, 1)])
        self.notes: list[str] = []
        self.attempt: dict[str, int] = {}
        self.deleted: dict[str, str] = {}  # job id -> its status when a clean deleted it
        self.lost_unbegun: set[str] = set()  # answered LOST before its command began: it must never begin
        self.killed: set[str] = set()  # jobs whose supervisor the test killed
        self.readers: list[Reader] = []
        self.not_found: list[Reader] = []  # answered not_found: a clean must have deleted their job

    @property
    def command(self) -> list[str]:
        return job_argv(
            self.marker,
            self.lock,
            exit=self.exit,
            children=self.children,
            daemons=self.daemons,
            linger=LINGER,
            gate=self.gate,
        )

    def describe(self) -> str:
        return "trial %s: exit %d children %d daemons %d; %s; evidence:\n%s" % (
            self.key,
            self.exit,
            self.children,
            self.daemons,
            "; ".join(self.notes),
            "\n".join(" ".join(x) for x in Evidence(self.marker).lines),
        )

    def check_view(self, job: dict[str, Any], who: str) -> None:
        """What one answer says about one job of the key must be true now."""
        jid = job["job_id"]
        self.attempt[jid] = job["attempt_no"]
        ev = Evidence(self.marker)
        ctx = "%s answered %s for job %s\n%s" % (who, job["status"], jid[:8], self.describe())
        if job["status"] == "LOST":
            began = bool(ev.begins(jid))
            left = job_processes(jid, job.get("target_pid"))
            assert not left, "LOST while processes of the job live: %s\n%s" % (_ps(left), ctx)
            if not began:
                self.lost_unbegun.add(jid)
        elif job["status"] in ("SUCCEEDED", "FAILED"):
            assert ev.begins(jid), "a result for a command that never began\n" + ctx
            assert job["exit_code"] == self.exit and ev.ends(jid) == [self.exit], (
                "exit code %r recorded, the command ended with %r\n%s" % (job["exit_code"], ev.ends(jid), ctx)
            )
            assert (job["status"] == "SUCCEEDED") == (self.exit == 0), ctx

    def collect(self) -> None:
        """Check each reader's answer as soon as it has exited: what it says must be true at that moment."""
        for reader in self.readers:
            if reader.result is None and reader.proc.poll() is not None:
                reader.result = finish(reader.proc)
                self.check_reader(reader)

    def idle(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self.collect()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.01, left))

    def check_reader(self, reader: Reader) -> None:
        r = reader.result
        assert r is not None
        assert_contract(r, "%r" % reader)
        allowed = {
            "status": (0, 3),
            "wait": (0, 3),
            "status --running": (0,),
            "start": (0, 5),
            "clean --all": (0, 5),
            "caller": (0,),
        }
        assert r.code in allowed[reader.kind], "%r: exit %d\n%s\n%s\n%s" % (
            reader,
            r.code,
            r.out,
            r.err,
            self.describe(),
        )
        if r.code == 3:
            self.not_found.append(reader)  # checked at the end: the clean that deleted it may not have answered yet
        if r.code != 0:
            self.notes.append("%r -> exit %d" % (reader, r.code))
            return
        if reader.kind == "clean --all":
            for item in r.json["items"]:
                if item["run_key"] != self.key:
                    continue
                self.deleted[item["job_id"]] = item["status"]
                left = job_processes(item["job_id"])
                assert not left, "clean deleted job %s while processes of it live: %s\n%s" % (
                    item["job_id"][:8],
                    _ps(left),
                    self.describe(),
                )
            self.notes.append(
                "%r -> deleted %s, skipped %s"
                % (
                    reader,
                    [(i["job_id"][:8], i["status"]) for i in r.json["items"] if i["run_key"] == self.key],
                    [(s["job_id"][:8], s["status"]) for s in r.json["skipped"] if s["run_key"] == self.key],
                )
            )
            return
        views = [j for j in _jobs_in(r.json) if j["run_key"] == self.key]
        for j in views:
            self.check_view(j, repr(reader))
        if reader.kind in ("start", "caller"):
            j = r.json
            self.notes.append("%r -> %s %s accepted=%s" % (reader, j["job_id"][:8], j["status"], j["accepted"]))
        else:
            self.notes.append("%r -> %s" % (reader, [(j["job_id"][:8], j["status"]) for j in views]))

    def settle_and_check(self) -> list[dict[str, Any]]:
        deadline = time.monotonic() + SETTLE
        while True:
            jobs = history(self.home, self.key)
            active = [j for j in jobs if j["status"] not in TERMINAL]
            if not active:
                break
            # the supervisor resumed last may not have recorded its pid yet: it is looked for by the pid we know
            if not _ours(self.home, self.sup) and not any(
                job_processes(j["job_id"], j.get("target_pid")) or (j.get("worker_pid") and pid_alive(j["worker_pid"]))
                for j in active
            ):
                jobs = history(self.home, self.key)  # everything is dead: this reader must settle them
                break
            assert time.monotonic() < deadline, "jobs still active after %ss: %s" % (SETTLE, self.describe())
            time.sleep(0.1)
        ev = Evidence(self.marker)
        ctx = (
            self.describe()
            + "\njobs: "
            + repr([(j["job_id"][:8], j["status"], j["exit_code"]) for j in jobs])
            + "\ndeleted by clean: "
            + repr({k[:8]: v for k, v in self.deleted.items()})
        )
        assert not ev.overlaps(), "a second copy ran while something of the first was alive\n" + ctx
        for j in jobs:
            self.attempt[j["job_id"]] = j["attempt_no"]
        known = {j["job_id"] for j in jobs} | set(self.deleted)
        assert set(ev.executions()) <= known, "a command ran for a job the database does not know\n" + ctx
        order = [self.attempt[ln[1]] for ln in ev.begins() if ln[1] in self.attempt]
        assert order == sorted(order) and len(set(order)) == len(order), (
            "executions out of attempt order (an older job began after a newer one was accepted)\n" + ctx
        )
        for reader in self.not_found:
            assert reader.job_id in self.deleted, "%r: not found, but no clean deleted its job\n%s" % (reader, ctx)
        for jid in self.lost_unbegun:
            assert not ev.begins(jid), "job %s was answered LOST before it began, then began\n%s" % (jid[:8], ctx)
        for jid, st in self.deleted.items():
            assert st in TERMINAL, ctx
            if st == "LOST":
                assert not ev.begins(jid) or jid in self.killed, ctx
        for job in jobs:
            jid = job["job_id"]
            begins = ev.begins(jid)
            assert len(begins) <= 1, "job %s ran %d times\n%s" % (jid, len(begins), ctx)
            assert job["status"] in TERMINAL, "job %s is %s with nothing of it alive\n%s" % (jid, job["status"], ctx)
            if job["status"] in ("SUCCEEDED", "FAILED"):
                self.check_view(job, "the final status")
            elif job["status"] == "LOST":
                assert not begins or jid in self.killed, (
                    "job %s is LOST although its supervisor was never touched and its command ran\n%s" % (jid, ctx)
                )
                result_file = Path(job["stdout_file"][: -len(".stdout")] + ".result")
                assert not result_file.exists(), "job %s is LOST but has a result file\n%s" % (jid, ctx)
                assert not job_processes(jid, job.get("target_pid")), ctx
            else:
                raise AssertionError("unexpected status %s\n%s" % (job["status"], ctx))
        return jobs


def _wait_reader_settles(trial: RaceTrial, reader: Reader, timeout: float) -> None:
    """Until the reader stopped at its pause point or exited (or `timeout` passed: a `wait` may still poll)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reader.proc.poll() is not None or _stopped(reader.proc.pid):
            return
        trial.idle(0.01)


def test_racing_readers_around_a_job_at_random_stages(home: Path, tmp_path: Path, rng) -> None:
    """A job at a random stage (STARTING with its caller killed, its supervisor stopped at a random pause point,
    RUNNING, just ended) and 1-4 readers (`status`, `status --running`, `wait`, `start` of the key, `clean --all`),
    some stopped right before their LOST verdict, interleaved with random actions (SIGCONT or SIGKILL of the
    supervisor, the command ends, a reader is stopped with SIGSTOP wherever it is, a stopped reader resumes, another
    writer holds the database lock for 0.5-3.5 s), then everything resumed in a random order.

    Never two executions of the key at once (flock), never an older job's command after a newer job was accepted,
    never a LOST answer while processes of the job live, never a command that begins after it was answered LOST; a
    job ends LOST only if its command never began, or its supervisor was killed, nothing of it is alive and it has
    no result; SUCCEEDED/FAILED carry the command's real exit code."""
    outcomes: dict[str, int] = {}
    paused_readers = 0
    for n in range(trials(16)):
        t = RaceTrial(home, tmp_path, "race-%03d" % n, rng)
        stage = rng.choice(["caller-killed", "paused", "running", "just-ended"])
        pause = rng.choice(PAUSES) if stage in ("caller-killed", "paused") else None
        caller = popen_cli(
            home,
            "start",
            "--run-key",
            t.key,
            "--start-timeout",
            "0.3",
            "--",
            *t.command,
            env={"ORCHESJOB_PAUSE_AT": pause} if pause else None,
        )
        if pause:
            sup = stopped_supervisor(home, caller.pid)
            first = _job_ids(home, t.key)[0]
            if stage == "caller-killed":
                caller.kill()
                caller.wait()
            else:  # it waits for its supervisor: its answer is checked when it comes, like a reader's
                t.readers.append(Reader(t, "caller", first, False, rng, proc=caller))
        else:
            caller_result = assert_contract(finish(caller), "start")
            assert caller_result.code == 0, caller_result
            first, sup = caller_result.json["job_id"], caller_result.json["worker_pid"]
            assert caller_result.json["status"] == "RUNNING", caller_result
            if stage == "just-ended":
                t.gate.touch()
                wait_until(
                    lambda t=t, first=first: Evidence(t.marker).ends(first), 30, step=0.005, what="the command to end"
                )
                time.sleep(rng.uniform(0.0, 0.03))  # random jitter: a little after the end, or not
        t.sup = sup
        t.notes.append("stage %s%s, supervisor %d" % (stage, " at %s" % pause if pause else "", sup))
        sup_state = "stopped" if pause else "running"
        holder: LockHolder | None = None

        steps = ["reader"] * rng.randint(1, 4) + [rng.choice(ACTIONS) for _ in range(rng.randint(1, 3))]
        rng.shuffle(steps)
        for step in steps:
            if step == "reader":
                reader = Reader(t, rng.choice(READERS), first, rng.random() < 0.6, rng)
                t.readers.append(reader)
                paused_readers += reader.pause
                t.notes.append("launch %r" % reader)
                if rng.random() < 0.8:
                    _wait_reader_settles(t, reader, 1.5)
            elif step == "cont-supervisor" and sup_state == "stopped":
                _kill(sup, signal.SIGCONT)
                sup_state = "running"
                t.notes.append("SIGCONT supervisor")
            elif step == "kill-supervisor" and sup_state != "killed" and _ours(home, sup):
                _kill(sup)
                t.killed.add(first)
                sup_state = "killed"
                t.notes.append("SIGKILL supervisor")
            elif step == "end-command" and not t.gate.exists():
                t.gate.touch()
                t.notes.append("the command may end")
            elif step == "stop-reader":  # a reader stopped from outside, at whatever step it is
                running = [r for r in t.readers if r.proc.poll() is None and not _stopped(r.proc.pid)]
                if running:
                    r = rng.choice(running)
                    _kill(r.proc.pid, signal.SIGSTOP)
                    t.notes.append("SIGSTOP %r" % r)
            elif step == "hold-lock" and (holder is None or holder.done.is_set()):
                stopped = [r for r in t.readers if r.proc.poll() is None and _stopped(r.proc.pid)]
                meet = bool(stopped) and rng.random() < 0.5  # resume a reader: its verdict meets the busy lock
                seconds = rng.uniform(2.2, 3.5) if meet else rng.uniform(0.5, 3.5)  # past a reader's 2 s, or not
                holder = LockHolder(home / "orchesjob.db", seconds)
                holder.start()
                holder.held.wait(1.5)
                t.notes.append(
                    "another writer holds the lock for %.1fs%s"
                    % (holder.seconds, "" if holder.held.is_set() else " (could not take it)")
                )
                if meet:
                    r = rng.choice(stopped)
                    _kill(r.proc.pid, signal.SIGCONT)
                    t.notes.append("resume %r" % r)
            elif step == "resume-reader":
                stopped = [r for r in t.readers if r.proc.poll() is None and _stopped(r.proc.pid)]
                if stopped:
                    r = rng.choice(stopped)
                    _kill(r.proc.pid, signal.SIGCONT)
                    t.notes.append("resume %r" % r)
            t.idle(rng.uniform(0.0, 0.2))
            t.attempt.update(_attempts(home, t.key))

        # the end, in a random order: the supervisor resumes, the stopped readers resume, the command may end
        last: list[Any] = ["gate"] + [r for r in t.readers if r.proc.poll() is None and _stopped(r.proc.pid)]
        if sup_state == "stopped":
            last.append("supervisor")
        rng.shuffle(last)
        for what in last:
            if what == "gate":
                t.gate.touch()
            elif what == "supervisor":
                _kill(sup, signal.SIGCONT)
            else:
                _kill(what.proc.pid, signal.SIGCONT)
            t.idle(rng.uniform(0.0, 0.1))
        t.notes.append(
            "end order: %s" % ["gate" if w == "gate" else "supervisor" if w == "supervisor" else repr(w) for w in last]
        )
        deadline = time.monotonic() + 120
        while any(r.proc.poll() is None for r in t.readers):
            for r in t.readers:  # a `wait` polls on and may stop again at its verdict
                if r.proc.poll() is None and _stopped(r.proc.pid):
                    _kill(r.proc.pid, signal.SIGCONT)
            assert time.monotonic() < deadline, "readers did not finish: %r\n%s" % (t.readers, t.describe())
            t.idle(0.02)
        t.collect()
        if holder is not None:
            holder.join()
        jobs = t.settle_and_check()
        _settled_home(home, "everything of trial %s to end" % t.key)
        key = "%s%s:%s" % (
            stage,
            "@" + pause[len("supervisor-") :] if pause else "",
            "+".join(j["status"] for j in reversed(jobs)),
        )
        outcomes[key] = outcomes.get(key, 0) + 1
    print("readers stopped at their verdict: %d" % paused_readers)
    print("outcomes:", outcomes)


@pytest.mark.parametrize("waiter", ["wait", "start --sync"])
def test_a_waiter_whose_job_is_cleaned_meanwhile_answers_cleanly(home: Path, tmp_path: Path, waiter: str) -> None:
    """Deterministic (a window the explorer's stop-reader action can land in): a `wait`, or a `start --sync`,
    stopped while its job ends, and a `clean --all` that deletes the finished job before the waiter looks again.
    The waiter's answer keeps the contract (the job as it ended, or not_found), never an internal error."""
    marker, lock, gate = tmp_path / "marker", tmp_path / "lock", tmp_path / "gate"
    command = job_argv(marker, lock, gate=gate)
    if waiter == "wait":
        ok(home, "start", "--run-key", "gone", "--", *command)
        proc = popen_cli(home, "wait", "--run-key", "gone", "--timeout", "60")
    else:
        proc = popen_cli(home, "start", "--run-key", "gone", "--sync", "--", *command)
    wait_until(lambda: Evidence(marker).begins(), 30, what="the command to begin")
    if waiter == "wait":  # the waiter is in its loop, on the job's supervisor
        wait_until_waiting_on_a_job(proc.pid, what="the waiter")
    # (start --sync launched the job itself: it has been waiting on its supervisor since before the command began)
    os.kill(proc.pid, signal.SIGSTOP)
    gate.touch()

    def cleaned() -> bool:
        return cli(home, "clean", "--all").json["deleted"] == 1  # skipped until its supervisor has left

    wait_until(cleaned, 30, step=0.1, what="clean to delete the finished job")
    os.kill(proc.pid, signal.SIGCONT)
    r = assert_contract(finish(proc), "%s whose job was deleted meanwhile" % waiter)
    assert r.code in (0, 3), r
    if r.code == 0:
        assert r.json["status"] == "SUCCEEDED" and r.json["exit_code"] == 0, r
    assert [ln[0] for ln in Evidence(marker).lines] == ["begin", "end"]


@pytest.mark.parametrize("when", ["launched-before-the-lock", "launches-after-the-lock"])
def test_a_reader_never_reaches_a_lost_verdict_while_the_supervisor_lives(
    home: Path, tmp_path: Path, when: str
) -> None:
    """Deterministic (what the explorer's hold-lock action provokes): the caller is killed while its supervisor is
    stopped before its record, and another writer holds the database lock past a reader's short wait, taken after
    the supervisor recorded itself and launched the command, or before it could (it launches once the lock is free).
    The supervisor holds the job's lock all along (inherited from the caller): a `status` meanwhile finds the job
    alive and never stops at its `lost-verdict` pause; it answers the job as active, and the command runs once."""
    marker, lock, gate = tmp_path / "marker", tmp_path / "lock", tmp_path / "gate"
    caller = popen_cli(
        home,
        "start",
        "--run-key",
        "busy",
        "--",
        *job_argv(marker, lock, gate=gate),
        env={"ORCHESJOB_PAUSE_AT": "supervisor-before-record"},
    )
    sup = stopped_supervisor(home, caller.pid)
    job_id = _job_ids(home, "busy")[0]
    caller.kill()
    caller.wait()
    holder = LockHolder(home / "orchesjob.db", 4.0)
    if when == "launched-before-the-lock":
        os.kill(sup, signal.SIGCONT)
        wait_until(lambda: Evidence(marker).begins(), 30, step=0.01, what="the command to begin")
        wait_until(
            lambda: _stored_status(home, job_id) == "RUNNING", 30, step=0.01, what="the supervisor to commit its launch"
        )
        holder.start()
    else:
        holder.start()
        assert holder.held.wait(10)
        os.kill(sup, signal.SIGCONT)  # it waits for the lock to record itself
    assert holder.held.wait(10)
    reader = popen_cli(home, "status", "--job-id", job_id, env={"ORCHESJOB_PAUSE_AT": "lost-verdict"})
    r = assert_contract(finish(reader), "status while the lock is busy")  # a reader that stopped would hang here
    holder.join()
    ctx = "answered %s %s (%s)" % (r.json.get("status"), r.json.get("liveness"), r.json.get("end_reason"))
    assert r.code == 0 and r.json["status"] in ACTIVE and r.json["liveness"] == "verified", ctx
    wait_until(lambda: Evidence(marker).begins(job_id), 30, step=0.01, what="the supervisor to launch")
    gate.touch()
    final = wait_terminal(home, job_id)
    ev = Evidence(marker)
    assert len(ev.begins(job_id)) == 1 and final["status"] == "SUCCEEDED", ctx + "\n%s" % ev.lines


# ===================================================================================================================
# 2. a second pid namespace
# ===================================================================================================================
NS_READERS = ("status", "status --all", "status --running", "wait", "start", "clean", "abort")
# Where a reader runs: a new pid namespace with a /proc of its own or the host's, a new time namespace whose boot
# clock is shifted (start times read in /proc shift with it), or both.
NS_KINDS = ("pid+proc", "pid", "time", "pid+proc+time")


def _ns_cli(home: Path, where: str, *args: str, offset: int = 0) -> Result:
    """One CLI call from new namespaces (`unshare`): see NS_KINDS."""
    argv = [UNSHARE]
    if "pid" in where:
        argv += ["--pid", "--fork"] + (["--mount-proc"] if "proc" in where else [])
    if "time" in where:
        argv += ["--time", "--boottime", str(offset)] + ([] if "pid" in where else ["--fork"])
    p = subprocess.run(
        argv + cli_argv(*args),
        env=cli_env(home),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    out, err = p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    return assert_contract(
        Result(p.returncode, parse_json(out), out, err),
        "in new namespaces (%s, boot offset %d): orchesjob %s" % (where, offset, " ".join(args[:4])),
    )


class NsTrial:
    def __init__(self, home: Path, tmp: Path, name: str, rng) -> None:
        self.home, self.key = home, name
        d = tmp / name
        d.mkdir()
        self.marker, self.lock, self.gate = d / "marker", d / "lock", d / "gate"
        self.exit = rng.choice([0, 0, 3])
        self.request = "req-" + name
        self.job_id = ""
        self.notes: list[str] = []
        self.calls: dict[str, int] = {}

    @property
    def command(self) -> list[str]:
        return job_argv(self.marker, self.lock, exit=self.exit, gate=self.gate)

    def describe(self) -> str:
        return "trial %s: exit %d; %s; evidence:\n%s" % (
            self.key,
            self.exit,
            "; ".join(self.notes),
            "\n".join(" ".join(x) for x in Evidence(self.marker).lines),
        )

    def check_view(self, job: dict[str, Any], who: str) -> None:
        ctx = "%s: job %s %s liveness %s\n%s" % (
            who,
            job["job_id"][:8],
            job["status"],
            job.get("liveness"),
            self.describe(),
        )
        assert job["job_id"] == self.job_id, "another job of the key: " + ctx
        assert job["status"] != "LOST", "LOST from another namespace: " + ctx
        if job["status"] in ACTIVE:
            assert job["liveness"] == "verified", ctx  # its locks say so, in any namespace
        else:
            assert job["status"] in ("SUCCEEDED", "FAILED"), ctx
            ev = Evidence(self.marker)
            assert job["exit_code"] == self.exit and ev.ends(self.job_id) == [self.exit], ctx

    def batch(self, rng, phase: str, clean_deletes: bool) -> None:
        for _ in range(rng.randint(0, 2)):
            # abort of a live job from another namespace ends it (through its supervisor: test_never_twice.py);
            # here it comes only once the job has ended, where it must refuse
            kind = rng.choice(NS_READERS if phase == "ended" else NS_READERS[:-1])
            where = rng.choice(NS_KINDS)
            offset = rng.choice([-5, 3600, 10**6]) if "time" in where else 0
            who = "%s from new namespaces %s, boot offset %d (%s)" % (kind, where, offset, phase)
            if kind == "status":
                r = _ns_cli(self.home, where, "status", "--job-id", self.job_id, offset=offset)
            elif kind == "status --all":
                r = _ns_cli(self.home, where, "status", "--run-key", self.key, "--all", offset=offset)
            elif kind == "status --running":
                r = _ns_cli(self.home, where, "status", "--running", offset=offset)
            elif kind == "wait":
                r = _ns_cli(self.home, where, "wait", "--job-id", self.job_id, "--timeout", "0.5", offset=offset)
            elif kind == "start":
                mode = ["--reuse-success"] if self.exit == 0 and rng.random() < 0.5 else ["--request-id", self.request]
                r = _ns_cli(self.home, where, "start", "--run-key", self.key, *mode, "--", *self.command, offset=offset)
            elif kind == "clean":
                extra = [] if clean_deletes else ["--dry-run"]
                r = _ns_cli(self.home, where, "clean", "--all", *extra, offset=offset)
            else:
                r = _ns_cli(self.home, where, "abort", "--run-key", self.key, "--grace-seconds", "1", offset=offset)
            self.calls[kind] = self.calls.get(kind, 0) + 1
            ctx = "%s: exit %d %s %s\n%s" % (who, r.code, r.out[:1500], r.err[:500], self.describe())
            if kind == "abort":
                assert r.code == 4 and r.json["error"] == "inconsistent_state", ctx  # "Job is not running"
                self.notes.append("%s -> %s" % (who, r.json["error"]))
                continue
            assert r.code == 0, ctx
            if kind == "clean":
                mine = [i for i in r.json["items"] if i["run_key"] == self.key]
                for item in mine:
                    assert item["status"] == ("SUCCEEDED" if self.exit == 0 else "FAILED"), ctx
                assert clean_deletes or r.json["deleted"] in (0, len(r.json["items"])), ctx
                skipped = [s["status"] for s in r.json["skipped"] if s["run_key"] == self.key]
                self.notes.append("%s -> matched %s skipped %s" % (who, [i["status"] for i in mine], skipped))
                continue
            views = [j for j in _jobs_in(r.json) if j["run_key"] == self.key]
            if kind in ("status", "wait", "start", "status --all"):
                assert len(views) == 1, ctx
            for j in views:
                self.check_view(j, who)
            if kind == "start":
                assert r.json["existing"] is True and r.json["accepted"] is False, ctx
                assert r.json["same_request"] is (mode[0] == "--request-id"), ctx
            self.notes.append("%s -> %s" % (who, [(j["status"], j.get("liveness")) for j in views]))


def test_readers_and_starts_from_another_pid_namespace(home: Path, tmp_path: Path, rng) -> None:
    """`status`, `status --all`, `status --running`, `wait`, `start` of the key (same request id, or
    --reuse-success of a job that succeeds), `clean --all` and `abort`, run through `unshare --pid --fork` (with a
    /proc of their own or the host's) while the job's supervisor is stopped before its record or its launch, while
    the command runs, right when it ends and after.

    Each reader runs in a new pid namespace (with its own /proc or the host's), a new time namespace whose boot
    clock is shifted (-5 s, an hour, 11 days), or both. From there: never LOST, an active job is alive (`"liveness":
    "verified"`: its locks), `start` answers with the job and launches nothing, `clean` never deletes the job while
    it is active, `abort` of the ended job refuses. From the host afterwards: the job ran exactly once and its real
    end is recorded."""
    _need_root("a second pid namespace")
    for probe_argv in (["--pid", "--fork", "--mount-proc", "true"], ["--time", "--boottime", "5", "--fork", "true"]):
        probe = subprocess.run([UNSHARE] + probe_argv, capture_output=True, text=True)
        if probe.returncode != 0:
            unavailable("unshare %s does not work here: %s" % (" ".join(probe_argv), probe.stderr.strip()))
    calls: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for n in range(trials(8)):
        t = NsTrial(home, tmp_path, "ns-%03d" % n, rng)
        pause = rng.choice((None,) + PAUSES)
        caller = popen_cli(
            home,
            "start",
            "--run-key",
            t.key,
            "--request-id",
            t.request,
            "--start-timeout",
            "0.3",
            "--",
            *t.command,
            env={"ORCHESJOB_PAUSE_AT": pause} if pause else None,
        )
        t.notes.append("supervisor stopped at %s" % pause if pause else "no pause")
        if pause:
            sup = stopped_supervisor(home, caller.pid)
            t.job_id = _job_ids(home, t.key)[0]
            t.batch(rng, "supervisor stopped", clean_deletes=True)
            time.sleep(rng.uniform(0.0, 0.2))  # random jitter before the supervisor goes on
            _kill(sup, signal.SIGCONT)
        r = assert_contract(finish(caller), "start")
        assert r.code == 0, r
        t.job_id = r.json["job_id"]
        assert r.json["pid_namespace"], r.json
        wait_until(lambda t=t: Evidence(t.marker).begins(), 30, what="the command to begin")
        t.batch(rng, "running", clean_deletes=True)
        t.gate.touch()
        time.sleep(rng.uniform(0.0, 0.05))  # random jitter: the batch lands as the command ends, or after
        t.batch(rng, "ending", clean_deletes=False)
        final = wait_terminal(home, t.job_id)
        t.batch(rng, "ended", clean_deletes=False)

        ev = Evidence(t.marker)
        ctx = t.describe() + "\nfinal: %r" % final
        assert not ev.overlaps(), ctx
        assert list(ev.executions().items()) == [(t.job_id, 1)], "the command ran %r\n%s" % (ev.executions(), ctx)
        assert final["status"] == ("SUCCEEDED" if t.exit == 0 else "FAILED"), ctx
        assert final["exit_code"] == t.exit and ev.ends(t.job_id) == [t.exit], ctx
        assert [j["job_id"] for j in history(home, t.key)] == [t.job_id], ctx
        _settled_home(home, "everything of trial %s to end" % t.key)
        for k, v in t.calls.items():
            calls[k] = calls.get(k, 0) + v
        key = "%s:%s" % (pause or "no-pause", final["status"])
        outcomes[key] = outcomes.get(key, 0) + 1
    print("calls from a new pid namespace:", calls)
    print("outcomes:", outcomes)


# ===================================================================================================================
# 3. a full state directory
# ===================================================================================================================
def _tmpfs_works(tmp: Path) -> str | None:
    d = tmp / "probe"
    d.mkdir()
    r = subprocess.run(
        [
            UNSHARE,
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount -t tmpfs -o size=1m tmpfs "$1" && touch "$1/x"',
            "sh",
            str(d),
        ],
        capture_output=True,
        text=True,
    )
    return None if r.returncode == 0 else (r.stderr.strip() or "exit %d" % r.returncode)


def test_a_full_state_directory_at_random_moments(home: Path, tmp_path: Path, rng) -> None:
    """The whole state directory on a 2-8 MiB tmpfs (inside `unshare --mount`), filled by a filler file before the
    start, while the command runs or right when it ends, freed after 0.3-3 s; meanwhile a `status` and a retry
    `start --reuse-success`. Each trial runs as one program inside the namespace (full_disk_trial.py).

    No traceback ever (answers and the supervisor's stderr log); every answer keeps the output contract; a start
    is either refused cleanly or its job's real result is recorded once space returns; never LOST for a command that
    ran to its end; the retry never launches a second copy; once space is back, reads answer and a last retry
    `start --reuse-success --sync` runs one new execution only if the job did not succeed."""
    _need_root("a tmpfs state directory")
    problem = _tmpfs_works(tmp_path)
    if problem:
        unavailable("cannot mount a tmpfs in a new mount namespace here: %s" % problem)
    outcomes: dict[str, int] = {}
    stuck: list[str] = []
    home.mkdir(mode=0o700)
    for n in range(trials(8)):
        key = "full-%03d" % n
        d = tmp_path / key
        d.mkdir()
        params = {
            "home": str(home),
            "key": key,
            "marker": str(d / "marker"),
            "lock": str(d / "lock"),
            "gate": str(d / "gate"),
            "exit": rng.choice([0, 0, 3]),
            "size_kib": 1024 * rng.choice([2, 3, 4, 6, 8]),
            "moment": rng.choice(["before-start", "while-running", "at-the-end"]),
            "delay": rng.uniform(0.0, 0.05),
            "free_after": rng.uniform(0.3, 3.0),
            "gate_first": rng.random() < 0.5,
            "warm": rng.random() < 0.5,
            "write_bytes": rng.choice([0, 0, 64 * 1024]),
            "neighbour": rng.random() < 0.4,
            "neighbour_marker": str(d / "neighbour-marker"),
            "neighbour_lock": str(d / "neighbour-lock"),
        }
        meanwhile = [w for w in ("status", "retry") if rng.random() < 0.7]
        if params["moment"] != "at-the-end" and rng.random() < 0.5:
            meanwhile.append("gate")  # the command ends while the disk is still full
        rng.shuffle(meanwhile)
        params["meanwhile"] = meanwhile
        (d / "params.json").write_text(json.dumps(params))
        report_path = d / "report.json"
        env = cli_env(home)
        p = subprocess.run(
            [
                UNSHARE,
                "--mount",
                "--propagation",
                "private",
                sys.executable,
                FULL_DISK_TRIAL,
                str(d / "params.json"),
                str(report_path),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=400,
            cwd=REPO_ROOT,
        )
        ctx = "params %s\nhelper exit %d\n%s\n%s" % (
            params,
            p.returncode,
            p.stdout.decode(errors="replace")[-3000:],
            p.stderr.decode(errors="replace")[-3000:],
        )
        assert p.returncode == 0 and report_path.exists(), ctx
        report = json.loads(report_path.read_text())
        ev = Evidence(Path(params["marker"]))
        ctx = "params %s\nnotes: %s\nfiles: %s\nlogs: %s\nevidence:\n%s\ncalls:\n%s" % (
            params,
            report["notes"],
            report["home_files"],
            report["logs"],
            "\n".join(" ".join(x) for x in ev.lines),
            "\n".join(
                "  [%s %.2f-%.2f full=%s] %s -> %d %s %s"
                % (
                    c["phase"],
                    c["started"],
                    c["ended"],
                    c["disk_full_at_start"],
                    " ".join(c["args"][:4]),
                    c["code"],
                    c["out"][:600],
                    c["err"][:300],
                )
                for c in report["calls"]
            ),
        )
        assert report["filled_bytes"] > 0 or params["moment"] != "before-start", ctx
        assert not report["log_problems"], "the supervisor crashed: %s\n%s" % (report["log_problems"], ctx)

        answers: dict[str, list[dict[str, Any]]] = {}
        for c in report["calls"]:
            r = Result(c["code"], parse_json(c["out"]), c["out"], c["err"])
            assert_contract(r, "orchesjob %s (%s)" % (" ".join(c["args"][:4]), c["phase"]))
            if c["phase"] == "after" and r.code == 3 and c["args"][2] == key:  # every start was refused: no job
                assert not any(
                    a["phase"] in ("first", "meanwhile") and a["args"][0] == "start" and a["code"] == 0
                    for a in report["calls"]
                ), "not found after a start succeeded\n" + ctx
            elif c["phase"] in ("after", "final", "warm"):
                assert r.code == 0, "a call with space available failed\n" + ctx
            if r.code == 0:
                answers.setdefault(c["phase"], []).extend(j for j in _jobs_in(r.json) if j["run_key"] == key)
        if params["neighbour"]:  # the other key's job ran once, and its end reached the database like ours
            nev = Evidence(Path(params["neighbour_marker"]))
            started = [c for c in report["calls"] if c["args"][:3] == ["start", "--run-key", key + "-neighbour"]]
            waited = [c for c in report["calls"] if c["args"][:3] == ["wait", "--run-key", key + "-neighbour"]]
            assert started[0]["code"] == 0 and waited[0]["code"] == 0, ctx
            neighbour = parse_json(waited[0]["out"])
            assert neighbour["status"] == "SUCCEEDED" and neighbour["exit_code"] == 0, ctx
            assert len(nev.begins()) == 1 and nev.ends(neighbour["job_id"]) == [0] and not nev.overlaps(), ctx
        final_jobs = _jobs_in(parse_json(report["calls"][-1]["out"]))
        attempts = {j["job_id"]: j["attempt_no"] for j in final_jobs}
        assert not ev.overlaps(), "a second copy ran while the first was alive\n" + ctx
        assert set(ev.executions()) <= set(attempts), "a command ran for a job the database does not know\n" + ctx
        assert all(v == 1 for v in ev.executions().values()), "a job ran twice\n" + ctx
        order = [attempts[ln[1]] for ln in ev.begins()]
        assert order == sorted(order), ctx
        for earlier, later in zip(ev.begins(), ev.begins()[1:]):
            idx_end = [i for i, ln in enumerate(ev.lines) if ln[0] == "end" and ln[1] == earlier[1]]
            idx_begin = ev.lines.index(later)
            assert idx_end and idx_end[0] < idx_begin, "job %s began before job %s had ended\n%s" % (
                later[1][:8],
                earlier[1][:8],
                ctx,
            )
        for phase, views in answers.items():
            for j in views:
                assert j["status"] != "LOST", "LOST answered (%s)\n%s" % (phase, ctx)
                if j["status"] in ("SUCCEEDED", "FAILED"):
                    assert j["exit_code"] is not None and ev.ends(j["job_id"]) == [j["exit_code"]], ctx
        for j in final_jobs:
            assert j["status"] in ("SUCCEEDED", "FAILED"), "job %s ended %s\n%s" % (j["job_id"][:8], j["status"], ctx)
            assert ev.begins(j["job_id"]), "job %s was accepted but its command never began\n%s" % (j["job_id"], ctx)
            assert ev.ends(j["job_id"]) == [j["exit_code"]], ctx
        # the last retry (--reuse-success --sync) ran again only if what came before it did not succeed
        last = parse_json([c for c in report["calls"] if c["phase"] == "final"][0]["out"])
        before = [j for j in final_jobs if j["job_id"] != last["job_id"]]
        if last["existing"]:
            assert last["status"] == "SUCCEEDED" and last["job_id"] == final_jobs[0]["job_id"], ctx
        else:
            assert not before or before[0]["status"] == "FAILED", ctx
            assert last["status"] in ("SUCCEEDED", "FAILED") and ev.begins(last["job_id"]), ctx
        first = [c for c in report["calls"] if c["phase"] == "first"][0]
        print(
            "%s: %s; %s"
            % (
                key,
                {k: params[k] for k in ("moment", "size_kib", "free_after", "meanwhile", "warm")},
                "; ".join(report["notes"]),
            )
        )
        print("   neighbour: %s" % params["neighbour"])
        print(
            "   calls: %s"
            % [
                "%s %s->%d%s"
                % (
                    c["phase"],
                    c["args"][0],
                    c["code"],
                    [j["status"] for j in _jobs_in(parse_json(c["out"])) if j["run_key"] == key],
                )
                for c in report["calls"]
            ]
        )
        print("   files: %s %s" % (report["home_files"], sorted(report["logs"])))
        key_ = "%s:%s:%s" % (
            params["moment"],
            "start-refused" if first["code"] else "started",
            "+".join(j["status"] for j in reversed(final_jobs)),
        )
        outcomes[key_] = outcomes.get(key_, 0) + 1
        _settled_home(home, "everything of trial %s to end" % key)
        leftovers = [f for f in report["logs"] if ".result.tmp." in f]
        if leftovers:
            stuck.append("%s (%s): %s" % (key, params["moment"], leftovers))
    print("outcomes:", outcomes)
    # Checked after every trial ran, so one finding does not hide the others. A result file the supervisor could
    # not finish on the full disk must not stay behind: it is created with O_EXCL under one name per supervisor, so
    # while it exists every later try to write the result file fails, and until the database takes the result it
    # lives only in the supervisor's memory (a kill -9 then makes a job whose command ran to its end LOST).
    assert not stuck, "result files left half-written after space returned: %s" % stuck


# ===================================================================================================================
# 4. abort around the launch
# ===================================================================================================================
def test_abort_at_random_moments_around_the_launch(home: Path, tmp_path: Path, rng) -> None:
    """`start` with its supervisor stopped at a random pause point (or none); `abort` of the key after 0-300 ms, or
    while the supervisor is stopped; then the supervisor resumes.

    An abort that answered ABORTED with no command recorded means the command never begins (marker evidence); after
    abort nothing of the job is alive (and its supervisor leaves once resumed); a job abort did not reach ends with
    its real result; a following `start --sync` runs exactly one new execution, alone."""
    outcomes: dict[str, int] = {}
    for n in range(trials(14)):
        key = "abl-%03d" % n
        d = tmp_path / key
        d.mkdir()
        marker, lock = d / "marker", d / "lock"
        exit_code = rng.choice([0, 0, 3])
        children, daemons = rng.choice([(0, 0), (0, 0), (1, 0), (0, 1), (1, 1)])
        ignore_term = bool(children or daemons) and rng.random() < 0.3
        command = job_argv(
            marker,
            lock,
            duration=rng.choice([0.2, 0.6, 1.5]),
            exit=exit_code,
            children=children,
            daemons=daemons,
            linger=LINGER,
            ignore_term=ignore_term,
        )
        pause = rng.choice((None,) + PAUSES)
        when = "while-stopped" if pause and rng.random() < 0.5 else "after-delay"
        notes = [
            "pause %s, abort %s, exit %d children %d daemons %d ignore_term %s"
            % (pause, when, exit_code, children, daemons, ignore_term)
        ]

        def describe(key: str = key, notes: list[str] = notes, marker: Path = marker) -> str:
            return "trial %s: %s; evidence:\n%s" % (
                key,
                "; ".join(notes),
                "\n".join(" ".join(x) for x in Evidence(marker).lines),
            )

        caller = popen_cli(
            home,
            "start",
            "--run-key",
            key,
            "--start-timeout",
            "0.3",
            "--",
            *command,
            env={"ORCHESJOB_PAUSE_AT": pause} if pause else None,
        )
        sup: int | None = None
        if when == "while-stopped":
            sup = stopped_supervisor(home, caller.pid)
            time.sleep(rng.uniform(0.0, 0.1))  # random jitter before the abort
        else:
            time.sleep(rng.uniform(0.0, 0.3))  # random jitter: the abort lands anywhere in the start
        begun_before = {ln[1] for ln in Evidence(marker).begins()}
        r = cli(home, "abort", "--run-key", key, "--grace-seconds", "1", "--reason", "fault test")
        assert r.code in (0, 3, 4), describe() + "\n" + r.out
        aborted: dict[str, Any] | None = r.json if r.code == 0 else None
        if aborted is not None:
            jid = aborted["job_id"]
            assert aborted["status"] == "ABORTED", describe()
            left = job_processes(jid, aborted.get("target_pid"))
            assert not left, "abort left processes of job %s alive: %s\n%s" % (jid, _ps(left), describe())
            if aborted["target_pid"] is None:
                assert not Evidence(marker).begins(jid), "aborted with no command recorded, yet it began\n" + describe()
            else:
                assert jid not in begun_before or aborted["target_pid"], describe()
            notes.append("abort -> ABORTED %s target %s" % (jid[:8], aborted["target_pid"]))
        else:
            assert (r.code == 3 and r.json["error"] == "not_found") or r.json["error"] == "inconsistent_state", r.out
            notes.append("abort -> exit %d %s" % (r.code, r.json["error"]))

        # resume: the supervisor (if it stops at its pause point at all: an aborted job may end before it)
        if pause:
            if sup is None:

                def stopped_or_gone(caller: subprocess.Popen = caller) -> Any:
                    for pid in supervisor_pids(home, caller.pid):
                        if _stopped(pid):
                            return pid
                    return -1 if (caller.poll() is not None and not supervisor_pids(home, caller.pid)) else None

                try:
                    found = wait_until(stopped_or_gone, 5, step=0.01, what="the supervisor to stop or leave")
                except AssertionError:
                    found = -1  # it passed its pause point long ago (recorded, launched, or left)
                sup = found if found and found > 0 else None
            if sup is not None:
                time.sleep(rng.uniform(0.0, 0.1))  # random jitter before the supervisor goes on
                _kill(sup, signal.SIGCONT)
                notes.append("supervisor resumed")
        rc = assert_contract(finish(caller), "start")
        assert rc.code == 0, describe() + "\n" + rc.out + rc.err
        jid = rc.json["job_id"]
        assert aborted is None or aborted["job_id"] == jid, describe()
        final = wait_terminal(home, jid)
        time.sleep(0.3)  # a command the resumed supervisor wrongly launched would show up by now
        ev = Evidence(marker)
        ctx = describe() + "\nfinal: %s exit %s target %s" % (final["status"], final["exit_code"], final["target_pid"])
        left = job_processes(jid, final.get("target_pid"))
        assert not left, "processes of the job live on: %s\n%s" % (_ps(left), ctx)
        if sup is not None:
            wait_until(lambda sup=sup: not pid_alive(sup), 30, what="the resumed supervisor to leave")
        assert len(ev.begins(jid)) <= 1, ctx
        if aborted is not None:
            assert final["status"] == "ABORTED" and final["finished_at"], ctx
            if aborted["target_pid"] is None:
                assert not ev.begins(jid), "aborted before launch, yet the command began\n" + ctx
                assert final["target_pid"] is None, ctx
        else:
            assert final["status"] == ("SUCCEEDED" if exit_code == 0 else "FAILED"), ctx
            assert final["exit_code"] == exit_code and ev.ends(jid) == [exit_code], ctx

        again = ok(home, "start", "--run-key", key, "--sync", "--", *job_argv(marker, lock, duration=0.0))
        ctx = describe() + "\nfollowing start: %s %s" % (again["job_id"][:8], again["status"])
        assert again["accepted"] is True and again["job_id"] != jid and again["status"] == "SUCCEEDED", ctx
        ev = Evidence(marker)
        assert len(ev.begins(again["job_id"])) == 1 and not ev.overlaps(), ctx
        assert set(ev.executions()) <= {jid, again["job_id"]}, ctx
        _settled_home(home, "everything of trial %s to end" % key)
        k = "%s@%s:%s%s" % (
            when,
            pause[len("supervisor-") :] if pause else "no-pause",
            final["status"],
            "" if ev.begins(jid) else "(never began)",
        )
        outcomes[k] = outcomes.get(k, 0) + 1
    print("outcomes:", outcomes)
