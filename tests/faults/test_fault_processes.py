"""Process faults, black-box: kill -9 of the supervisor and of `start` at random moments, SIGHUP of the caller's
session, and targets that fork children and daemonise grandchildren.

Every trial runs tests/faults/fault_job.py as the job. Its marker file says which jobs physically began and ended
(and with which exit code), and its flock makes "a second copy ran while something of the first was alive" visible
as an OVERLAP line. After each fault the trial lets everything settle and checks:

- the state is one of the allowed ones: never STARTING/RUNNING once nothing of the job is alive; SUCCEEDED/FAILED
  only with the exit code the command really ended with; LOST only where a result could not be recorded (its
  supervisor was killed, or it never launched anything);
- a new `start` of the key (what a retry does) never runs a second copy while anything of the first is alive;
- `abort` leaves no process of the job behind (its process group and every process carrying its ORCHESJOB_JOB_ID,
  read from /proc).
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import termios
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
from tests.support.cli import REPO_ROOT, Result, cli_argv, cli_env, finish, parse_json, pid_alive
from tests.support.procs import supervisor_pids

pytestmark = pytest.mark.timeout(900)

LINGER = 1.5  # how long children and daemons of a job live when nobody stops them
SETTLE = 90.0  # generous: the machine may be busy with other suites


class Trial:
    """One run key, its evidence files and the parameters of its command."""

    def __init__(self, home: Path, tmp: Path, name: str, rng, *, forks: bool = True) -> None:
        self.home = home
        self.key = name
        d = tmp / name
        d.mkdir()
        self.marker = d / "marker"
        self.lock = d / "lock"
        self.duration = rng.choice([0.0, 0.05, 0.3, 0.8])
        self.exit = rng.choice([0, 0, 3])
        self.children: int
        self.daemons: int
        self.children, self.daemons = rng.choice([(0, 0), (0, 0), (1, 1), (2, 0), (0, 2)]) if forks else (0, 0)
        self.ignore_term = bool(self.children or self.daemons) and rng.random() < 0.3
        self.aborted: set[str] = set()
        self.notes: list[str] = []

    @property
    def command(self) -> list[str]:
        return job_argv(
            self.marker,
            self.lock,
            duration=self.duration,
            exit=self.exit,
            children=self.children,
            daemons=self.daemons,
            linger=LINGER,
            ignore_term=self.ignore_term,
        )

    def describe(self) -> str:
        return "trial %s: duration %g exit %d children %d daemons %d ignore_term %s; %s; evidence:\n%s" % (
            self.key,
            self.duration,
            self.exit,
            self.children,
            self.daemons,
            self.ignore_term,
            "; ".join(self.notes),
            "\n".join(" ".join(x) for x in Evidence(self.marker).lines),
        )

    def popen_start(self, *opts: str, **kw: Any) -> subprocess.Popen:
        return subprocess.Popen(
            cli_argv("start", "--run-key", self.key, *opts, "--", *self.command),
            env=cli_env(self.home),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=REPO_ROOT,
            **kw,
        )

    def retry_start(self) -> dict[str, Any]:
        """What a retry does right after the fault: start the same key again (default mode)."""
        job = ok(self.home, "start", "--run-key", self.key, "--", *self.command)
        self.notes.append("retry start -> %s %s existing=%s" % (job["job_id"][:8], job["status"], job["existing"]))
        return job

    def abort(self, job_id: str) -> None:
        """Abort (if still active) and check that nothing of the job is left alive."""
        r = cli(self.home, "abort", "--job-id", job_id, "--grace-seconds", "1", "--reason", "fault test")
        assert r.code in (0, 4), self.describe() + "\n" + r.out
        if r.code == 0:
            self.aborted.add(job_id)
            pgid = r.json.get("target_pid")
            left = job_processes(job_id, pgid)
            assert not left, "abort left processes of job %s alive: %s\n%s" % (job_id, _ps(left), self.describe())
        self.notes.append("abort %s -> exit %d" % (job_id[:8], r.code))

    def settle_and_check(self, supervisor_may_be_dead: set[str]) -> list[dict[str, Any]]:
        """Wait until every job of the key is terminal or nothing of it (command tree, supervisor) is alive, then
        check the allowed end states."""
        deadline = time.monotonic() + SETTLE
        while True:
            jobs = history(self.home, self.key)
            active = [j for j in jobs if j["status"] not in TERMINAL]
            if not active:
                break
            if not any(
                job_processes(j["job_id"], j.get("target_pid")) or (j.get("worker_pid") and pid_alive(j["worker_pid"]))
                for j in active
            ):
                jobs = history(self.home, self.key)  # everything is dead: this reader must settle them
                break
            assert time.monotonic() < deadline, "jobs still active after %ss: %s" % (SETTLE, self.describe())
            time.sleep(0.1)
        ev = Evidence(self.marker)
        ctx = self.describe() + "\njobs: " + repr([(j["job_id"][:8], j["status"], j["exit_code"]) for j in jobs])
        assert not ev.overlaps(), "a second copy ran while the first was alive\n" + ctx
        known = {j["job_id"] for j in jobs}
        assert set(ev.executions()) <= known, "a command ran for a job the database does not know\n" + ctx
        for job in jobs:
            jid = job["job_id"]
            begins = ev.begins(jid)
            assert len(begins) <= 1, "job %s ran %d times\n%s" % (jid, len(begins), ctx)
            assert job["status"] in TERMINAL, "job %s is %s with nothing of it alive\n%s" % (jid, job["status"], ctx)
            if job["status"] in ("SUCCEEDED", "FAILED"):
                assert begins, "job %s is %s but its command never began\n%s" % (jid, job["status"], ctx)
                assert job["exit_code"] == self.exit and ev.ends(jid) == [self.exit], (
                    "job %s recorded exit %r, its command ended with %r\n%s"
                    % (jid, job["exit_code"], ev.ends(jid), ctx)
                )
                assert (job["status"] == "SUCCEEDED") == (self.exit == 0), ctx
            elif job["status"] == "LOST":
                assert jid in supervisor_may_be_dead or not begins, (
                    "job %s is LOST although its supervisor was never touched and its command ran\n%s" % (jid, ctx)
                )
            elif job["status"] == "ABORTED":
                assert jid in self.aborted, "job %s is ABORTED but nobody aborted it\n%s" % (jid, ctx)
            else:
                raise AssertionError("unexpected status %s\n%s" % (job["status"], ctx))
        return jobs


def _ps(pids) -> str:
    out = []
    for pid in sorted(pids):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                out.append("%d %s" % (pid, f.read().replace(b"\0", b" ").decode(errors="replace")[:200]))
        except OSError:
            out.append("%d (gone)" % pid)
    return "; ".join(out)


def _kill(pid: int, sig: int = signal.SIGKILL) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


# ---------------------------------------------------------------------------------------------------------------
def test_kill_9_of_the_supervisor_at_random_moments(home: Path, tmp_path: Path, rng) -> None:
    """kill -9 of the supervisor before its command starts, while it runs, or while the supervisor is stopping the
    command's leftovers and writing the result. A retry right after must not run a second copy while anything of
    the first is alive; the end state must be allowed; abort must leave nothing."""
    moments = {"before-target": 0, "while-running": 0, "at-the-end": 0, "missed": 0}
    outcomes: dict[str, int] = {}
    for n in range(trials(8)):
        t = Trial(home, tmp_path, "sup-%03d" % n, rng)
        moment = rng.choice(["before-target", "while-running", "at-the-end"])
        proc = t.popen_start()
        killed: int | None = None
        seen: set[int] = set()
        deadline = time.monotonic() + 60
        while killed is None and time.monotonic() < deadline:
            seen |= supervisor_pids(home, proc.pid)
            ev = Evidence(t.marker)
            ready = {
                "before-target": bool(seen),
                "while-running": bool(ev.begins()),
                "at-the-end": any(ln[0] == "end" for ln in ev.lines),
            }[moment]
            if ready:
                if moment == "while-running":
                    time.sleep(rng.uniform(0, t.duration))  # random jitter: anywhere in the command's run
                elif moment == "at-the-end":
                    time.sleep(rng.uniform(0, 0.05))  # random jitter: as it ends, or just after
                for pid in seen:
                    if _kill(pid):
                        killed = pid
                break
            if proc.poll() is not None and moment == "before-target":
                break  # start already returned without us seeing a supervisor
            time.sleep(0.002)
        moments[moment if killed else "missed"] += 1
        t.notes.append("kill -9 supervisor %s at %s" % (killed, moment if killed else "(missed: already gone)"))
        r = assert_contract(finish(proc), "start whose supervisor was killed")
        assert r.code == 0, t.describe() + "\n" + r.out + r.err
        first = r.json
        assert first["status"] in ACTIVE + ("SUCCEEDED", "FAILED", "LOST"), t.describe()
        t.notes.append("start -> %s %s" % (first["job_id"][:8], first["status"]))

        second = t.retry_start()
        if second["job_id"] == first["job_id"]:
            assert second["existing"] is True
        if rng.random() < 0.4:
            t.abort(first["job_id"])
        if second["job_id"] != first["job_id"] and rng.random() < 0.3:
            t.abort(second["job_id"])
        jobs = t.settle_and_check(supervisor_may_be_dead={first["job_id"]} if killed else set())
        assert len(jobs) in (1, 2), t.describe()
        if not killed:
            assert jobs[-1]["status"] in ("SUCCEEDED", "FAILED", "ABORTED"), t.describe()
        key = "%s:%s" % (moment if killed else "missed", "+".join(j["status"] for j in reversed(jobs)))
        outcomes[key] = outcomes.get(key, 0) + 1
    print("supervisor kills by moment:", moments)
    print("outcomes:", outcomes)


def test_kill_9_of_start_at_random_moments(home: Path, tmp_path: Path, rng) -> None:
    """kill -9 of the `start` process (async or --sync) at a random moment of its life. The supervisor is not
    touched, so a command that began must end with its real exit code recorded, never LOST; a retry right after
    never runs a second copy while the first lives."""
    outcomes: dict[str, int] = {}
    for n in range(trials(8)):
        t = Trial(home, tmp_path, "kst-%03d" % n, rng)
        moment = rng.choice(["early", "supervisor-up", "command-began", "sync-waiting"])
        opts = ("--sync",) if moment == "sync-waiting" or rng.random() < 0.3 else ()
        proc = t.popen_start(*opts)
        deadline = time.monotonic() + 60
        if moment == "early":
            time.sleep(rng.uniform(0.0, 0.08))  # random jitter: somewhere early in the start
        while moment != "early" and proc.poll() is None and time.monotonic() < deadline:
            if moment == "supervisor-up" and supervisor_pids(home, proc.pid):
                break
            if moment in ("command-began", "sync-waiting") and Evidence(t.marker).begins():
                if moment == "sync-waiting":
                    time.sleep(rng.uniform(0.0, t.duration))  # random jitter: while the caller waits
                break
            time.sleep(0.002)
        hit = proc.poll() is None and _kill(proc.pid)
        finish(proc)  # reap; its output is whatever it managed to print
        t.notes.append("kill -9 start%s %s: %s" % (" --sync" if opts else "", moment, "hit" if hit else "missed"))
        t.retry_start()
        if rng.random() < 0.3:
            latest = history(home, t.key)[0]
            t.abort(latest["job_id"])
        jobs = t.settle_and_check(supervisor_may_be_dead=set())
        key = "%s:%s" % (moment if hit else "missed", "+".join(j["status"] for j in reversed(jobs)))
        outcomes[key] = outcomes.get(key, 0) + 1
    print("start kills:", outcomes)


def test_sighup_of_the_callers_session(home: Path, tmp_path: Path, rng) -> None:
    """The caller runs `start` from a shell on a terminal (as over `ssh -t`); the terminal hangs up (or the session
    gets SIGHUP) at a random moment. The job must not notice: a command that began ends with its real result."""
    outcomes: dict[str, int] = {}
    for n in range(trials(8)):
        t = Trial(home, tmp_path, "hup-%03d" % n, rng)
        out = tmp_path / t.key / "start.out"
        master, slave = os.openpty()

        def controlling_tty() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        script = '"$@" >"$OJ_OUT" 2>&1; echo "start exit $?" >>"$OJ_OUT"; sleep 30'
        argv = cli_argv("start", "--run-key", t.key, "--", *t.command)
        env = dict(cli_env(home), OJ_OUT=str(out))
        shell = subprocess.Popen(
            ["/bin/sh", "-c", script, "sh", *argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=REPO_ROOT,
            preexec_fn=controlling_tty,
        )
        os.close(slave)
        time.sleep(rng.uniform(0.0, 0.5))  # random jitter: the hangup lands anywhere in the start
        how = rng.choice(["hangup", "killpg"])
        if how == "hangup":
            os.close(master)
        else:
            try:
                os.killpg(shell.pid, signal.SIGHUP)
            except ProcessLookupError:
                pass
        try:
            shell.wait(timeout=60)
        finally:
            if how != "hangup":
                os.close(master)
        said = out.read_text(errors="replace") if out.exists() else ""
        t.notes.append("SIGHUP by %s; the caller printed %r" % (how, said[-200:]))
        if "start exit" in said:
            head = said[: said.rindex("start exit")]
            assert_contract(Result(0, parse_json(head), head, ""), "start that finished before the hangup")
        t.retry_start()
        jobs = t.settle_and_check(supervisor_may_be_dead=set())
        key = "%s:%s" % (
            "finished" if "start exit" in said else "killed",
            "+".join(j["status"] for j in reversed(jobs)),
        )
        outcomes[key] = outcomes.get(key, 0) + 1
    print("SIGHUP outcomes:", outcomes)


def test_forking_target_leaves_nothing_behind_when_it_ends(home: Path, tmp_path: Path, rng) -> None:
    """A command that forks children and daemonises grandchildren (double fork + setsid), some ignoring SIGTERM,
    then exits: by the time its end is recorded, nothing of it is alive, and the exit code is the command's."""
    for n in range(trials(6)):
        t = Trial(home, tmp_path, "fork-%03d" % n, rng, forks=False)
        t.children, t.daemons = rng.randint(0, 3), rng.randint(1, 3)
        t.ignore_term = rng.random() < 0.5
        t.duration = rng.choice([0.0, 0.2])
        job = ok(
            home,
            "start",
            "--run-key",
            t.key,
            "--",
            *job_argv(
                t.marker,
                t.lock,
                duration=t.duration,
                exit=t.exit,
                children=t.children,
                daemons=t.daemons,
                linger=120,
                ignore_term=t.ignore_term,
            ),
        )
        final = wait_terminal(home, job["job_id"])
        left = job_processes(job["job_id"], final.get("target_pid"))
        assert not left, "job %s is %s but its processes live on: %s\n%s" % (
            job["job_id"],
            final["status"],
            _ps(left),
            t.describe(),
        )
        assert final["status"] == ("SUCCEEDED" if t.exit == 0 else "FAILED"), t.describe()
        assert final["exit_code"] == t.exit, t.describe()
        ev = Evidence(t.marker)
        assert len(ev.begins(job["job_id"])) == 1 and not ev.overlaps(), t.describe()


def test_abort_of_a_forking_target_at_random_moments_leaves_nothing(home: Path, tmp_path: Path, rng) -> None:
    """abort at a random moment of a job whose command forks children and daemons (some ignoring SIGTERM): after
    abort returns, nothing of the job is alive, the job is ABORTED, and a new start of the key runs alone."""
    for n in range(trials(6)):
        t = Trial(home, tmp_path, "abt-%03d" % n, rng, forks=False)
        t.children, t.daemons = rng.randint(0, 2), rng.randint(1, 3)
        t.ignore_term = rng.random() < 0.5
        t.duration = 60.0
        cmd = job_argv(
            t.marker,
            t.lock,
            duration=t.duration,
            exit=t.exit,
            children=t.children,
            daemons=t.daemons,
            linger=120,
            ignore_term=t.ignore_term,
        )
        job = ok(home, "start", "--run-key", t.key, "--", *cmd)
        time.sleep(rng.uniform(0.0, 0.4))  # random jitter: the abort finds the job's tree at any stage
        t.abort(job["job_id"])
        assert job["job_id"] in t.aborted, t.describe()
        final = ok(home, "status", "--job-id", job["job_id"])
        assert final["status"] == "ABORTED", t.describe()
        time.sleep(0.3)  # anything forked in the last instant would show up now
        left = job_processes(job["job_id"], final.get("target_pid"))
        assert not left, "after abort: %s\n%s" % (_ps(left), t.describe())
        again = ok(home, "start", "--run-key", t.key, "--", *job_argv(t.marker, t.lock, duration=0.0))
        assert again["accepted"] is True
        wait_terminal(home, again["job_id"])
        assert not Evidence(t.marker).overlaps(), t.describe()
