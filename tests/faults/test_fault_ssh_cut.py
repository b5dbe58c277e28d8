"""SSH cut mid-call: a TCP proxy (tests/support/cutproxy.py) in front of the real sshd drops connections at chosen
byte counts, and the provider must still get every job run exactly once and every log line delivered once.

Calibration first: three uncut `start`s through the proxy give the byte offsets of that SSH session's phases (login,
the exec request carrying the command line, the server's acknowledgement of it, the CLI's reply). The SSH packets
of a session are the same every time for command lines of the same length, so cuts can then be aimed at a phase:

- ``login``: anywhere in the handshake or authentication (either direction): the command is never sent;
- ``exec-request``: inside the exec request itself: the server never gets a whole command;
- ``exec-ack``: the server got the command (it runs), but its acknowledgement never reaches the client;
- ``reply``: in the middle of the CLI's answer;
- ``after-send``: the client's last packets (EOF, close) after the command went out.

Cuts are resets or orderly closes, and sometimes a blackhole (the link goes silent, both sockets stay open).

Each trial starts one job through ``OrchesjobHook.start`` (retries=3) with 1-4 of its connections cut, in the
``reuse_success``, ``default`` or ``strict`` mode. Then: exactly one physical execution (marker lines of
fault_job.py), the caller learned that job's id (or, when the hook gave up, a later start of the key - what the
task's retry does - returns it, and still only one ran), a hook that says the command was not sent is right about
it, and the hook never hangs past its timeouts.

A second kind of trial aims at "never twice", hole 5: the job fails at once, the first connection is cut at a random
point after the command was sent, and the hook's retries come a second later, when the job has already FAILED.
The retries repeat the call's request id, so the host answers them with that FAILED job instead of starting attempt 2:
one execution, in every mode.

The trigger's long poll gets the same treatment: random cuts on its asyncssh connections and random triggerer
restarts (a rebuild from ``serialize()``); every log line arrives exactly once, in order, and one terminal event
fires. And several triggers sharing one watcher, through random cuts and random triggerer crashes (every trigger
rebuilt from the kwargs it deferred with, as Airflow does): nothing skipped or reordered, repeats only across a
crash.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import importlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.faults.faultlib import FAULT_JOB, Evidence, history, ok, trials, wait_terminal
from tests.support.cli import TERMINAL, wait_until
from tests.support.cutproxy import C2S, CUT_CONN_ID, S2C, ConnRecord, Cut, CutProxy, Phases, phases_of
from tests.support.operator_unit import stop_run
from tests.support.procs import processes_of_home

pytestmark = [
    pytest.mark.timeout(1800),
    pytest.mark.sshd,
    pytest.mark.airflow,
    pytest.mark.usefixtures("airflow_available"),
]

COMMAND_TIMEOUT = 5.0  # seconds for one SSH call of the hook (login and channel open included)
EXEC_TIMEOUT = 6.0  # seconds for one `start` answer (the job itself is asynchronous)
HANG_LIMIT = 45.0  # a hook call (4 attempts at most EXEC_TIMEOUT each) that takes longer has hung


def make_hook(launcher: str, home: Path) -> Any:
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    return OrchesjobHook(
        CUT_CONN_ID,
        orchesjob_bin=launcher,
        orchesjob_home=str(home),
        retries=3,
        retry_backoff=0.1,
        command_timeout=COMMAND_TIMEOUT,
        ssh_hook_kwargs={"conn_retry_attempts": 1, "conn_timeout": 5, "banner_timeout": 5, "auth_timeout": 5},
    )


# ---------------------------------------------------------------------------------------------- calibration
def start_command(marker: Path, lock: Path, duration: str) -> list[str]:
    """fault_job.py with fixed-width arguments, so every trial's exec request has the same length."""
    return [sys.executable, FAULT_JOB, "--marker", str(marker), "--lock", str(lock), "--duration", duration]


def _shape(p: Phases) -> Phases:
    return dataclasses.replace(p, c_total=0, s_total=0)


def calibrate(cut_proxy: CutProxy, hook: Any, tmp: Path, home: Path) -> Phases:
    """Uncut sessions until two agree on their packet boundaries up to the answer (the answer's length and whether
    the client's final close makes it onto the wire vary, so the totals are the smallest seen). On a loaded machine
    the kernel sometimes coalesces two writes into one segment, so a session can differ: up to eight are tried."""
    sessions: list[Phases] = []
    for i in range(8):
        if i >= 2 and max(collections.Counter(_shape(p) for p in sessions).values()) >= 2:
            break
        cut_proxy.set_plan(lambda index: None)
        hook.close()
        before = len(cut_proxy.connections)
        job = hook.start("cal-%05d" % i, start_command(tmp / ("c%05d" % i), tmp / ("l%05d" % i), "0.00"))
        hook.close()
        wait_terminal(home, job["job_id"])
        wait_until(
            lambda: len(cut_proxy.connections) > before and all(r.closed for r in cut_proxy.connections[before:]),
            30,
            what="the proxy to see the calibration session closed",
        )
        recs = cut_proxy.connections[before:]
        assert len(recs) == 1, "calibration: expected one connection, got %d" % len(recs)
        sessions.append(phases_of(recs[0]))
    shape = collections.Counter(_shape(p) for p in sessions)
    common, count = shape.most_common(1)[0]
    assert count >= 2, "calibration: no two of %d sessions agree: %s" % (len(sessions), sessions)
    same = [p for p in sessions if _shape(p) == common]
    phases = dataclasses.replace(common, c_total=min(p.c_total for p in same), s_total=min(p.s_total for p in same))
    print("calibrated phases:", phases)
    return phases


# ---------------------------------------------------------------------------------------------- cut choice
PHASES = ("login", "exec-request", "exec-ack", "reply", "after-send")


def choose_cut(rng, p: Phases, phase: str) -> Cut:
    after_send = phase in ("exec-ack", "reply", "after-send")
    style = rng.choice(["rst", "fin"]) if not after_send or rng.random() > 0.12 else "blackhole"
    if phase == "login":
        if rng.random() < 0.5:
            return Cut(C2S, rng.randrange(0, p.c_login), style)
        return Cut(S2C, rng.randrange(0, p.s_login), style)
    if phase == "exec-request":
        return Cut(C2S, rng.randrange(p.c_exec[0], p.c_exec[1]), style)
    if phase == "exec-ack":
        return Cut(S2C, rng.randint(p.s_exec, p.s_reply), style)
    if phase == "reply":
        return Cut(S2C, rng.randrange(p.s_reply + 1, p.s_total), style)
    return Cut(C2S, rng.randrange(p.c_exec[1], p.c_total), style)


def run_with_watchdog(
    cut_proxy: CutProxy, fn, limit: float = HANG_LIMIT
) -> tuple[Any, BaseException | None, float | None]:
    """Run a hook call; if it has not returned after `limit` seconds, report it as hung and reset every
    connection so the thread can finish. Returns (result, exception, seconds it hung or None)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    started = time.monotonic()
    t.start()
    t.join(limit)
    hung = None
    if t.is_alive():
        hung = time.monotonic() - started
        while t.is_alive():
            cut_proxy.drop_all()
            t.join(1)
    return box.get("result"), box.get("error"), hung


# ---------------------------------------------------------------------------------------------- the start test
def test_hook_start_through_random_cuts_runs_the_job_exactly_once(
    cut_proxy: CutProxy, orchesjob_launcher: str, home: Path, tmp_path: Path, rng
) -> None:
    from orchesjob_provider.exceptions import OrchesjobTransportError

    hook = make_hook(orchesjob_launcher, home)
    try:
        hook.version()  # the contract check is cached; every trial's connections carry only `start`
        phases = calibrate(cut_proxy, hook, tmp_path, home)
        tally: dict[str, int] = collections.Counter()
        problems: list[str] = []
        n_trials = trials(20)
        for n in range(n_trials):
            key = "cut-%05d" % n
            marker, lock = tmp_path / ("m%05d" % n), tmp_path / ("k%05d" % n)
            mode = rng.choice(["reuse_success", "reuse_success", "default", "strict"])
            duration = rng.choice(["0.00", "0.00", "0.40", "2.00"])
            cuts = [choose_cut(rng, phases, rng.choice(PHASES)) for _ in range(rng.choice([1, 1, 2, 3, 4]))]
            hook.close()
            first = len(cut_proxy.connections)
            cut_proxy.set_plan(plan_of(cuts, first))
            job, error, hung = run_with_watchdog(
                cut_proxy,
                lambda: hook.start(key, start_command(marker, lock, duration), mode=mode, exec_timeout=EXEC_TIMEOUT),
            )
            cut_proxy.set_plan(lambda index: None)
            hook.close()
            conns = cut_proxy.connections[first:]
            ctx = "trial %d (%s, job %ss): cuts %s; connections %s" % (
                n,
                mode,
                duration,
                [(c.direction, c.after, c.style) for c in cuts],
                [(c.cut.direction if c.cut else None, c.cut_at, c.c2s, c.s2c) for c in conns],
            )
            if hung is not None:
                problems.append("hook.start did not return for %.0fs (hung until the proxy reset it): %s" % (hung, ctx))
            sent_claim = error.sent if isinstance(error, OrchesjobTransportError) else None
            if error is not None and not isinstance(error, OrchesjobTransportError):
                problems.append("hook.start raised %r: %s" % (error, ctx))
            if job is not None and job.get("run_key") != key:
                problems.append("hook.start returned a job of another key %r: %s" % (job.get("run_key"), ctx))

            # what physically happened before any recovery
            jobs_now = history(home, key)
            if error is not None and sent_claim is False and jobs_now:
                problems.append(
                    "the hook gave up saying the command was never sent, yet job %s exists: %s"
                    % (jobs_now[0]["job_id"], ctx)
                )
            learned = job["job_id"] if job is not None else None
            if learned is None:
                # the task's retry: a start of the same key, reuse_success, nothing cut
                again, error2, _ = run_with_watchdog(
                    cut_proxy,
                    lambda: hook.start(
                        key, start_command(marker, lock, duration), mode="reuse_success", exec_timeout=30
                    ),
                )
                assert error2 is None, "recovery start failed: %r; %s" % (error2, ctx)
                if jobs_now and again["job_id"] != jobs_now[0]["job_id"]:
                    problems.append("the retry did not return the job that was already there: %s" % ctx)
                learned = again["job_id"]
            for j in history(home, key):
                wait_terminal(home, j["job_id"])
            jobs = history(home, key)
            runs = Evidence(marker).executions()
            if [j["job_id"] for j in jobs] != [learned] or dict(runs) != {learned: 1}:
                problems.append(
                    "expected one job %s run once; jobs %s, executions %s: %s"
                    % (learned, [(j["job_id"], j["status"]) for j in jobs], dict(runs), ctx)
                )
            outcome = "returned" if job is not None else "gave up (sent=%s)" % sent_claim
            tally["%s: %s" % (mode, outcome)] += 1
            for c in conns:
                if c.cut is not None and c.cut_done:
                    tally["cut %s %s" % (c.cut.style, _phase_name(phases, c))] += 1
        print("SSH cut trials: %d; %s" % (n_trials, dict(sorted(tally.items()))))
        assert not problems, "%d problem(s) in %d trials:\n%s" % (len(problems), n_trials, "\n".join(problems))
    finally:
        hook.close()


def plan_of(cuts: list[Cut], first: int) -> Callable[[int], Cut | None]:
    """A proxy plan: the n-th connection from `first` on gets cuts[n], later ones none."""

    def plan(index: int) -> Cut | None:
        return cuts[index - first] if 0 <= index - first < len(cuts) else None

    return plan


def _phase_name(p: Phases, rec: ConnRecord) -> str:
    assert rec.cut_at is not None  # only cut connections are named
    direction, at = rec.cut_at
    if direction == C2S:
        if at < p.c_login:
            return "login"
        if at < p.c_exec[1]:
            return "exec-request"
        return "after-send"
    if at < p.s_login:
        return "login"
    if at < p.s_exec:
        return "before-exec"
    if at <= p.s_reply:
        return "exec-ack"
    return "reply"


def fails_fast_command(marker: Path, lock: Path) -> list[str]:
    """fault_job.py exiting 3 at once; `--exit=00000003` has the length of `--duration 0.00`, so the exec request
    is as long as the calibrated one."""
    return [sys.executable, FAULT_JOB, "--marker", str(marker), "--lock", str(lock), "--exit=00000003"]


def test_hook_start_of_a_job_that_fails_fast_through_cuts_after_send_runs_it_once(
    cut_proxy: CutProxy, orchesjob_launcher: str, home: Path, tmp_path: Path, rng
) -> None:
    """The second kind of the explorer ("never twice", hole 5): the job exits 3 at once; the first connection is cut
    at a random point after the command was sent (its acknowledgement, the reply, the client's last packets; reset,
    close or blackhole) and 0-3 later ones anywhere; the hook retries a second later, when the job has FAILED.
    A retry without the call's request id would start attempt 2 in the default and reuse_success modes.

    Asserted: one job and one physical execution, FAILED with exit 3; the hook returns it, or when it gives up it
    says the command was sent, and the same request repeated without cuts (the hook's next retry) returns that
    FAILED job and runs nothing."""
    from orchesjob_provider import command as cmd
    from orchesjob_provider.exceptions import OrchesjobTransportError

    hook = make_hook(orchesjob_launcher, home)
    hook.settings.retry.backoff = 1.0  # the job has failed by the time any retry arrives
    try:
        hook.version()
        phases = calibrate(cut_proxy, hook, tmp_path, home)
        tally: dict[str, int] = collections.Counter()
        problems: list[str] = []
        n_trials = trials(6)
        for n in range(n_trials):
            key = "fff-%05d" % n  # as long as the calibration's keys
            marker, lock = tmp_path / ("f%05d" % n), tmp_path / ("g%05d" % n)
            mode = rng.choice(["reuse_success", "default", "strict"])
            request_id = cmd.new_request_id()  # what the hook makes itself, kept to repeat the request below
            cuts = [choose_cut(rng, phases, rng.choice(["exec-ack", "reply", "reply", "after-send"]))]
            cuts += [choose_cut(rng, phases, rng.choice(PHASES)) for _ in range(rng.choice([0, 0, 1, 2, 3]))]
            hook.close()
            first = len(cut_proxy.connections)
            cut_proxy.set_plan(plan_of(cuts, first))
            job, error, hung = run_with_watchdog(
                cut_proxy,
                lambda key=key, marker=marker, lock=lock, mode=mode, request_id=request_id: hook.start(
                    key, fails_fast_command(marker, lock), mode=mode, exec_timeout=EXEC_TIMEOUT, request_id=request_id
                ),
            )
            cut_proxy.set_plan(lambda index: None)
            hook.close()
            conns = cut_proxy.connections[first:]
            ctx = "trial %d (%s): cuts %s; connections %s" % (
                n,
                mode,
                [(c.direction, c.after, c.style) for c in cuts],
                [(c.cut.direction if c.cut else None, c.cut_at, c.c2s, c.s2c) for c in conns],
            )
            if hung is not None:
                problems.append("hook.start did not return for %.0fs: %s" % (hung, ctx))
            if error is not None and not (isinstance(error, OrchesjobTransportError) and error.sent):
                problems.append(
                    "hook.start raised %r (it should be a transport error that was sent): %s" % (error, ctx)
                )
            if job is None:
                job, error2, _ = run_with_watchdog(
                    cut_proxy,
                    lambda key=key, marker=marker, lock=lock, mode=mode, request_id=request_id: hook.start(
                        key, fails_fast_command(marker, lock), mode=mode, exec_timeout=30, request_id=request_id
                    ),
                )
                assert error2 is None, "repeating the request failed: %r; %s" % (error2, ctx)
                if not job.get("same_request"):
                    problems.append("the repeated request was not answered as the same request: %s" % ctx)
                outcome = "gave up, the repeat returned it"
            else:
                outcome = "returned it" + (
                    " (FAILED, as the same request)"
                    if job.get("same_request") and job.get("status") == "FAILED"
                    else ""
                )
            for j in history(home, key):
                wait_terminal(home, j["job_id"])
            jobs = history(home, key)
            runs = Evidence(marker).executions()
            if [j["job_id"] for j in jobs] != [job["job_id"]] or dict(runs) != {job["job_id"]: 1}:
                problems.append(
                    "expected one job %s run once; jobs %s, executions %s: %s"
                    % (job["job_id"], [(j["job_id"], j["status"]) for j in jobs], dict(runs), ctx)
                )
            elif (jobs[0]["status"], jobs[0]["exit_code"]) != ("FAILED", 3):
                problems.append(
                    "the job ended %s (exit %s), not FAILED 3: %s" % (jobs[0]["status"], jobs[0]["exit_code"], ctx)
                )
            tally["%s: %s" % (mode, outcome)] += 1
            for c in conns:
                if c.cut is not None and c.cut_done:
                    tally["cut %s %s" % (c.cut.style, _phase_name(phases, c))] += 1
        print("fail-fast SSH cut trials: %d; %s" % (n_trials, dict(sorted(tally.items()))))
        assert not problems, "%d problem(s) in %d trials:\n%s" % (len(problems), n_trials, "\n".join(problems))
    finally:
        hook.close()


def test_default_mode_start_whose_exec_acknowledgement_is_lost_runs_once(
    cut_proxy: CutProxy, orchesjob_launcher: str, home: Path, tmp_path: Path
) -> None:
    """The one cut that matters most, made deterministic: the server receives the exec request (so the command
    runs) but the connection drops before its acknowledgement reaches the client. The command may have been sent,
    and the job is quick, so a default-mode repeat without the call's request id would run it a second time; with
    it, the host answers the repeat with the job the first attempt started."""
    from orchesjob_provider.exceptions import OrchesjobTransportError

    hook = make_hook(orchesjob_launcher, home)
    hook.settings.retry.backoff = 1.0  # give the quick job time to finish before any retry
    try:
        hook.version()
        phases = calibrate(cut_proxy, hook, tmp_path, home)
        hook.close()
        first = len(cut_proxy.connections)
        cut_proxy.set_plan(lambda index: Cut(S2C, phases.s_exec, "rst") if index == first else None)
        marker, lock = tmp_path / "m-ack", tmp_path / "l-ack"
        try:
            job = hook.start("ack-lost", start_command(marker, lock, "0.00"), mode="default", exec_timeout=EXEC_TIMEOUT)
            error = None
        except OrchesjobTransportError as exc:
            job, error = None, exc
        cut_proxy.set_plan(lambda index: None)
        assert cut_proxy.connections[first].cut_done, "the cut did not happen"

        def settled() -> bool:
            """The hook is done, so no retry comes any more; the host is done too once no process of its state
            directory is left (a `start` of the cut session still on its way, a supervisor, the command)."""
            if processes_of_home(home):
                return False
            jobs = history(home, "ack-lost")
            return bool(jobs) and all(j["status"] in TERMINAL for j in jobs)

        try:
            wait_until(settled, 30, what="the job to end")
        except AssertionError:
            pass  # the assertion below says what happened
        runs = Evidence(marker).executions()
        jobs = history(home, "ack-lost")
        assert sum(runs.values()) == 1 and len(jobs) == 1, (
            "a default-mode start whose exec acknowledgement was lost ran %d time(s) (jobs %s); the hook %s"
            % (
                sum(runs.values()),
                [(j["job_id"], j["status"]) for j in jobs],
                "returned job %s" % job["job_id"] if job else "raised %r (sent=%r)" % (error, error and error.sent),
            )
        )
        if error is not None:
            assert error.sent is True, "the hook says the command was never sent"
    finally:
        hook.close()


def test_hook_call_does_not_hang_when_the_link_goes_silent_after_the_exec_request(
    cut_proxy: CutProxy, orchesjob_launcher: str, home: Path, tmp_path: Path
) -> None:
    """A network partition right after the exec request (the server runs the command, nothing comes back, both
    sockets stay open): the hook's command_timeout must still bound the call, not leave the worker stuck."""
    hook = make_hook(orchesjob_launcher, home)
    try:
        hook.version()
        phases = calibrate(cut_proxy, hook, tmp_path, home)
        hook.close()
        first = len(cut_proxy.connections)
        cut_proxy.set_plan(lambda index: Cut(S2C, phases.s_exec, "blackhole") if index == first else None)
        marker, lock = tmp_path / "m-silent", tmp_path / "l-silent"
        job, error, hung = run_with_watchdog(
            cut_proxy,
            lambda: hook.start(
                "silent", start_command(marker, lock, "0.00"), mode="reuse_success", exec_timeout=EXEC_TIMEOUT
            ),
            limit=30,
        )
        cut_proxy.set_plan(lambda index: None)
        assert hung is None, (
            "OrchesjobHook.start hung for %.0fs after the link went silent between the exec "
            "request and its acknowledgement (command_timeout=%gs, exec_timeout=%gs)"
            % (hung, COMMAND_TIMEOUT, EXEC_TIMEOUT)
        )
        assert error is None, error
        runs = Evidence(marker).executions()
        assert dict(runs) == {job["job_id"]: 1}, runs
    finally:
        hook.close()


def test_a_connection_lost_while_closing_the_channel_does_not_hide_the_answer(
    cut_proxy: CutProxy, orchesjob_launcher: str, home: Path, tmp_path: Path
) -> None:
    """The connection drops in the server's last packets (exit status, EOF, close): the CLI's whole answer has
    arrived, then closing the channel fails. The hook must return the answer (or retry), never let the raw EOFError
    of paramiko's channel.close() escape. Each offset of the last 112 server bytes is one try."""
    from orchesjob_provider.exceptions import OrchesjobError

    hook = make_hook(orchesjob_launcher, home)
    try:
        hook.version()
        phases = calibrate(cut_proxy, hook, tmp_path, home)
        escaped = []
        for i, at in enumerate(range(phases.s_total - 112, phases.s_total, 8)):
            hook.close()
            first = len(cut_proxy.connections)
            cut_proxy.set_plan(plan_of([Cut(S2C, at, "rst")], first))
            marker, lock = tmp_path / ("m-close-%d" % i), tmp_path / ("l-close-%d" % i)
            try:
                hook.start(
                    "close-%05d" % i,
                    start_command(marker, lock, "0.00"),
                    mode="reuse_success",
                    exec_timeout=EXEC_TIMEOUT,
                )
            except OrchesjobError:
                pass
            except Exception as exc:  # noqa: BLE001 - what this test looks for
                escaped.append("cut at server byte %d of %d: %r" % (at, phases.s_total, exc))
        cut_proxy.set_plan(lambda index: None)
        assert not escaped, "hook.start let a raw exception escape:\n" + "\n".join(escaped)
    finally:
        hook.close()


def test_a_hook_that_gives_up_reports_the_command_as_sent_when_an_earlier_attempt_sent_it(
    cut_proxy: CutProxy, orchesjob_launcher: str, home: Path, tmp_path: Path
) -> None:
    """start retries after any failure. The first attempt reaches the host (the job starts) and loses its
    answer; the three retries all fail during login. The exception the caller gets must not say "never sent": the
    command did reach the host, and a caller trusting that flag would start the job again."""
    from orchesjob_provider.exceptions import OrchesjobTransportError

    hook = make_hook(orchesjob_launcher, home)
    try:
        hook.version()
        phases = calibrate(cut_proxy, hook, tmp_path, home)
        hook.close()
        first = len(cut_proxy.connections)
        cuts = {first: Cut(S2C, phases.s_reply + 10, "rst")}
        cuts.update({first + k: Cut(C2S, 100, "rst") for k in (1, 2, 3)})
        cut_proxy.set_plan(lambda index: cuts.get(index))
        marker, lock = tmp_path / "m-claim", tmp_path / "l-claim"
        with pytest.raises(OrchesjobTransportError) as info:
            hook.start("claim", start_command(marker, lock, "0.00"), mode="reuse_success", exec_timeout=EXEC_TIMEOUT)
        cut_proxy.set_plan(lambda index: None)
        assert len(history(home, "claim")) == 1, "the first attempt should have started the job"
        assert info.value.sent is True, (
            "the hook gave up with sent=False (its last attempt's view) although its first attempt "
            "started job %s" % history(home, "claim")[0]["job_id"]
        )
    finally:
        hook.close()


# ---------------------------------------------------------------------------------------------- the trigger
PRINTER = r"""
import json, sys, time
for stream, line, pause in json.load(open(sys.argv[1])):
    f = sys.stdout if stream == "stdout" else sys.stderr
    f.write(line + "\n")
    f.flush()
    time.sleep(pause)
"""
ALPHABET = "abcdefghij klmnopqrstuvwxyz0123456789 $()'\"`;|&*?~\\ é€✓日本🚀"


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        for stream in self.lines:
            if msg.startswith("[%s] " % stream):
                self.lines[stream].append(msg[len(stream) + 3 :])


def with_recorder(trigger: Any, recorder: Recorder) -> Any:
    logger = logging.getLogger("orchesjob-fault-trigger-%d" % id(trigger))
    logger.handlers = [recorder]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    trigger._log = logger
    return trigger


def rebuild(trigger: Any) -> Any:
    """What a triggerer restart does: serialize(), JSON round trip, import the class, construct again."""
    path, kwargs = trigger.serialize()
    kwargs = json.loads(json.dumps(kwargs))
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


async def drive(trigger: Any, recorder: Recorder, restarts: list[int], timeout: float) -> tuple[Any, bool, int]:
    """Run the trigger to its event, restarting it (rebuild from serialize) whenever the number of stdout lines
    logged reaches the next entry of `restarts`. Returns (event, generator ended after it, restarts done)."""
    deadline = time.monotonic() + timeout
    done = 0
    while True:
        gen = trigger.run()
        task = asyncio.ensure_future(gen.__anext__())
        while not task.done():
            if restarts and len(recorder.lines["stdout"]) >= restarts[0]:
                restarts.pop(0)
                await stop_run(task, gen)
                trigger = with_recorder(rebuild(trigger), recorder)
                done += 1
                break
            assert time.monotonic() < deadline, "the trigger fired nothing in %ss" % timeout
            await asyncio.sleep(0.01)
        else:
            event = task.result()
            try:
                await asyncio.wait_for(gen.__anext__(), 10)
                ended = False
            except StopAsyncIteration:
                ended = True
            await gen.aclose()
            return event, ended, done


def test_trigger_long_poll_through_random_cuts_and_restarts_logs_every_line_once(
    cut_proxy: CutProxy, sshd: Any, orchesjob_launcher: str, home: Path, tmp_path: Path, rng
) -> None:
    from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

    # each trial is a whole job watched through dozens of polls: a quarter of the full count is plenty
    n_trials = trials(4, full=max(4, int(os.environ.get("ORCHESJOB_FAULT_TRIALS") or 0) // 4))
    tally: dict[str, int] = collections.Counter()
    for n in range(n_trials):
        script = []
        for i in range(rng.randint(30, 80)):
            stream = "stderr" if rng.random() < 0.2 else "stdout"
            text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))
            script.append((stream, "%d %s" % (i, text), rng.choice([0, 0, 0.02, 0.1, 0.3])))
        lines_file = tmp_path / ("lines-%d.json" % n)
        lines_file.write_text(json.dumps(script))
        job = ok(home, "start", "--run-key", "poll-%d" % n, "--", sys.executable, "-c", PRINTER, str(lines_file))

        consecutive = [0]
        blackholes = [0]

        def plan(index: int) -> Cut | None:
            if consecutive[0] >= 3 or rng.random() < 0.25:
                consecutive[0] = 0
                return None
            consecutive[0] += 1
            if rng.random() < 0.5:
                return Cut(C2S, rng.randrange(0, 6000), "rst" if rng.random() < 0.5 else "fin")
            at = rng.randrange(0, 15000)
            if at > 5000 and blackholes[0] == 0 and rng.random() < 0.15:
                blackholes[0] += 1
                return Cut(S2C, at, "blackhole")
            return Cut(S2C, at, rng.choice(["rst", "fin"]))

        cut_proxy.set_plan(plan)
        first = len(cut_proxy.connections)
        stdout_lines = sum(1 for s, _, _ in script if s == "stdout")
        restarts = sorted(rng.sample(range(1, stdout_lines), rng.choice([0, 1, 2]))) if stdout_lines > 2 else []
        trigger = OrchesjobTrigger(
            ssh_conn_id=CUT_CONN_ID,
            job_id=job["job_id"],
            run_key="poll-%d" % n,
            orchesjob_bin=orchesjob_launcher,
            orchesjob_home=str(home),
            poll_timeout=rng.choice([1.0, 2.0, 5.0]),
            max_bytes=rng.choice([256, 1024, 65536]),
            max_connection_errors=8,
            retry_backoff=0.05,
            max_backoff=0.5,
            command_timeout=COMMAND_TIMEOUT,
            deadline=time.time() + 600,
        )
        recorder = Recorder()
        event, ended, restarted = asyncio.run(drive(with_recorder(trigger, recorder), recorder, list(restarts), 900))
        cut_proxy.set_plan(lambda index: None)
        conns = cut_proxy.connections[first:]
        cut = sum(1 for c in conns if c.cut_done)
        ctx = "trial %d: %d lines, %d connections, %d cut, restarts at %s" % (n, len(script), len(conns), cut, restarts)
        payload = event.payload
        assert payload["status"] == "terminal", "%s: %s" % (ctx, payload)
        assert ended, "the trigger fired more than once: " + ctx
        assert payload["job"]["status"] == "SUCCEEDED" and payload["job"]["job_id"] == job["job_id"], ctx
        for stream in ("stdout", "stderr"):
            expected = [line for s, line, _ in script if s == stream]
            got = recorder.lines[stream]
            if got != expected:
                missing = collections.Counter(expected) - collections.Counter(got)
                extra = collections.Counter(got) - collections.Counter(expected)
                raise AssertionError(
                    "%s: %s lines differ; lost %s; duplicated or foreign %s"
                    % (ctx, stream, list(missing)[:5], list(extra)[:5])
                )
        size = len("".join(line + "\n" for s, line, _ in script if s == "stdout").encode())
        assert payload["stdout_offset"] == size, ctx
        print(
            ctx,
            [
                (c.cut.direction if c.cut else None, c.cut.after if c.cut else None, c.cut_done, c.c2s, c.s2c)
                for c in conns
            ],
        )
        tally["connections"] += len(conns)
        tally["cut"] += cut
        tally["restarts"] += restarted
        tally["lines"] += len(script)
    print("trigger trials: %d; %s" % (n_trials, dict(tally)))


def _slices(got: list[str], expected: list[str]) -> list[tuple[int, int]] | None:
    """`got` as consecutive slices of `expected` (whose lines are all different), each starting at or before the end
    of the one before (a restart may repeat, never skip) and the last one reaching the end; None when `got` is not
    of that shape (a line lost, or out of order)."""
    where = {line: i for i, line in enumerate(expected)}
    out: list[tuple[int, int]] = []
    i, end = 0, 0
    while i < len(got):
        start = where.get(got[i])
        if start is None or start > end:
            return None
        j = start
        while i < len(got) and j < len(expected) and expected[j] == got[i]:
            i, j = i + 1, j + 1
        out.append((start, j))
        end = j
    return out if end == len(expected) else None


def test_shared_watcher_through_random_cuts_and_triggerer_crashes_loses_no_line(
    cut_proxy: CutProxy, sshd: Any, orchesjob_launcher: str, home: Path, tmp_path: Path, rng
) -> None:
    """Several triggers on one destination share one watcher. Their connection is cut at random byte counts, and
    at random moments the "triggerer crashes": every trigger is cancelled and rebuilt from the kwargs it deferred
    with (offsets 0, as Airflow stores them), not from serialize(). Each trigger must fire one terminal event, and
    each stream's lines must arrive in order with nothing skipped; a line may repeat only across a crash, resuming
    at most one answer back (the host's cursor holds what was delivered before the last call)."""
    from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

    n_trials = trials(2, full=max(2, int(os.environ.get("ORCHESJOB_FAULT_TRIALS") or 0) // 8))
    tally: dict[str, int] = collections.Counter()
    for n in range(n_trials):
        jobs: list[tuple[str, list[tuple[str, str, float]]]] = []
        for k in range(rng.randint(3, 6)):
            script = []
            for i in range(rng.randint(20, 50)):
                stream = "stderr" if rng.random() < 0.2 else "stdout"
                text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 30)))
                script.append((stream, "%d.%d %s" % (k, i, text), rng.choice([0, 0, 0.02, 0.1, 0.2])))
            path = tmp_path / ("w-%d-%d.json" % (n, k))
            path.write_text(json.dumps(script))
            job = ok(home, "start", "--run-key", "w-%d-%d" % (n, k), "--", sys.executable, "-c", PRINTER, str(path))
            jobs.append((job["job_id"], script))

        consecutive = [0]

        def plan(index: int) -> Cut | None:
            if consecutive[0] >= 2 or rng.random() < 0.4:
                consecutive[0] = 0
                return None
            consecutive[0] += 1
            return Cut(rng.choice([C2S, S2C]), rng.randrange(0, 20000), rng.choice(["rst", "fin"]))

        cut_proxy.set_plan(plan)
        first_conn = len(cut_proxy.connections)
        poll = rng.choice([1.0, 3.0, 10.0])
        deferred = [
            {
                "ssh_conn_id": CUT_CONN_ID,
                "job_id": job_id,
                "run_key": "w-%d-%d" % (n, k),
                "orchesjob_bin": orchesjob_launcher,
                "orchesjob_home": str(home),
                "poll_timeout": poll,
                "max_bytes": rng.choice([256, 4096, 65536]),
                "max_connection_errors": 10,
                "retry_backoff": 0.05,
                "max_backoff": 0.5,
                "command_timeout": COMMAND_TIMEOUT,
                "deadline": time.time() + 600,
                "request_id": "dag.task.run-%d.try1.%d" % (n, k),
            }
            for k, (job_id, _) in enumerate(jobs)
        ]
        recorders = [Recorder() for _ in jobs]
        crashes = sorted(rng.uniform(0.3, 4.0) for _ in range(rng.choice([0, 1, 2, 3])))

        async def run_all(crashes: list[float] = crashes) -> list[Any]:
            events: list[Any] = [None] * len(deferred)
            t0 = time.monotonic()
            while True:
                triggers = [
                    with_recorder(OrchesjobTrigger(**json.loads(json.dumps(kw))), recorders[k])
                    for k, kw in enumerate(deferred)
                    if events[k] is None
                ]
                index = [k for k in range(len(deferred)) if events[k] is None]
                gens = [t.run() for t in triggers]
                tasks = [asyncio.ensure_future(g.__anext__()) for g in gens]
                crash_at = crashes.pop(0) if crashes else None
                timeout = None if crash_at is None else max(0.0, t0 + crash_at - time.monotonic())
                await asyncio.wait(tasks, timeout=timeout if timeout is not None else 600)
                for k, task, gen in zip(index, tasks, gens):
                    if task.done():
                        events[k] = task.result().payload
                    else:
                        task.cancel()  # the triggerer died: this trigger will be rebuilt from its deferral kwargs
                        try:
                            await task
                        except (asyncio.CancelledError, StopAsyncIteration):
                            pass
                    await gen.aclose()
                if all(e is not None for e in events):
                    return events
                assert crash_at is not None, "triggers fired nothing in 600 s"
                tally["crashes"] += 1

        events = asyncio.run(run_all())
        cut_proxy.set_plan(lambda index: None)
        conns = cut_proxy.connections[first_conn:]
        tally["connections"] += len(conns)
        tally["cut"] += sum(1 for c in conns if c.cut_done)
        for k, ((job_id, script), event) in enumerate(zip(jobs, events)):
            ctx = "trial %d job %d (%s): poll %s" % (n, k, job_id[:8], poll)
            assert event["status"] == "terminal" and event["job"]["status"] == "SUCCEEDED", (ctx, event)
            for stream in ("stdout", "stderr"):
                expected = [line for s, line, _ in script if s == stream]
                got = recorders[k].lines[stream]
                cut = _slices(got, expected)
                assert cut is not None, "%s: %s lines lost or out of order: got %d of %d" % (
                    ctx,
                    stream,
                    len(got),
                    len(expected),
                )
                tally["repeated"] += len(got) - len(expected)
        tally["trials"] += 1
    print("shared-watcher trials: %s" % dict(tally))
