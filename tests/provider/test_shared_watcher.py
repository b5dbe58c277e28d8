"""Many triggers, one watcher: real sshd, the real CLI, triggers run as the triggerer runs them (one event loop).

What must hold with watching shared per destination: one SSH connection and at most one `wait` process on the host
for all jobs of one host, each line of each job logged exactly once and in order, one terminal event per trigger,
one trigger's end (job ended, cleaned, task killed) never disturbing the others, a transport cut retried for all,
and a trigger rebuilt from the kwargs it deferred with (a triggerer crash) resuming where the last one delivered.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import shlex
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchesjob_provider import watcher as watcher_mod
from orchesjob_provider.hooks.orchesjob import OrchesjobHook
from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger
from tests.support.cutproxy import CUT_CONN_ID, CutProxy
from tests.support.operator_unit import Recorder, record_log

pytestmark = [pytest.mark.timeout(240), pytest.mark.sshd, pytest.mark.airflow]

CONN_ID = "orchesjob_test"  # the conftest's connection to the sshd, without the proxy


@pytest.fixture
def watchers() -> Iterator[dict[tuple[Any, ...], watcher_mod.SharedWatcher]]:
    """The module's registry of shared watchers, empty for this test (other tests' triggers use it too, and one
    whose event loop ended early can leave its watcher there); what it held before is put back afterwards."""
    saved = dict(watcher_mod._WATCHERS)
    watcher_mod._WATCHERS.clear()
    try:
        yield watcher_mod._WATCHERS
    finally:
        watcher_mod._WATCHERS.clear()
        watcher_mod._WATCHERS.update(saved)


def loop_watchers() -> dict[str, watcher_mod.SharedWatcher]:
    """The shared watchers of the running event loop, by connection id (the registry's key: loop, then the
    destination: connection id, CLI, state directory)."""
    loop = id(asyncio.get_running_loop())
    return {key[1]: w for key, w in watcher_mod._WATCHERS.items() if key[0] == loop}


async def until(condition: Any, what: str, timeout: float = 60) -> None:
    """Wait, in the event loop, until `condition()` holds; fail after `timeout` seconds saying `what` never came."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f}s"
        await asyncio.sleep(0.02)


def numbered_job(name: str, lines: int, gate: Path | None = None, pause: float = 0.02) -> list[str]:
    """Prints `name-1` .. `name-N` (and waits for `gate` halfway, if given), then one stderr line."""
    wait = (
        f'if [ "$i" = {lines // 2} ]; then while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.05; done; fi; '
        if gate
        else ""
    )
    script = (
        f'i=0; while [ "$i" -lt {lines} ]; do i=$((i+1)); echo {shlex.quote(name)}-$i; {wait}'
        f"sleep {pause}; done; echo {shlex.quote(name)}-err >&2"
    )
    return ["/bin/sh", "-c", script]


def delivered(home: str, job_id: str, cursor: str) -> int | None:
    """The stdout offset the host has recorded as delivered under `cursor` (None before the first record)."""
    c = sqlite3.connect(f"file:{home}/orchesjob.db?mode=ro", uri=True, timeout=10)
    try:
        row = c.execute(
            "SELECT stdout_offset FROM watch_cursors WHERE job_id = ? AND cursor = ?", (job_id, cursor)
        ).fetchone()
    finally:
        c.close()
    return None if row is None else int(row[0])


def expected(name: str, lines: int) -> list[str]:
    return [f"{name}-{i}" for i in range(1, lines + 1)]


def host_waits(home: str) -> int:
    """How many `wait` processes of the state directory `home` are alive on this (the "remote") host now: a `wait`
    command line (`orchesjob wait --request -`: the state directory is in its request) with that directory's database
    open."""
    db = os.path.join(home, "orchesjob.db")
    n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if b"wait" not in argv:
                continue
            fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        if db in fds:
            n += 1
    return n


class HostWaits:
    """Counts, in a thread, the `wait` processes of one state directory alive at once on this (the "remote") host."""

    def __init__(self, home: str) -> None:
        self.home = home
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.most = max(self.most, host_waits(self.home))
            time.sleep(0.02)  # the sampling interval

    def __enter__(self) -> HostWaits:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def trigger_for(conn_id: str, launcher: str, home: str, job_id: str, **kwargs: Any) -> OrchesjobTrigger:
    kwargs.setdefault("poll_timeout", 20)
    kwargs.setdefault("retry_backoff", 0.1)
    return OrchesjobTrigger(
        ssh_conn_id=conn_id, job_id=job_id, run_key="rk", orchesjob_bin=launcher, orchesjob_home=home, **kwargs
    )


async def fire(trigger: OrchesjobTrigger) -> Any:
    """Run the trigger to its (single) event, as the triggerer does."""
    gen = trigger.run()
    try:
        event = await gen.__anext__()
        with pytest.raises(StopAsyncIteration):
            await gen.__anext__()
        return event.payload
    finally:
        await gen.aclose()


def test_many_jobs_on_one_host_share_one_connection_and_one_host_process(
    hook: OrchesjobHook,
    cut_proxy: CutProxy,
    orchesjob_launcher: str,
    orchesjob_home: str,
    watchers: dict,
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    names = [f"job{i:02d}" for i in range(24)]
    jobs = {
        n: hook.start(f"many-{n}", numbered_job(n, 12, gate, pause=0.05 + 0.01 * (i % 5))) for i, n in enumerate(names)
    }
    triggers = {
        n: trigger_for(CUT_CONN_ID, orchesjob_launcher, orchesjob_home, jobs[n]["job_id"], request_id=f"try-{n}")
        for n in names
    }
    logs = {n: record_log(t) for n, t in triggers.items()}

    async def scenario(waits: HostWaits) -> list[Any]:
        fired = asyncio.gather(*(fire(t) for t in triggers.values()))
        # Every job stops at the gate after 6 lines (starting 24 jobs can take longer than a job runs, so without
        # it the first ones could end before anything watches them): once each trigger has logged its 6 lines, all
        # 24 are subscribed and still running, and the watcher's one `wait` call must show on the host.
        await until(lambda: all(len(logs[n].lines("stdout")) >= 6 for n in names), "6 lines from every trigger")
        await until(lambda: waits.most >= 1, "a wait process on the host while all 24 jobs wait at the gate")
        await asyncio.to_thread(gate.touch)
        return await asyncio.wait_for(fired, 120)

    with HostWaits(orchesjob_home) as waits:
        events = asyncio.run(scenario(waits))
    for n, payload in zip(names, events):
        assert payload["status"] == "terminal" and payload["job"]["status"] == "SUCCEEDED", payload
        assert logs[n].lines("stdout") == expected(n, 12), n  # every line once, in order
        assert logs[n].lines("stderr") == [f"{n}-err"]
    assert len(cut_proxy.connections) == 1, "all triggers of one destination share one SSH connection"
    assert waits.most == 1, "one wait process on the host at a time for all of them"
    assert not watchers, "the last subscriber leaving closes the watcher"


def test_chatty_jobs_cost_a_call_per_gather_window_not_a_call_per_line(
    hook: OrchesjobHook, orchesjob_launcher: str, orchesjob_home: str, watchers: dict
) -> None:
    names = [f"chat{i}" for i in range(10)]
    lines = 30  # a line every 0.2 s for 6 s each: 300 lines in all, about 50 a second
    jobs = {n: hook.start(f"chatty-{n}", numbered_job(n, lines, pause=0.2)) for n in names}
    triggers = {
        n: trigger_for(CONN_ID, orchesjob_launcher, orchesjob_home, jobs[n]["job_id"], request_id=f"try-{n}")
        for n in names
    }
    logs = {n: record_log(t) for n, t in triggers.items()}
    seen: list[watcher_mod.SharedWatcher] = []

    async def scenario() -> list[Any]:
        fired = asyncio.gather(*(fire(t) for t in triggers.values()))
        # once every trigger has logged a line, every job is subscribed (and still running: 6 s of output)
        await until(lambda: all(logs[n].lines("stdout") for n in names), "a first line from every trigger")
        seen.extend(loop_watchers().values())
        return await asyncio.wait_for(fired, 120)

    events = asyncio.run(scenario())
    assert all(p["status"] == "terminal" and p["job"]["status"] == "SUCCEEDED" for p in events), events
    for n in names:
        assert logs[n].lines("stdout") == expected(n, lines), n  # every line once, in order
    assert len(seen) == 1
    # without gathering a call answers the first new line: as many calls as round trips fit in 6 s (44 here); with
    # it, about one per second of output, plus one per end and per newcomer (13 here)
    assert seen[0].calls <= 25, f"{seen[0].calls} wait calls for 300 lines in about 6 s"


def test_jobs_on_two_destinations_get_a_watcher_each(
    hook: OrchesjobHook,
    cut_proxy: CutProxy,
    ssh_conn_id: str,
    orchesjob_launcher: str,
    orchesjob_home: str,
    tmp_path: Path,
    watchers: dict,
) -> None:
    gate = tmp_path / "gate"
    a = hook.start("two-a", numbered_job("a", 6, gate))
    b = hook.start("two-b", numbered_job("b", 6, gate))
    ta = trigger_for(ssh_conn_id, orchesjob_launcher, orchesjob_home, a["job_id"])
    tb = trigger_for(CUT_CONN_ID, orchesjob_launcher, orchesjob_home, b["job_id"])
    la, lb = record_log(ta), record_log(tb)
    seen: list[list[str]] = []

    async def scenario() -> tuple[Any, Any]:
        both = asyncio.gather(fire(ta), fire(tb))
        # Both jobs stop at the gate after 3 lines: once both triggers have logged them, both are subscribed, and
        # stay so until the gate opens.
        await until(lambda: len(la.lines("stdout")) >= 3 and len(lb.lines("stdout")) >= 3, "3 lines of each job")
        seen.append(sorted(loop_watchers()))
        await asyncio.to_thread(gate.touch)
        return await asyncio.wait_for(both, 60)

    events = asyncio.run(scenario())
    assert [e["status"] for e in events] == ["terminal", "terminal"]
    assert la.lines("stdout") == expected("a", 6) and lb.lines("stdout") == expected("b", 6)
    assert seen == [sorted([ssh_conn_id, CUT_CONN_ID])] and len(cut_proxy.connections) == 1


def test_a_killed_subscriber_and_a_cleaned_job_leave_the_others_alone(
    hook: OrchesjobHook, orchesjob_launcher: str, orchesjob_home: str, ssh_conn_id: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    keep = hook.start("keep", numbered_job("keep", 10, gate))
    killed = hook.start("killed", numbered_job("killed", 10, gate))
    cleaned = hook.start("cleaned", ["true"])
    t_keep = trigger_for(ssh_conn_id, orchesjob_launcher, orchesjob_home, keep["job_id"])
    t_killed = trigger_for(ssh_conn_id, orchesjob_launcher, orchesjob_home, killed["job_id"])
    l_keep, l_killed = record_log(t_keep), record_log(t_killed)

    async def scenario() -> tuple[Any, Any]:
        keep_task = asyncio.ensure_future(fire(t_keep))
        killed_task = asyncio.ensure_future(fire(t_killed))
        deadline = time.monotonic() + 60
        while len(l_keep.lines("stdout")) < 5 or len(l_killed.lines("stdout")) < 5:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        killed_task.cancel()  # the task was killed: its trigger is cancelled
        with pytest.raises(asyncio.CancelledError):
            await killed_task
        # a job cleaned away while watched: its trigger errors, the other one goes on
        await asyncio.to_thread(lambda: _wait_ended(hook, cleaned["job_id"]))
        t_cleaned = trigger_for(ssh_conn_id, orchesjob_launcher, orchesjob_home, cleaned["job_id"])
        await asyncio.to_thread(hook.clean, job_id=cleaned["job_id"])
        cleaned_event = await asyncio.wait_for(fire(t_cleaned), 60)
        await asyncio.to_thread(gate.touch)
        return cleaned_event, await asyncio.wait_for(keep_task, 60)

    cleaned_event, keep_event = asyncio.run(scenario())
    assert cleaned_event["status"] == "error" and cleaned_event["error_type"] == "not_found"
    assert keep_event["status"] == "terminal" and keep_event["job"]["status"] == "SUCCEEDED"
    assert l_keep.lines("stdout") == expected("keep", 10)
    assert l_killed.lines("stdout") == expected("killed", 5)  # nothing more reached the cancelled trigger


def _wait_ended(hook: OrchesjobHook, job_id: str) -> None:
    deadline = time.monotonic() + 30
    while hook.status(job_id=job_id)["active"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_transport_cut_is_retried_for_all_subscribers(
    hook: OrchesjobHook, cut_proxy: CutProxy, orchesjob_launcher: str, orchesjob_home: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    names = ["cut1", "cut2", "cut3"]
    jobs = {n: hook.start(f"cut-{n}", numbered_job(n, 8, gate)) for n in names}
    triggers = {
        n: trigger_for(
            CUT_CONN_ID,
            orchesjob_launcher,
            orchesjob_home,
            jobs[n]["job_id"],
            retry_backoff=0.2,
            max_connection_errors=5,
        )
        for n in names
    }
    logs = {n: record_log(t) for n, t in triggers.items()}

    async def scenario() -> list[Any]:
        run = asyncio.gather(*(fire(t) for t in triggers.values()))
        deadline = time.monotonic() + 60
        while any(len(logs[n].lines("stdout")) < 4 for n in names):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await asyncio.to_thread(cut_proxy.drop_all)  # the link drops in the middle of a long poll
        # the jobs go on only once the watcher has noticed the cut (it logs its retry), so the rest of their
        # output comes over the new connection
        await until(lambda: any("retry" in m for n in names for m in logs[n].messages()), "the cut noticed")
        await asyncio.to_thread(gate.touch)
        return await asyncio.wait_for(run, 90)

    events = asyncio.run(scenario())
    assert all(e["status"] == "terminal" and e["job"]["status"] == "SUCCEEDED" for e in events)
    for n in names:
        assert logs[n].lines("stdout") == expected(n, 8), n
    assert len(cut_proxy.connections) >= 2  # it did reconnect
    assert any("retry" in m for n in names for m in logs[n].messages()), "the cut was not noticed as one"


def test_a_new_subscriber_does_not_wait_for_the_poll_in_flight(
    hook: OrchesjobHook, ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str
) -> None:
    quiet = hook.start("quiet", ["sleep", "60"])
    quick = hook.start("quick", ["/bin/sh", "-c", "echo fast"])
    t_quiet = trigger_for(ssh_conn_id, orchesjob_launcher, orchesjob_home, quiet["job_id"], poll_timeout=60)
    t_quick = trigger_for(ssh_conn_id, orchesjob_launcher, orchesjob_home, quick["job_id"], poll_timeout=60)
    l_quick = record_log(t_quick)

    async def scenario() -> float:
        quiet_task = asyncio.ensure_future(fire(t_quiet))
        # the watcher's call is on the host: a 60 s long poll for the quiet job (it has no news to answer with)
        await until(lambda: host_waits(orchesjob_home) == 1, "the watcher's long poll on the host")
        t0 = time.monotonic()
        event = await asyncio.wait_for(fire(t_quick), 30)
        took = time.monotonic() - t0
        assert event["status"] == "terminal"
        quiet_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await quiet_task
        return took

    try:
        took = asyncio.run(scenario())
    finally:
        hook.abort(job_id=quiet["job_id"], grace_seconds=1)
    assert took < 10, f"the new trigger waited {took:.1f}s for the long poll in flight"
    assert l_quick.lines("stdout") == ["fast"]


# What Airflow 3's triggerer binds in each trigger's task before it runs the trigger (structlog context variables),
# and reads back for every log line to pick the trigger's log file.
TRIGGER_OF_LINE: contextvars.ContextVar[str | None] = contextvars.ContextVar("trigger_of_line", default=None)


class ByContext(logging.Handler):
    """Records (the trigger named by the context where the record was made, message), as the triggerer routes."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str | None, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((TRIGGER_OF_LINE.get(), record.getMessage()))


def test_each_jobs_lines_are_logged_in_its_own_triggers_context(
    hook: OrchesjobHook, ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str, tmp_path: Path, watchers: dict
) -> None:
    """Three triggers on one watcher, each run in a task of its own with its name bound in a context variable, the
    way the triggerer runs them; all three log through one logger, as in a triggerer. Every line must be logged in
    its own trigger's context: the triggerer files a line under the trigger its context names. (The watcher's loop
    is one task for all of them; it used to log every job's lines in the context of the trigger that started it.)"""
    gate = tmp_path / "gate"
    names = ["first", "second", "third"]
    jobs = {n: hook.start(f"ctx-{n}", numbered_job(n, 6, gate=gate)) for n in names}
    triggers = {
        n: trigger_for(ssh_conn_id, orchesjob_launcher, orchesjob_home, jobs[n]["job_id"], request_id=f"try-{n}")
        for n in names
    }
    handler = ByContext()
    shared = logging.getLogger(f"orchesjob-test-triggerer-{id(handler)}")
    shared.handlers = [handler]
    shared.setLevel(logging.INFO)
    shared.propagate = False
    for t in triggers.values():
        setattr(t, "_log", shared)  # noqa: B010 - LoggingMixin's logger, as record_log() sets it

    async def run_as_triggerer(name: str) -> Any:
        TRIGGER_OF_LINE.set(name)  # in this trigger's task only, like the triggerer's bind_log_contextvars
        return await fire(triggers[name])

    async def scenario() -> list[Any]:
        tasks = []
        for n in names:  # one after the other, so the first one starts the watcher's loop
            tasks.append(asyncio.ensure_future(run_as_triggerer(n)))
            await until(lambda n=n: any(m == f"[stdout] {n}-1" for _, m in handler.records), f"{n}'s first line")
        gate.touch()  # the rest of every job's lines come through the loop the first trigger started
        return await asyncio.wait_for(asyncio.gather(*tasks), 120)

    events = asyncio.run(scenario())
    assert [e["status"] for e in events] == ["terminal"] * 3, events
    for n in names:
        mine = [m[len("[stdout] ") :] for who, m in handler.records if m.startswith(f"[stdout] {n}-")]
        assert mine == expected(n, 6), n
        filed = {who for who, m in handler.records if m.startswith(f"[stdout] {n}-") or m == f"[stderr] {n}-err"}
        assert filed == {n}, f"{n}'s lines were logged in the context of {sorted(map(str, filed))}"


def test_a_trigger_rebuilt_from_its_deferral_kwargs_resumes_where_the_last_one_delivered(
    hook: OrchesjobHook, ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str, tmp_path: Path
) -> None:
    """A triggerer crash: Airflow rebuilds the trigger from the kwargs stored when the task deferred (offsets 0),
    not from a later serialize(). The try's cursor on the host makes the new trigger start where the old one had
    delivered; only what was delivered after the old one's last call can repeat, and the log says where."""
    gate = tmp_path / "gate"
    job = hook.start("crash", numbered_job("crash", 20, gate, pause=0.01))
    deferral: dict[str, Any] = {
        "ssh_conn_id": ssh_conn_id,
        "job_id": job["job_id"],
        "run_key": "crash",
        "orchesjob_bin": orchesjob_launcher,
        "orchesjob_home": orchesjob_home,
        "poll_timeout": 20,
        "request_id": "dag.task.run.1",
    }
    first = OrchesjobTrigger(**deferral)
    l_first = record_log(first)
    ten = len("".join(f"{line}\n" for line in expected("crash", 10)).encode())  # the bytes of lines 1-10

    async def until_crash() -> None:
        task = asyncio.ensure_future(fire(first))
        deadline = time.monotonic() + 60
        while len(l_first.lines("stdout")) < 10:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        # the next call (a quiet poll: the job waits at the gate) tells the host that lines 1-10 were delivered
        await until(lambda: delivered(orchesjob_home, job["job_id"], "dag.task.run.1") == ten, "the cursor recorded")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(until_crash())
    assert l_first.lines("stdout") == expected("crash", 10)
    second = OrchesjobTrigger(**json.loads(json.dumps(deferral)))  # the stored kwargs, not serialize()
    l_second = record_log(second)
    gate.touch()
    event = asyncio.run(asyncio.wait_for(fire(second), 60))
    assert event["status"] == "terminal"
    assert l_second.lines("stdout") == expected("crash", 20)[10:], "neither the whole log again, nor a gap"
    notes = [m for m in l_second.messages() if "resumes at byte" in m]
    assert len(notes) == 1 and "may appear twice" in notes[0]
    # another try (another request id) has a cursor of its own: it starts from what its kwargs say
    third = OrchesjobTrigger(**dict(deferral, request_id="dag.task.run.2"))
    l_third = record_log(third)
    asyncio.run(asyncio.wait_for(fire(third), 60))
    assert l_third.lines("stdout") == expected("crash", 20)


def test_per_trigger_watching_is_still_available(
    hook: OrchesjobHook, cut_proxy: CutProxy, orchesjob_launcher: str, orchesjob_home: str
) -> None:
    jobs = [hook.start(f"own-{i}", numbered_job(f"own{i}", 4)) for i in range(3)]
    triggers = [
        trigger_for(CUT_CONN_ID, orchesjob_launcher, orchesjob_home, j["job_id"], shared_watcher=False) for j in jobs
    ]
    logs: list[Recorder] = [record_log(t) for t in triggers]

    async def scenario() -> list[Any]:
        return await asyncio.wait_for(asyncio.gather(*(fire(t) for t in triggers)), 60)

    events = asyncio.run(scenario())
    assert all(e["status"] == "terminal" for e in events)
    for i, rec in enumerate(logs):
        assert rec.lines("stdout") == expected(f"own{i}", 4)
    assert len(cut_proxy.connections) == 3  # one connection per trigger, as before shared watching


MISSING_CONN_ID = "orchesjob_only_on_workers"  # defined in the workers' environment, not in the triggerer's


class CountingTrigger(OrchesjobTrigger):
    """Counts the hooks its watcher makes: each one is a fresh attempt of the watcher's loop to work at all."""

    made: list[float]

    def _make_hook(self, check_version: bool = True) -> Any:
        self.made.append(time.monotonic())
        return super()._make_hook(check_version)


def counting_triggers(made: list[float], home: str, n: int, **kwargs: Any) -> list[CountingTrigger]:
    triggers = []
    for i in range(n):
        trigger = CountingTrigger(
            ssh_conn_id=MISSING_CONN_ID,
            job_id=f"job-{i}",
            run_key=f"rk-{i}",
            orchesjob_bin="/usr/bin/orchesjob",
            orchesjob_home=home,
            **kwargs,
        )
        trigger.made = made
        triggers.append(trigger)
    return triggers


def test_a_watcher_that_cannot_work_backs_off_instead_of_spinning(
    orchesjob_home: str, watchers: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection id exists only in the workers' environment: every attempt of the watcher fails before SSH.
    It used to restart its loop at once, forever (thousands of times a second, a whole CPU, no trigger ever
    fired). Now each failure is counted and backed off like an SSH failure, with the default settings."""
    monkeypatch.delenv(f"AIRFLOW_CONN_{MISSING_CONN_ID.upper()}", raising=False)
    made: list[float] = []
    triggers = counting_triggers(made, orchesjob_home, 3)  # default retries: 5 failures, 2 s backoff doubling
    logs = [record_log(t) for t in triggers]

    async def scenario() -> list[bool]:
        tasks = [asyncio.ensure_future(fire(t)) for t in triggers]
        await asyncio.sleep(10)
        done = [task.done() for task in tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return done

    cpu = time.process_time()
    done = asyncio.run(scenario())
    cpu = time.process_time() - cpu
    assert not any(done)  # still within their patience: 2 + 4 + 8 s of backoff is more than 10 s
    assert 1 <= len(made) <= 10, f"{len(made)} attempts in 10 s"
    assert cpu < 4, f"{cpu:.1f} s of CPU in 10 s of waiting"
    warnings = [m for log in logs for m in log.messages() if "retry" in m]
    assert warnings and MISSING_CONN_ID in warnings[0], warnings


@pytest.mark.parametrize("shared", [True, False], ids=["shared-watcher", "own-watcher"])
def test_a_trigger_whose_watcher_cannot_work_fails_with_the_error(
    orchesjob_home: str, watchers: dict, monkeypatch: pytest.MonkeyPatch, shared: bool
) -> None:
    monkeypatch.delenv(f"AIRFLOW_CONN_{MISSING_CONN_ID.upper()}", raising=False)
    made: list[float] = []
    triggers = counting_triggers(
        made, orchesjob_home, 2, max_connection_errors=2, retry_backoff=0.2, shared_watcher=shared
    )

    async def scenario() -> list[Any]:
        return list(await asyncio.wait_for(asyncio.gather(*(fire(t) for t in triggers)), 30))

    started = time.monotonic()
    events = asyncio.run(scenario())
    assert time.monotonic() - started < 15
    for event in events:
        assert event["status"] == "error", event
        assert MISSING_CONN_ID in event["message"] and "3 failed attempt" in event["message"], event
        assert event["error_type"] not in ("", "None")
    assert len(made) == (3 if shared else 6)  # one watcher for both, or one each: 3 attempts per watcher
    assert not loop_watchers_left(watchers)


def loop_watchers_left(registry: dict) -> list[Any]:
    return [w for w in registry.values() if w.subs]


def test_a_trigger_by_run_key_whose_connection_is_unknown_fails_with_the_error(
    orchesjob_home: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sensor's trigger still looking for its run key: the same error, the same backoff, the same end."""
    monkeypatch.delenv(f"AIRFLOW_CONN_{MISSING_CONN_ID.upper()}", raising=False)
    trigger = OrchesjobTrigger(
        ssh_conn_id=MISSING_CONN_ID,
        job_id=None,
        run_key="not-yet",
        orchesjob_home=orchesjob_home,
        stream_logs=False,
        max_connection_errors=2,
        retry_backoff=0.2,
    )
    event = asyncio.run(asyncio.wait_for(fire(trigger), 30))
    assert event["status"] == "error" and MISSING_CONN_ID in event["message"], event
