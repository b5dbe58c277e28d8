"""OrchesjobTrigger driven by asyncio against a real sshd and the real CLI, as the triggerer would run it."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchesjob.contract import CONTRACT_VERSION
from orchesjob_provider.hooks.orchesjob import OrchesjobAsyncHook, OrchesjobHook, asyncssh_connect_kwargs
from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger
from tests.support.operator_unit import Recorder, airflow_answers, record_log

pytestmark = [pytest.mark.timeout(180), pytest.mark.sshd, pytest.mark.airflow]

LINES = [f"line {i} 'q' $(x) ✓" for i in range(1, 11)]


def attach_recorder(trigger: OrchesjobTrigger) -> Recorder:
    """Give the trigger a real stdlib logger we can read (Airflow 3 hands triggers a structlog logger)."""
    return record_log(trigger)


async def first_event(trigger: OrchesjobTrigger, timeout: float = 60) -> tuple[Any, bool]:
    """The first event and whether the generator ended right after it (a trigger fires once)."""
    gen = trigger.run()
    try:
        event = await asyncio.wait_for(gen.__anext__(), timeout)
        try:
            await asyncio.wait_for(gen.__anext__(), 5)
        except StopAsyncIteration:
            return event, True
        return event, False
    finally:
        await gen.aclose()


def make_trigger(conn_id: str, launcher: str, home: str, job_id: str, **kwargs: Any) -> OrchesjobTrigger:
    kwargs.setdefault("poll_timeout", 10)
    kwargs.setdefault("retry_backoff", 0.05)
    return OrchesjobTrigger(
        ssh_conn_id=conn_id, job_id=job_id, run_key="rk", orchesjob_bin=launcher, orchesjob_home=home, **kwargs
    )


def rebuild(trigger: OrchesjobTrigger) -> OrchesjobTrigger:
    """What the triggerer does: JSON round trip of serialize(), import the class path, construct again."""
    path, kwargs = trigger.serialize()
    kwargs = json.loads(json.dumps(kwargs))
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls(**kwargs)


def gated_job(gate: Path) -> list[str]:
    """Prints the first half of LINES, waits for ``gate`` to exist, prints the rest and one stderr line.

    The gate makes "logged while the job was still running" deterministic: the job cannot end before the test has
    seen its first lines in the log and opened the gate.
    """
    half = len(LINES) // 2
    script = (
        'for l in "$@"; do printf "%s\\n" "$l"; sleep 0.05; '
        f'if [ "$l" = {shlex.quote(LINES[half - 1])} ]; then '
        f"while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.05; done; fi; done; echo done-err >&2"
    )
    return ["/bin/sh", "-c", script, "sh", *LINES]


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Path]:
    """The gate file of ``gated_job``; opened at teardown too, so a failing test leaves no job waiting forever."""
    path = tmp_path / "gate"
    yield path
    path.touch()


async def wait_for_lines(recorder: Recorder, count: int, task: asyncio.Future[Any], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(recorder.lines("stdout")) < count:
        assert not task.done(), "the trigger finished before the gate was opened"
        assert time.monotonic() < deadline, recorder.records
        await asyncio.sleep(0.02)


def test_streams_logs_once_and_fires_one_terminal_event(
    hook: OrchesjobHook, ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str, gate: Path
) -> None:
    job = hook.start("stream", gated_job(gate))
    trigger = make_trigger(ssh_conn_id, orchesjob_launcher, orchesjob_home, job["job_id"])
    recorder = attach_recorder(trigger)

    async def scenario() -> tuple[Any, bool]:
        task = asyncio.ensure_future(first_event(trigger))
        # The job is blocked at the gate, so these lines reached the log while it was running.
        await wait_for_lines(recorder, len(LINES) // 2, task)
        await asyncio.to_thread(gate.touch)
        return await task

    event, ended = asyncio.run(scenario())
    assert ended, "a trigger must fire exactly once"
    payload: dict[str, Any] = event.payload
    assert payload["status"] == "terminal"
    assert payload["job"]["status"] == "SUCCEEDED" and payload["job"]["job_id"] == job["job_id"]
    assert "logs" not in payload["job"]
    assert recorder.lines("stdout") == LINES
    assert recorder.lines("stderr") == ["done-err"]
    stdout_size = len("".join(f"{line}\n" for line in LINES).encode())
    assert payload["stdout_offset"] == stdout_size and payload["stderr_offset"] == len(b"done-err\n")
    json.dumps(payload)  # the event must be serialisable


def test_serialize_round_trip_resumes_mid_job_without_duplicates(
    hook: OrchesjobHook, ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str, gate: Path
) -> None:
    job = hook.start("resume", gated_job(gate))
    first = make_trigger(ssh_conn_id, orchesjob_launcher, orchesjob_home, job["job_id"])
    rec1 = attach_recorder(first)

    async def run_until_some_lines() -> None:
        task = asyncio.ensure_future(first_event(first))
        await wait_for_lines(rec1, 3, task)
        task.cancel()  # a triggerer restart, as far as this trigger can tell
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run_until_some_lines())
    seen_before = rec1.lines("stdout")
    assert 3 <= len(seen_before) <= len(LINES) // 2
    assert hook.status(job_id=job["job_id"])["active"] is True

    second = rebuild(first)
    assert second.stdout_offset == first.stdout_offset == len("".join(f"{x}\n" for x in seen_before).encode())
    rec2 = attach_recorder(second)
    gate.touch()
    event, ended = asyncio.run(first_event(second))
    assert ended and event.payload["status"] == "terminal"
    assert seen_before + rec2.lines("stdout") == LINES
    assert rec2.lines("stderr") == ["done-err"]


def test_resumes_from_given_offsets_after_the_job_ended(
    hook: OrchesjobHook, ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str
) -> None:
    job = hook.start("offsets", ["printf", "a\\nbb\\nccc\\n"])
    hook.wait(job_id=job["job_id"], timeout=20)
    trigger = make_trigger(ssh_conn_id, orchesjob_launcher, orchesjob_home, job["job_id"], stdout_offset=2)
    recorder = attach_recorder(trigger)
    event, _ = asyncio.run(first_event(trigger))
    assert recorder.lines("stdout") == ["bb", "ccc"]
    assert event.payload["stdout_offset"] == 9
    again = rebuild(trigger)
    rec2 = attach_recorder(again)
    asyncio.run(first_event(again))
    assert rec2.lines("stdout") == []


def test_partial_lines_are_logged_whole(
    hook: OrchesjobHook, ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str
) -> None:
    job = hook.start("partial", ["/bin/sh", "-c", "printf abc; sleep 1; printf 'def\\nlast-no-newline'"])
    trigger = make_trigger(ssh_conn_id, orchesjob_launcher, orchesjob_home, job["job_id"])
    recorder = attach_recorder(trigger)
    event, _ = asyncio.run(first_event(trigger))
    assert recorder.lines("stdout") == ["abcdef", "last-no-newline"]
    assert event.payload["stdout_offset"] == len(b"abcdef\nlast-no-newline")


def test_small_chunks_still_log_everything_once(
    hook: OrchesjobHook, ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str
) -> None:
    job = hook.start("chunks", ["printf", "%s\\n", *LINES])
    hook.wait(job_id=job["job_id"], timeout=20)
    trigger = make_trigger(ssh_conn_id, orchesjob_launcher, orchesjob_home, job["job_id"], max_bytes=7)
    recorder = attach_recorder(trigger)
    event, _ = asyncio.run(first_event(trigger))
    assert event.payload["status"] == "terminal"
    # Lines longer than one chunk are cut at chunk size, but no byte is lost or repeated.
    assert "".join(recorder.lines("stdout")) == "".join(LINES)


def test_unknown_job_fires_an_error_event(ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str) -> None:
    trigger = make_trigger(ssh_conn_id, orchesjob_launcher, orchesjob_home, "no-such-job")
    event, ended = asyncio.run(first_event(trigger))
    assert ended
    assert event.payload["status"] == "error" and event.payload["error_type"] == "not_found"


def test_connection_errors_are_retried_then_reported(orchesjob_home: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.sshd import free_port

    conn = {
        "conn_type": "ssh",
        "host": "127.0.0.1",
        "port": free_port(),
        "login": "nobody",
        "extra": {"no_host_key_check": True},
    }
    monkeypatch.setenv("AIRFLOW_CONN_ORCHESJOB_DOWN", json.dumps(conn))
    trigger = OrchesjobTrigger(
        ssh_conn_id="orchesjob_down",
        job_id="j",
        orchesjob_home=orchesjob_home,
        max_connection_errors=2,
        retry_backoff=0.01,
    )
    recorder = attach_recorder(trigger)
    event, ended = asyncio.run(first_event(trigger, timeout=60))
    assert ended and event.payload["status"] == "error"
    assert "3 failed attempt" in event.payload["message"]
    assert sum("retry" in m for _, m in recorder.records) == 2


def test_deadline_fires_a_timeout_event(
    hook: OrchesjobHook, ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str
) -> None:
    job = hook.start("slow", ["sleep", "30"])
    try:
        trigger = make_trigger(ssh_conn_id, orchesjob_launcher, orchesjob_home, job["job_id"], deadline=time.time() + 2)
        event, _ = asyncio.run(first_event(trigger))
        assert event.payload["status"] == "timeout"
    finally:
        hook.abort(job_id=job["job_id"], grace_seconds=1)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-watcher", "own-watcher"])
def test_a_trigger_that_starts_after_its_deadline_reports_a_job_that_ended_in_time(
    hook: OrchesjobHook, ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str, shared: bool
) -> None:
    """A busy or restarting triggerer starts the trigger after its deadline; the job SUCCEEDED in time. The trigger
    asks the host before it concludes: the event is the job's end, not a timeout."""
    job = hook.start("ended-in-time", ["sh", "-c", "echo made it"], sync=True)
    assert job["status"] == "SUCCEEDED"
    trigger = make_trigger(
        ssh_conn_id,
        orchesjob_launcher,
        orchesjob_home,
        job["job_id"],
        deadline=time.time() - 120,
        shared_watcher=shared,
    )
    event, ended = asyncio.run(first_event(trigger))
    assert ended
    assert event.payload["status"] == "terminal", event.payload
    assert event.payload["job"]["status"] == "SUCCEEDED" and event.payload["job"]["job_id"] == job["job_id"]
    assert event.payload["stdout_offset"] == 0  # nothing was logged: the task shows the output from here


def test_a_trigger_that_starts_after_its_deadline_times_out_a_job_still_running(
    hook: OrchesjobHook, ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str
) -> None:
    job = hook.start("still-running", ["sleep", "30"])
    try:
        trigger = make_trigger(
            ssh_conn_id, orchesjob_launcher, orchesjob_home, job["job_id"], deadline=time.time() - 120
        )
        event, ended = asyncio.run(first_event(trigger))
        assert ended and event.payload["status"] == "timeout"
        assert "still RUNNING at the deadline" in event.payload["message"]
        assert hook.status(job_id=job["job_id"])["status"] == "RUNNING"  # a trigger never aborts on a timeout
    finally:
        hook.abort(job_id=job["job_id"], grace_seconds=1)


def test_async_hook_matches_the_sync_hook(
    hook: OrchesjobHook, ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str
) -> None:
    """Every read verb of the sync hook, and abort (with and without --if-owner), through the async hook."""
    from orchesjob_provider.exceptions import OrchesjobNotOwner

    job = hook.start("async-hook", ["printf", "x"])
    hook.wait(job_id=job["job_id"], timeout=20)
    sleeper = hook.start("async-sleeper", ["sleep", "60"], request_id="async-owner")

    async def go() -> dict[str, Any]:
        ahook = OrchesjobAsyncHook(ssh_conn_id, orchesjob_bin=orchesjob_launcher, orchesjob_home=orchesjob_home)
        try:
            seen: dict[str, Any] = {
                "version": await ahook.version(),
                "status": await ahook.status(run_key="async-hook"),
                "all": await ahook.status(run_key="async-hook", all_attempts=True),
                "running": await ahook.status(running=True),
                "wait": await ahook.wait(job_id=job["job_id"], timeout=5, stdout_offset=0, stderr_offset=0),
                "logs": await ahook.logs(job_id=job["job_id"]),
            }
            try:
                await ahook.abort(job_id=sleeper["job_id"], if_owner="someone-else", grace_seconds=1)
            except OrchesjobNotOwner as exc:
                seen["not_owner"] = exc.owner
            seen["abort"] = await ahook.abort(job_id=sleeper["job_id"], if_owner="async-owner", grace_seconds=1)
            return seen
        finally:
            await ahook.close()

    seen = asyncio.run(go())
    assert seen["version"]["contract"] == CONTRACT_VERSION
    assert seen["status"]["job_id"] == job["job_id"] and seen["status"]["status"] == "SUCCEEDED"
    assert [j["job_id"] for j in seen["all"]] == [job["job_id"]]
    assert [j["job_id"] for j in seen["running"]] == [sleeper["job_id"]]
    assert seen["wait"]["timed_out"] is False and seen["wait"]["logs"]["stdout"]["data"] == "x"
    assert seen["logs"]["data"] == "x"
    assert seen["not_owner"] == "async-owner"
    assert seen["abort"]["status"] == "ABORTED"


def test_asyncssh_kwargs_from_connection_fields(sshd: Any) -> None:
    class Conn:
        host, port, login, password, conn_id = "h", 2222, "u", "pw", "c"

    kwargs = asyncssh_connect_kwargs(Conn, {"key_file": "~/k", "no_host_key_check": "true", "conn_timeout": 7})
    assert kwargs["host"] == "h" and kwargs["port"] == 2222 and kwargs["username"] == "u"
    assert kwargs["password"] == "pw" and kwargs["known_hosts"] is None and kwargs["connect_timeout"] == 7.0
    assert kwargs["client_keys"] == [os.path.expanduser("~/k")]

    private = open(sshd.key_path).read()
    with_key = asyncssh_connect_kwargs(Conn, {"private_key": private, "host_key": sshd.host_public_key})
    # asyncssh itself trusts nothing: every key it is shown goes to the client's callbacks, i.e. to host_keys' rule
    assert len(with_key["client_keys"]) == 1 and with_key["known_hosts"] == ([], [], [])
    assert with_key["client_factory"] is not None and with_key["server_host_key_algs"][0] == "ssh-ed25519"


def test_async_hook_checks_a_real_host_key(
    sshd: Any, orchesjob_launcher: str, orchesjob_home: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = sshd.airflow_connection()
    conn["extra"] = {"private_key": open(sshd.key_path).read(), "host_key": sshd.host_public_key}
    monkeypatch.setenv("AIRFLOW_CONN_ORCHESJOB_HOSTKEY", json.dumps(conn))

    async def go() -> dict:
        ahook = OrchesjobAsyncHook("orchesjob_hostkey", orchesjob_bin=orchesjob_launcher, orchesjob_home=orchesjob_home)
        try:
            return await ahook.version()
        finally:
            await ahook.close()

    assert asyncio.run(go())["contract"] == CONTRACT_VERSION


def test_serialize_names_every_constructor_argument() -> None:
    import inspect

    trigger = OrchesjobTrigger(ssh_conn_id="c", job_id="j", orchesjob_bin=["/py", "-m", "orchesjob"])
    path, kwargs = trigger.serialize()
    assert path == "orchesjob_provider.triggers.orchesjob.OrchesjobTrigger"
    params = set(inspect.signature(OrchesjobTrigger.__init__).parameters) - {"self"}
    assert set(kwargs) == params
    assert rebuild(trigger).serialize() == (path, kwargs)


def test_without_log_streaming_only_the_end_is_reported(
    hook: OrchesjobHook, ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str
) -> None:
    job = hook.start("quiet-watch", ["/bin/sh", "-c", "echo a; sleep 0.5; echo b"])
    trigger = make_trigger(ssh_conn_id, orchesjob_launcher, orchesjob_home, job["job_id"], stream_logs=False)
    recorder = attach_recorder(trigger)
    event, ended = asyncio.run(first_event(trigger))
    assert ended and event.payload["status"] == "terminal" and event.payload["job"]["status"] == "SUCCEEDED"
    assert recorder.lines("stdout") == [] and event.payload["stdout_offset"] == 0


def test_on_kill_aborts_the_job_only_when_asked(
    hook: OrchesjobHook, ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    airflow_answers(monkeypatch, ("failed", 1))  # the try gave the job up; whether to abort is the flag's
    job = hook.start("kill-me", ["sleep", "60"])
    keep = make_trigger(ssh_conn_id, orchesjob_launcher, orchesjob_home, job["job_id"])
    asyncio.run(keep.on_kill())
    assert hook.status(job_id=job["job_id"])["status"] == "RUNNING"

    kill = make_trigger(
        ssh_conn_id,
        orchesjob_launcher,
        orchesjob_home,
        job["job_id"],
        abort_on_kill=True,
        abort_reason="task killed 'by user'",
        abort_grace_seconds=1,
        try_identity={"dag_id": "d", "task_id": "t", "run_id": "r", "map_index": -1, "try_number": 1},
    )
    recorder = attach_recorder(kill)
    asyncio.run(kill.on_kill())
    after = hook.status(job_id=job["job_id"])
    assert after["status"] == "ABORTED" and after["abort_reason"] == "task killed 'by user'"
    asyncio.run(kill.on_kill())  # already ended: logged with the host's reason, not raised
    assert any("was not aborted" in m and "not running" in m for _, m in recorder.records), recorder.records
