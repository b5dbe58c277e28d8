"""Random explorers of the evidence behind verdicts (the README's "What exactly-once means here").

1. Jobs of orchesjob 1.1.0 (plain, `#!` scripts, a command that exec'd another program), at a random stage (running,
   worker killed, command killed, both), with or without the upgrade, judged by readers and `start`s from random
   namespaces (the host's, a new pid namespace with or without its own /proc, a shifted time namespace). Imported
   jobs carry no evidence a pid could give: they must be alive while anything of them lives, and never started
   again from a place that cannot tell.
2. Quick commands (they end at once, some leaving children or a daemon behind), with the database locked while their
   supervisor records the end and the supervisor sent SIGTERM at random moments; as soon as a pid of the job is
   free again, a stranger is started under it (ns_last_pid). The strangers must never be signalled: the supervisor
   signals a group only while its command is an unreaped child, and nothing after reaping it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.faults.faultlib import ACTIVE, TERMINAL, assert_contract, ok, trials, wait_terminal
from tests.support.cli import (
    REPO_ROOT,
    Result,
    _kill_leftovers,
    cli_argv,
    cli_env,
    parse_json,
    stat_state,
    wait_until,
)
from tests.support.procs import environ

pytestmark = pytest.mark.timeout(900)

UNSHARE = "/usr/bin/unshare"
WHERE = ("host", "pid+proc", "pid", "time", "pid+proc+time")


def _root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("needs root (namespaces, ns_last_pid): under CI this is a failure")
        pytest.skip("needs root (namespaces, ns_last_pid)")


def _from(home: Path, where: str, *args: str, offset: int = 0) -> Result:
    """One CLI call from `where`: the host, or new namespaces (see WHERE)."""
    argv = []
    if where != "host":
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
    return assert_contract(Result(p.returncode, parse_json(out), out, err), "from %s: %s" % (where, " ".join(args[:3])))


def _group_alive(pgid: int) -> bool:
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.getpgid(int(name)) == pgid and stat_state(int(name)) not in (None, "Z"):
                return True
        except OSError:
            continue
    return False


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


# ===================================================================================================================
# 1. jobs of orchesjob 1.1.0
# ===================================================================================================================
def test_imported_1_1_0_jobs_at_random_stages_from_random_namespaces(v110, home: Path, tmp_path: Path, rng) -> None:
    _root()
    seen: dict[str, int] = {}
    for n in range(trials(4)):
        key = "imp-%03d" % n
        d = tmp_path / key
        d.mkdir()
        try:
            stage = _imported_trial(v110, d / "home", d, key, rng)
        finally:
            _kill_leftovers(d / "home")
        seen[stage] = seen.get(stage, 0) + 1
    print("stages:", seen)


def _imported_trial(v110: Any, home: Path, d: Path, key: str, rng: Any) -> str:
    """One trial in a state directory of its own (1.1.0 cannot start a job in an upgraded one)."""
    marker, second, gate = d / "marker", d / "second", d / "gate"
    kind = rng.choice(["plain", "script", "exec"])
    body = 'echo "$$" >> %s; while [ ! -e %s ]; do sleep 0.05; done' % (marker, gate)
    if kind == "script":
        script = d / "job.sh"
        script.write_text("#!/bin/sh\n" + body + "\n")
        script.chmod(0o755)
        command = [str(script)]
    elif kind == "exec":
        command = [
            "sh",
            "-c",
            "echo \"$$\" >> %s; exec sh -c 'while [ ! -e %s ]; do sleep 0.05; done'" % (marker, gate),
        ]
    else:
        command = ["sh", "-c", body]
    job = v110.ok(home, "start", "--run-key", key, "--", *command)
    wait_until(lambda: _lines(marker), 30, what="the 1.1.0 command to begin")
    if rng.random() < 0.6:
        ok(home, "start", "--run-key", "upgrade", "--sync", "--", "true")
    stage = rng.choice(["running", "worker-killed", "command-killed", "both-killed"])
    if stage in ("worker-killed", "both-killed"):
        os.kill(job["worker_pid"], signal.SIGKILL)
    if stage in ("command-killed", "both-killed"):
        os.killpg(job["target_pid"], signal.SIGKILL)
    wait_until(lambda: stage == "running" or not _group_alive(job["target_pid"]) or stage == "worker-killed", 30)
    notes = ["%s, %s" % (kind, stage)]
    accepted_while_alive: list[str] = []

    def worker_alive() -> bool:
        return stat_state(job["worker_pid"]) not in (None, "Z")

    def alive() -> bool:
        return _group_alive(job["target_pid"]) or worker_alive()

    def recorded_active() -> bool:
        """From the database file itself (a CLI read could settle the row)."""
        c = sqlite3.connect("file:%s?mode=ro" % (home / "orchesjob.db"), uri=True, timeout=30)
        try:
            row = c.execute("SELECT status FROM jobs WHERE job_id = ?", (job["job_id"],)).fetchone()
        finally:
            c.close()
        return row is not None and row[0] in ACTIVE

    for _ in range(rng.randint(2, 4)):
        where = rng.choice(WHERE)
        offset = rng.choice([-5, 3600, 10**6])
        verb = rng.choice(["status", "start", "clean"])
        was_alive, was_active = alive(), recorded_active()
        if verb == "status":
            r = _from(home, where, "status", "--job-id", job["job_id"], offset=offset)
            if r.code == 3 and any(n.startswith("clean") and "deleted" in n for n in notes):
                continue  # an earlier clean deleted it once it had ended
            assert r.code == 0, r
            shown = r.json
        elif verb == "start":
            again = ["sh", "-c", 'echo "$$" >> %s' % second]
            r = _from(home, where, "start", "--run-key", key, "--", *again, offset=offset)
            assert r.code == 0, r
            shown = r.json
            if r.json["accepted"]:
                # a new attempt is right only once the 1.1.0 job is over: recorded so by its worker, or seen gone from
                # where every process of the host shows (a time namespace alone sees them all; a pid one does not).
                # What was alive before the call and still is after it was alive while the call decided; a worker
                # that exited during the call (its command was killed: it records the end and goes) was not.
                if (was_alive and alive()) or (was_active and "pid" in where and worker_alive()):
                    accepted_while_alive.append("%s (%s)" % (where, "alive" if was_alive else "unrecorded"))
                notes.append("start from %s launched a new attempt" % where)
                break
        else:
            r = _from(home, where, "clean", "--all", offset=offset)
            assert r.code == 0, r
            deleted = job["job_id"] in [i["job_id"] for i in r.json["items"]]
            assert not (deleted and was_alive and alive()), "clean deleted a job whose processes live: %s" % r.json
            notes.append("clean from %s%s" % (where, ": deleted it" if deleted else ""))
            continue
        if shown["job_id"] == job["job_id"]:
            notes.append("%s from %s: %s %s" % (verb, where, shown["status"], shown.get("liveness")))
            if was_alive and alive():
                assert shown["status"] in ACTIVE + ("SUCCEEDED", "FAILED"), (notes, shown)
            if shown["status"] == "LOST":
                assert not alive(), "LOST while something of it lives: %s" % notes
                assert where in ("host", "time"), "LOST from a namespace that cannot see its worker: %s" % notes
    ctx = "trial %s: %s" % (key, "; ".join(notes))
    assert not accepted_while_alive, "a second execution beside a 1.1.0 job, or from where it is unknown: %s %s" % (
        accepted_while_alive,
        ctx,
    )
    gate.touch()
    wait_until(lambda: not _group_alive(job["target_pid"]), 30, what="the 1.1.0 command to end")
    wait_until(lambda: stat_state(job["worker_pid"]) in (None, "Z"), 30, what="the 1.1.0 worker to end")
    assert len(_lines(marker)) == 1, "the 1.1.0 command ran %d times: %s" % (len(_lines(marker)), ctx)
    shown_end = _from(home, "host", "status", "--job-id", job["job_id"])
    if shown_end.code == 3:  # a reader's clean deleted it once it had ended
        assert any(n.startswith("clean") and "deleted" in n for n in notes), (shown_end.json, ctx)
        return stage
    final = shown_end.json
    if stage == "running":  # its worker recorded the end
        assert final["status"] == "SUCCEEDED", (final, ctx)
    else:
        assert final["status"] in TERMINAL, (final, ctx)
    return stage


# ===================================================================================================================
# 2. quick commands, reaped commands, recycled pids
# ===================================================================================================================
def _take_pid(wanted: int) -> subprocess.Popen | None:
    """A stranger (`sleep 300`, a session and group of its own) under the pid `wanted`, if it can be had."""
    for _ in range(20):
        try:
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(wanted - 1))
        except OSError:
            return None
        p = subprocess.Popen(["sleep", "300"], start_new_session=True, stdin=subprocess.DEVNULL)
        if p.pid == wanted:
            return p
        p.kill()
        p.wait()
    return None


def test_quick_commands_never_lead_a_signal_to_a_recycled_pid(home: Path, tmp_path: Path, rng) -> None:
    _root()
    strangers_started = 0
    for n in range(trials(6)):
        key = "quick-%03d" % n
        d = tmp_path / key
        d.mkdir()
        pids = d / "pids"
        shape = rng.choice(["exit", "children", "daemon"])
        code = rng.choice([0, 0, 3])
        spawn = {
            "exit": "",
            "children": "sleep 60 & echo $! >> %s; sleep 60 & echo $! >> %s;" % (pids, pids),
            "daemon": "setsid sh -c 'echo $$ >> %s; exec sleep 60' & " % pids,
        }[shape]
        command = ["sh", "-c", '%s echo "$$" >> %s; exit %d' % (spawn, pids, code)]
        hold = rng.random() < 0.6
        term_at = rng.choice([None, 0.0, 0.2, 0.6])
        holder = None
        if not hold:
            started = ok(home, "start", "--run-key", key, "--", *command)
        else:
            # the job starts, then the lock is taken while its command ends, so the end waits to be recorded
            go = d / "go"
            gated = [
                "sh",
                "-c",
                'while [ ! -e %s ]; do sleep 0.02; done; %s echo "$$" >> %s; exit %d' % (go, spawn, pids, code),
            ]
            started = ok(home, "start", "--run-key", key, "--", *gated)
            holder = sqlite3.connect(str(home / "orchesjob.db"), isolation_level=None, timeout=30)
            holder.execute("BEGIN IMMEDIATE")
            go.touch()
        assert started is not None
        sup = started["worker_pid"]
        strangers: list[subprocess.Popen] = []
        stop = threading.Event()

        def grab(started: dict[str, Any] = started) -> None:
            """Whenever a pid of the job is free again, put a stranger there."""
            tried: set[int] = set()
            while not stop.is_set():
                known = [started["target_pid"]] + [int(x) for x in _lines(pids) if x.isdigit()]
                for pid in known:
                    if pid not in tried and stat_state(pid) is None:
                        tried.add(pid)
                        p = _take_pid(pid)
                        if p is not None:
                            strangers.append(p)
                time.sleep(0.01)

        t = threading.Thread(target=grab, daemon=True)
        t.start()
        try:
            if term_at is not None:
                time.sleep(term_at)  # a random moment of the job's end (the point of the trial)
                try:
                    os.kill(sup, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            if holder is not None:
                time.sleep(rng.uniform(0.3, 1.5))  # the supervisor waits with the result meanwhile
                holder.execute("ROLLBACK")
            final = wait_terminal(home, started["job_id"])
            time.sleep(0.3)  # the grabber's last strangers are in place; a signal to one would have landed
        finally:
            stop.set()
            t.join(10)
            if holder is not None:
                holder.close()
        try:
            ctx = "trial %s: %s, exit %d, lock held %s, SIGTERM at %s; final %s %s; strangers %s" % (
                key,
                shape,
                code,
                hold,
                term_at,
                final["status"],
                final.get("end_reason"),
                [s.pid for s in strangers],
            )
            for s in strangers:
                assert s.poll() is None, "a stranger under a recycled pid of the job was signalled: " + ctx
            if final["status"] in ("SUCCEEDED", "FAILED"):
                # a SIGTERM to the supervisor while the command still ran is passed on to it
                passed_on = term_at is not None and final.get("signal_name") == "SIGTERM"
                assert final["exit_code"] == code or passed_on, ctx
            marker = ("ORCHESJOB_JOB_ID=%s" % started["job_id"]).encode()
            for pid in (int(x) for x in _lines(pids) if x.isdigit()):
                # still the job's: alive, no stranger of ours, and carrying the job's marker (the pid may have gone
                # to a process of anything else on the machine since)
                own = stat_state(pid) not in (None, "Z") and pid not in [s.pid for s in strangers]
                assert not (own and marker in environ(pid)), "process %d of the job outlived its end: %s" % (pid, ctx)
            strangers_started += len(strangers)
        finally:
            for s in strangers:
                s.kill()
                s.wait()
    print("strangers started under freed pids of jobs:", strangers_started)
