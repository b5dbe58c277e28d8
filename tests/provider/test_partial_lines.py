"""A partial last line of a quiet job reaches the task log in bounded time, once; a line that completes is whole.

The job below writes a line, then ``abc`` and the first two bytes of a three-byte character (``\\xe2\\x82``, the start
of a euro sign), and goes quiet until the test lets it go on. The host CLI holds the two bytes back (a chunk never ends
inside a character) and does not count them as news; the provider writes ``abc`` out once the stream has been quiet
for the poll timeout (``log_relay``'s rule 2). Then the job completes that character and writes more: lines written in
pieces a moment apart, a character split across two writes, and a last line without a newline. Real sshd, real CLI,
the trigger run as the triggerer runs it (shared watcher) and the operator waiting in the worker.
"""

from __future__ import annotations

import asyncio
import shlex
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from orchesjob_provider import watcher as watcher_mod
from orchesjob_provider.hooks.orchesjob import OrchesjobHook
from orchesjob_provider.log_relay import LogRelay
from orchesjob_provider.operators.orchesjob import OrchesjobOperator
from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger
from tests.support.operator_unit import Recorder, context, record_log

pytestmark = [pytest.mark.timeout(180), pytest.mark.sshd, pytest.mark.airflow]

QUIET = 2.0  # the poll timeout / poll interval of the tests: a partial line waits this long for its newline


def quiet_then_more(gate: Path) -> list[str]:
    script = (
        r'printf "one\n"; printf "abc\342\202"; '
        f"while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.05; done; "
        r'printf "\254 def\n"; printf "hel"; sleep 0.5; printf "lo\n"; '
        r'printf "x\342\202"; sleep 0.5; printf "\254y\n"; printf "end-partial"'
    )
    return ["/bin/sh", "-c", script]


EXPECTED = ["one", "abc", "\u20ac def", "hello", "x\u20acy", "end-partial"]
TOTAL_BYTES = len(b"one\nabc\xe2\x82\xac def\nhello\nx\xe2\x82\xacy\nend-partial")


def wait_for_line(recorder: Recorder, line: str, within: float) -> float | None:
    """The monotonic time `line` reached the log, waiting up to `within` seconds; None if it did not."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for at, seen in recorder.timed("stdout"):
            if seen == line:
                return at
        time.sleep(0.05)
    return None


def test_the_trigger_writes_a_quiet_partial_line_once_and_whole_lines_whole(
    hook: OrchesjobHook, ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    job = hook.start("partial-quiet-trigger", quiet_then_more(gate))
    trigger = OrchesjobTrigger(
        ssh_conn_id=ssh_conn_id,
        job_id=job["job_id"],
        run_key="rk",
        orchesjob_bin=orchesjob_launcher,
        orchesjob_home=orchesjob_home,
        poll_timeout=QUIET,
        retry_backoff=0.1,
        request_id="try-partial",
    )
    recorder = record_log(trigger)
    seen: dict[str, Any] = {}

    async def scenario() -> Any:
        gen = trigger.run()
        first = asyncio.ensure_future(gen.__anext__())
        try:
            loop = asyncio.get_running_loop()
            one = await loop.run_in_executor(None, wait_for_line, recorder, "one", 30)
            assert one is not None, recorder.messages()
            watcher = next(w for key, w in watcher_mod._WATCHERS.items() if orchesjob_home in key)
            calls_before = watcher.calls
            abc = await loop.run_in_executor(None, wait_for_line, recorder, "abc", 4 * QUIET + 10)
            await asyncio.sleep(3 * QUIET)  # and the job stays quiet a while longer
            seen.update(one=one, abc=abc, calls=watcher.calls - calls_before, quiet_for=time.monotonic() - one)
            gate.touch()  # let the job go on (also when the test already failed: it must end)
            event = await asyncio.wait_for(first, 60)
            with pytest.raises(StopAsyncIteration):
                await gen.__anext__()
            return event.payload
        finally:
            gate.touch()
            first.cancel()
            await gen.aclose()

    payload = asyncio.run(scenario())
    assert seen["abc"] is not None, f"the partial line never reached the log: {recorder.messages()}"
    # It waited for its newline as long as the stream was quiet for a poll timeout, and not until the job went on
    # (the upper bound leaves a loaded machine room for a few remote calls; the gate opens only once it is shown).
    assert QUIET - 0.5 <= seen["abc"] - seen["one"] <= 2 * QUIET + 10, seen
    # While the job was quiet, each call blocked for its whole poll timeout (so at most one answer per QUIET seconds):
    # no answer "news" with nothing in it, after which the watcher asked again at once (one gather second later).
    assert seen["calls"] <= seen["quiet_for"] / QUIET, seen
    assert payload["status"] == "terminal" and payload["job"]["status"] == "SUCCEEDED", payload
    # Every line once, in order; the pieces of a line and of a character are joined; the rest of the quiet line
    # (written after it was shown) is a line of its own, repeating nothing.
    assert recorder.lines("stdout") == EXPECTED
    assert payload["stdout_offset"] == TOTAL_BYTES


def test_the_operator_waiting_in_the_worker_writes_a_quiet_partial_line_once(
    ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    op = OrchesjobOperator(
        task_id="partial",
        ssh_conn_id=ssh_conn_id,
        orchesjob_bin=orchesjob_launcher,
        orchesjob_home=orchesjob_home,
        command=quiet_then_more(gate),
        run_key="partial-quiet-operator",
        deferrable=False,
        poll_interval=QUIET,
        hook_kwargs={"retry_backoff": 0.1},
    )
    recorder = record_log(op)
    seen: dict[str, Any] = {}

    def release() -> None:
        one = wait_for_line(recorder, "one", 60)
        seen["abc"] = wait_for_line(recorder, "abc", 4 * QUIET + 10) if one is not None else None
        seen["one"] = one
        gate.touch()

    helper = threading.Thread(target=release, daemon=True)
    helper.start()
    try:
        result = op.execute(context())
    finally:
        gate.touch()
        helper.join(timeout=60)
    assert seen["abc"] is not None, f"the partial line never reached the log: {recorder.messages()}"
    assert QUIET - 0.5 <= seen["abc"] - seen["one"] <= 2 * QUIET + 10, seen
    assert result["status"] == "SUCCEEDED"
    assert recorder.lines("stdout") == EXPECTED


# ---------------------------------------------------------------------- the rule itself, on a clock of our own


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def chunk(data: str, offset: int, next_offset: int, size: int) -> dict[str, Any]:
    return {"data": data, "offset": offset, "next_offset": next_offset, "size": size}


def test_quiet_means_no_new_bytes_whatever_the_answer_says() -> None:
    clock = Clock()
    lines: list[tuple[str, str]] = []
    relay = LogRelay(lambda stream, line: lines.append((stream, line)), clock=clock)
    relay.take({"stdout": chunk("one\nabc", 0, 7, 9)})  # 2 bytes of a character held back by the host
    assert lines == [("stdout", "one")] and relay.offset("stdout") == 4
    # An older host CLI answers "news" with no bytes, again and again: that is not output.
    for step in range(1, 9):
        clock.now += 0.5
        relay.take({"stdout": chunk("", 7, 7, 9), "stderr": chunk("", 0, 0, 0)})
        relay.flush_quiet(3.0)
        assert lines == [("stdout", "one")] + ([("stdout", "abc")] if step >= 6 else []), step  # once 3 s passed
    assert relay.offset("stdout") == 7  # a successor resumes after it: never written twice
    relay.flush_quiet(3.0)
    relay.flush()
    assert lines == [("stdout", "one"), ("stdout", "abc")]
    # The rest of that line, later, is a line of its own.
    relay.take({"stdout": chunk("\u20ac def\n", 7, 13, 13)})
    assert lines[-1] == ("stdout", "\u20ac def") and relay.offset("stdout") == 13


def test_a_line_completed_within_the_quiet_time_is_written_whole_and_streams_are_quiet_on_their_own() -> None:
    clock = Clock()
    lines: list[tuple[str, str]] = []
    relay = LogRelay(lambda stream, line: lines.append((stream, line)), clock=clock)

    def stdout_lines() -> list[str]:
        return [line for stream, line in lines if stream == "stdout"]

    relay.take({"stdout": chunk("hel", 0, 3, 3)})
    clock.now += 2.9
    relay.flush_quiet(3.0)
    relay.take({"stdout": chunk("lo\n", 3, 6, 6)})
    assert stdout_lines() == ["hello"]
    relay.take({"stdout": chunk("next", 6, 10, 10)})
    for _ in range(5):  # stderr keeps talking; stdout's partial line is quiet all the same
        clock.now += 0.5
        relay.take({"stderr": chunk("e\n", relay.read["stderr"], relay.read["stderr"] + 2, 99)})
        relay.flush_quiet(3.0)
        assert stdout_lines() == ["hello"]
    clock.now += 0.5
    relay.take({"stderr": chunk("e\n", relay.read["stderr"], relay.read["stderr"] + 2, 99)})
    relay.flush_quiet(3.0)
    assert stdout_lines() == ["hello", "next"]
    assert relay.offsets == {"stdout": 10, "stderr": 12}
