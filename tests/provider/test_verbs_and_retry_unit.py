"""Unit tests (no SSH) of what both hooks share: each verb's definition, the retry policy, the typed transport
errors, request ids, and each hook's one ``call()`` driven over a scripted fake transport.

The fake transports stand in for SSH only; everything above them (command lines, parsing, retries, logging, the
contract check) is the real code. The same behaviours over a real sshd are in test_hook_ssh.py and the fault suite.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import string
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchesjob.contract import CONTRACT_VERSION
from orchesjob_provider import command as cmd
from orchesjob_provider import run_key as run_keys
from orchesjob_provider.exceptions import (
    OrchesjobConflict,
    OrchesjobError,
    OrchesjobIncompatibleCli,
    OrchesjobInvalidArgument,
    OrchesjobLockTimeout,
    OrchesjobNotFound,
    OrchesjobNotOwner,
    OrchesjobTransportError,
    error_from_payload,
)
from orchesjob_provider.hooks.orchesjob import OrchesjobAsyncHook, OrchesjobHook
from orchesjob_provider.retry import ALWAYS, BEFORE_SEND, NEVER, Attempts, RetryPolicy
from tests.support.operator_unit import record_log

pytestmark = pytest.mark.timeout(120)


V = cmd.define  # the verbs' definitions, not run


def flag(call: cmd.Call, name: str) -> str | None:
    values = [a.split("=", 1)[1] for a in call.args if isinstance(a, str) and a.startswith(name + "=")]
    assert len(values) <= 1, call.args
    return values[0] if values else None


# ---------------------------------------------------------------------- each verb, defined once


def test_every_verb_has_its_arguments_time_bound_and_retry_kind() -> None:
    table: list[tuple[cmd.Call, str, str, float | None]] = [
        (V.version(), "version", ALWAYS, 60.0),
        (V.status(run_key="k"), "status", ALWAYS, 60.0),
        (V.status(running=True), "status", ALWAYS, 60.0),
        (V.wait(job_id="j"), "wait", ALWAYS, 90.0),
        (V.wait(job_id="j", timeout=5), "wait", ALWAYS, 65.0),
        (V.logs(job_id="j"), "logs", ALWAYS, 60.0),
        (V.start("k", ["true"]), "start", ALWAYS, 70.0),
        (V.start("k", ["true"], start_timeout=3, mode="default"), "start", ALWAYS, 63.0),
        (V.start("k", ["true"], mode="strict", sync=True), "start", ALWAYS, None),
        (V.start("k", ["true"], exec_timeout=7), "start", ALWAYS, 7.0),
        (V.abort(job_id="j"), "abort", BEFORE_SEND, 65.0),
        (V.abort(job_id="j", grace_seconds=1, if_owner="r"), "abort", BEFORE_SEND, 61.0),
        (V.rerun(job_id="j"), "rerun", BEFORE_SEND, 70.0),
        (V.rerun(job_id="j", sync=True), "rerun", BEFORE_SEND, None),
        (V.unlock("k"), "unlock", BEFORE_SEND, 60.0),
        (V.clean(all_jobs=True), "clean", BEFORE_SEND, 60.0),
        (V.run_cli(["status", "--running"]), "status", NEVER, 60.0),
        (V.run_cli(["wait", "--job-id=j"], timeout=3, retry=ALWAYS), "wait", ALWAYS, 3.0),
    ]
    for call, verb, retry, bound in table:
        assert (call.verb, call.args[0], call.retry, call.exec_timeout(60.0)) == (verb, verb, retry, bound), call


def test_start_makes_a_fresh_request_id_per_call_unless_given_one() -> None:
    first, second = V.start("k", ["true"]), V.start("k", ["true"])
    ids = [flag(first, "--request-id"), flag(second, "--request-id")]
    assert all(ids) and ids[0] != ids[1]
    assert all(len(i) <= 128 and i.isprintable() for i in ids if i)
    given_id = V.start("k", ["true"], request_id="airflow:d:t:r:-1:try2:abcd1234")
    assert flag(given_id, "--request-id") == "airflow:d:t:r:-1:try2:abcd1234"
    # the id comes before the `--` that ends the options: the command's own words are never read as ours
    assert given_id.args.index("--request-id=airflow:d:t:r:-1:try2:abcd1234") < given_id.args.index("--")


@pytest.mark.parametrize("bad", ["", "x" * 129, "line\nbreak", "tab\there", "nul\x00"])
def test_bad_request_ids_are_refused_before_anything_is_sent(bad: str) -> None:
    with pytest.raises(ValueError, match="request_id|if_owner|NUL"):
        V.start("k", ["true"], request_id=bad)
    with pytest.raises(ValueError, match="request_id|if_owner|NUL"):
        V.abort(job_id="j", if_owner=bad)


def test_abort_if_owner_is_one_word() -> None:
    call = V.abort(job_id="j", if_owner="airflow:it's $(x)")
    assert flag(call, "--if-owner") == "airflow:it's $(x)"
    assert flag(V.abort(job_id="j"), "--if-owner") is None


def test_a_call_refuses_an_unknown_retry_kind() -> None:
    with pytest.raises(ValueError, match="retry must be one of"):
        cmd.Call("status", ("status",), retry="sometimes")


# ---------------------------------------------------------------------- the retry policy

SENT = OrchesjobTransportError("cut after the command went out", sent=True)
NOT_SENT = OrchesjobTransportError("cut while logging in", sent=False)
REFUSED = OrchesjobTransportError("login refused", sent=False, transient=False)
LOCKED = OrchesjobLockTimeout("database locked")
ANSWERS = [
    OrchesjobNotFound("gone"),
    OrchesjobConflict("finished"),
    OrchesjobInvalidArgument("bad"),
    OrchesjobIncompatibleCli("old"),
    OrchesjobNotOwner("not yours"),
]


@pytest.mark.parametrize(
    "kind, not_sent, sent, locked",
    [(ALWAYS, True, True, True), (BEFORE_SEND, True, False, False), (NEVER, False, False, False)],
)
def test_retry_table(kind: str, not_sent: bool, sent: bool, locked: bool) -> None:
    assert RetryPolicy.allows(NOT_SENT, kind) is not_sent
    assert RetryPolicy.allows(SENT, kind) is sent
    assert RetryPolicy.allows(LOCKED, kind) is locked
    assert RetryPolicy.allows(REFUSED, kind) is False
    for answer in ANSWERS:
        assert RetryPolicy.allows(answer, kind) is False


def test_backoff_doubles_up_to_the_cap_and_retries_run_out() -> None:
    policy = RetryPolicy(retries=5, backoff=0.5, max_backoff=3)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.next_delay(SENT, ALWAYS, 5) == 3.0
    assert policy.next_delay(SENT, ALWAYS, 6) is None
    assert RetryPolicy(retries=0).next_delay(SENT, ALWAYS, 1) is None
    assert RetryPolicy(retries=-2, backoff=-1).retries == 0
    with pytest.raises(ValueError):
        RetryPolicy.allows(SENT, "maybe")


def test_attempts_remember_that_an_earlier_attempt_was_sent() -> None:
    attempts = Attempts(RetryPolicy(retries=3, backoff=0.25), ALWAYS, "start")
    first = OrchesjobTransportError("reply lost", sent=True)
    assert attempts.failed(first) == 0.25
    assert "attempt 1 of 4" in attempts.describe(first, 0.25) and "reply lost" in attempts.describe(first, 0.25)
    later = OrchesjobTransportError("cut while logging in", sent=False)
    assert attempts.failed(later) == 0.5
    assert later.sent is True, "a later attempt that failed early must not hide that an earlier one was sent"
    assert attempts.failed(OrchesjobNotFound("no")) is None
    message = attempts.describe(later, 0.5)
    assert message.startswith("orchesjob start: attempt 2 of 4 failed (cut while logging in)")
    assert message.endswith("retry 2 of 3 in 0.5s")


def test_before_send_calls_give_up_once_an_attempt_was_sent() -> None:
    attempts = Attempts(RetryPolicy(retries=3), BEFORE_SEND, "abort")
    assert attempts.failed(OrchesjobTransportError("no route", sent=False)) == 1.0
    assert attempts.failed(OrchesjobTransportError("reply lost", sent=True)) is None


# ---------------------------------------------------------------------- typed errors


def test_transport_errors_keep_sent_and_transient_through_pickle() -> None:
    for sent in (True, False):
        for transient in (True, False):
            exc = OrchesjobTransportError("cut", sent=sent, transient=transient, command="orchesjob start", stderr="e")
            again = pickle.loads(pickle.dumps(exc))
            assert type(again) is OrchesjobTransportError
            assert (again.sent, again.transient, again.command, again.stderr, again.message) == (
                sent,
                transient,
                "orchesjob start",
                "e",
                "cut",
            )
    assert OrchesjobTransportError("unknown moment").sent is True  # when in doubt, it may have been sent


def test_transport_errors_found_in_a_reply_were_sent() -> None:
    with pytest.raises(OrchesjobTransportError) as info:
        cmd.parse_output("", None, "")
    assert info.value.sent is True and info.value.transient is True


def test_not_owner_is_typed_and_names_the_owner() -> None:
    payload = {"error": "not_owner", "message": "job j is owned by request 'b', not 'a'", "exit_code": 4, "owner": "b"}
    with pytest.raises(OrchesjobNotOwner) as info:
        cmd.parse_output(json.dumps(payload), 4, "orchesjob: job j is owned by request 'b'\n")
    exc = info.value
    assert isinstance(exc, OrchesjobConflict) and exc.error_type == "not_owner" and exc.exit_code == 4
    assert exc.owner == "b"
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is OrchesjobNotOwner and again.owner == "b"
    assert error_from_payload({"error": "not_owner", "owner": None}, 4).owner is None  # type: ignore[attr-defined]
    # an exit-4 error type this provider does not know is still a conflict, not mistaken for not_owner
    assert type(error_from_payload({"error": "other_pid_namespace"}, 4)) is OrchesjobConflict


# ---------------------------------------------------------------------- request ids of Airflow tries


def test_request_ids_of_tries() -> None:
    one = run_keys.request_id_for_try("dag", "task", "manual__1", -1, 1)
    again = run_keys.request_id_for_try("dag", "task", "manual__1", -1, 1)
    two = run_keys.request_id_for_try("dag", "task", "manual__1", -1, 2, nonce="0badc0de")
    assert one.startswith("airflow:dag:task:manual__1:-1:try1:") and one != again
    assert two == "airflow:dag:task:manual__1:-1:try2:0badc0de"
    long = run_keys.request_id_for_try("d" * 200, "t" * 200, "r\n" * 50, 3, 12, nonce="cafef00d")
    assert len(long) == 128 and long.isprintable() and long.endswith(":try12:cafef00d")
    assert cmd.check_request_id(long) == long


@given(
    st.text(min_size=0, max_size=300),
    st.text(alphabet=string.printable, max_size=40),
    st.integers(min_value=-1, max_value=10**6),
)
def test_request_ids_are_always_acceptable_to_the_cli(dag_id: str, task_id: str, try_number: int) -> None:
    rid = run_keys.request_id_for_try(dag_id, task_id, "run", 0, try_number)
    assert cmd.check_request_id(rid) == rid
    assert f":try{try_number}:" in rid


# ---------------------------------------------------------------------- each hook's one call()

VERSION = (0, json.dumps({"version": "9.9.9", "contract": CONTRACT_VERSION}).encode(), b"")
JOB = (0, json.dumps({"job_id": "j1", "status": "FAILED", "existing": True, "same_request": True}).encode(), b"")


class FakeTransport:
    """Replies from a script: each entry is a reply tuple or an exception to raise. Records every call sent: its
    command line, and its standard input (the request) after it, for the assertions to read as one text."""

    def __init__(self, script: Sequence[Any]) -> None:
        self.script = list(script)
        self.lines: list[str] = []
        self.command_lines: list[str] = []
        self.timeouts: list[float | None] = []
        self.closed = 0

    def step(self, line: str, timeout: float | None, stdin: bytes = b"") -> tuple[int | None, bytes, bytes]:
        self.command_lines.append(line)
        self.lines.append(line + (" <<< " + stdin.decode() if stdin else ""))
        self.timeouts.append(timeout)
        reply = self.script.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply


class SyncFake(FakeTransport):
    def run(self, line: str, timeout: float | None, stdin: bytes = b"") -> tuple[int | None, bytes, bytes]:
        return self.step(line, timeout, stdin)

    def close(self) -> None:
        self.closed += 1


class AsyncFake(FakeTransport):
    async def run(
        self, line: str, timeout: float | None, wake: Any = None, stdin: bytes = b""
    ) -> tuple[int | None, bytes, bytes]:
        return self.step(line, timeout, stdin)

    async def close(self) -> None:
        self.closed += 1


def sync_hook(script: Sequence[Any], **kwargs: Any) -> tuple[OrchesjobHook, SyncFake]:
    hook = OrchesjobHook("unused", orchesjob_bin="/opt/orchesjob", retry_backoff=0.01, **kwargs)
    fake = SyncFake(script)
    hook.transport = fake  # type: ignore[assignment]
    return hook, fake


def async_hook(script: Sequence[Any], **kwargs: Any) -> tuple[OrchesjobAsyncHook, AsyncFake]:
    kwargs.setdefault("retries", 3)
    hook = OrchesjobAsyncHook("unused", orchesjob_bin="/opt/orchesjob", retry_backoff=0.01, **kwargs)
    fake = AsyncFake(script)
    hook.transport = fake  # type: ignore[assignment]
    return hook, fake


def run_both(script: Sequence[Any], use: Any, **kwargs: Any) -> list[tuple[Any, FakeTransport, list[str]]]:
    """Run ``use(hook)`` on a sync and on an async hook with the same script; (result or exception, transport,
    log messages) for each."""
    results: list[tuple[Any, FakeTransport, list[str]]] = []
    hook, fake = sync_hook(script, **kwargs)
    log = record_log(hook)
    try:
        outcome: Any = use(hook)
    except OrchesjobError as exc:
        outcome = exc
    results.append((outcome, fake, log.messages()))
    ahook, afake = async_hook(script, **kwargs)
    alog = record_log(ahook)

    async def go() -> Any:
        try:
            return await use(ahook)
        except OrchesjobError as exc:
            return exc

    results.append((asyncio.run(go()), afake, alog.messages()))
    return results


def test_both_hooks_retry_a_start_with_the_same_request_id_and_log_each_retry() -> None:
    lost = OrchesjobTransportError("SSH failure while running orchesjob: reset", sent=True)
    for job, fake, messages in run_both([VERSION, lost, lost, JOB], lambda h: h.start("k", ["false"], mode="default")):
        assert job["job_id"] == "j1" and job["same_request"] is True
        starts = fake.lines[1:]
        assert len(starts) == 3 and len(set(starts)) == 1, "every retry must repeat the same request"
        assert "--request-id=orchesjob-hook:" in starts[0]
        retries = [m for m in messages if "retry" in m]
        assert len(retries) == 2, messages
        assert "attempt 1 of 4 failed (SSH failure while running orchesjob: reset); retry 1 of 3 in 0.0s" in retries[0]
        assert "attempt 2 of 4" in retries[1] and "retry 2 of 3" in retries[1]


def test_both_hooks_check_the_contract_once_before_the_first_verb() -> None:
    status = (0, b'{"job_id": "j", "status": "RUNNING"}', b"")
    for result, fake, _ in run_both([VERSION, status, status], lambda h: h.status(job_id="j")):
        assert result["status"] == "RUNNING"
        assert fake.lines[0] == "/opt/orchesjob version" and len(fake.lines) == 2
        assert fake.command_lines[1] == "/opt/orchesjob status --request -"
        assert json.loads(fake.lines[1].split(" <<< ", 1)[1]) == {"argv": ["--job-id=j"]}


def test_both_hooks_never_repeat_an_abort_that_was_sent() -> None:
    lost = OrchesjobTransportError("reply lost", sent=True)
    for result, fake, messages in run_both([VERSION, lost, VERSION], lambda h: h.abort(job_id="j", if_owner="r")):
        assert result is lost and len(fake.lines) == 2
        assert "--if-owner=r" in fake.lines[1]
        assert not [m for m in messages if "retry" in m]


def test_both_hooks_repeat_an_abort_that_never_left() -> None:
    refused = OrchesjobTransportError("could not connect", sent=False)
    aborted = (0, b'{"job_id": "j", "status": "ABORTED"}', b"")
    for result, fake, messages in run_both([VERSION, refused, aborted], lambda h: h.abort(job_id="j")):
        assert result["status"] == "ABORTED" and len(fake.lines) == 3
        assert len([m for m in messages if "retry" in m]) == 1


def test_both_hooks_raise_not_owner_unretried() -> None:
    refusal = (
        4,
        json.dumps({"error": "not_owner", "message": "owned by b", "exit_code": 4, "owner": "b"}).encode(),
        b"orchesjob: owned by b\n",
    )
    for result, fake, _ in run_both([VERSION, refusal], lambda h: h.abort(job_id="j", if_owner="a")):
        assert isinstance(result, OrchesjobNotOwner) and result.owner == "b" and len(fake.lines) == 2


def test_both_hooks_report_sent_when_any_attempt_was_sent() -> None:
    lost = OrchesjobTransportError("reply lost", sent=True)
    down = [OrchesjobTransportError("connect refused", sent=False) for _ in range(3)]
    for result, fake, _ in run_both([VERSION, lost, *down], lambda h: h.start("k", ["true"])):
        assert isinstance(result, OrchesjobTransportError) and result.sent is True
        assert len(fake.lines) == 5


def test_both_hooks_turn_a_missing_version_verb_into_an_incompatible_cli() -> None:
    old = (2, json.dumps({"error": "invalid_argument", "message": "unknown command", "exit_code": 2}).encode(), b"")
    for result, fake, _ in run_both([old], lambda h: h.status(job_id="j")):
        assert isinstance(result, OrchesjobIncompatibleCli) and "predates" in str(result)
        assert len(fake.lines) == 1


def test_both_hooks_bound_each_call_as_its_verb_says() -> None:
    waited = (0, b'{"job_id": "j", "status": "RUNNING", "timed_out": true}', b"")
    for _, fake, _ in run_both([VERSION, waited], lambda h: h.wait(job_id="j", timeout=4), command_timeout=10):
        assert fake.timeouts == [10.0, 14.0]


def test_the_async_hook_offers_every_verb_of_the_sync_hook() -> None:
    import inspect

    verbs = ["start", "status", "wait", "logs", "abort", "rerun", "unlock", "clean", "version", "run_cli"]
    for verb in verbs:
        sync_sig = inspect.signature(getattr(OrchesjobHook, verb))
        async_sig = inspect.signature(getattr(OrchesjobAsyncHook, verb))
        assert list(sync_sig.parameters) == list(async_sig.parameters), verb


# -- wait --watch: the entry format, the call's definition, the answer's check (pure) ------------------------------
def test_watch_entries_are_built_and_checked_before_anything_is_sent() -> None:
    assert cmd.WatchEntry("j1").spec() == "j1"
    assert cmd.WatchEntry("j1", 10, 0).spec() == "j1:10:0"
    assert cmd.WatchEntry("j1", 10, 4, delivered=(7, 4), cursor="air:flow:try1").spec() == "j1:10:4:7:4:air:flow:try1"
    assert cmd.WatchEntry("j1", 10, 4, cursor="c").spec() == "j1:10:4:10:4:c"  # delivered defaults to read
    for bad in (
        cmd.WatchEntry("a:b", 0, 0),
        cmd.WatchEntry("j", -1, 0),
        cmd.WatchEntry("j", 1, 1, (2, 0), "c"),
        cmd.WatchEntry("j", 1, 1, cursor="bad\ncursor"),
        cmd.WatchEntry("j", cursor="c"),
        cmd.WatchEntry("j", 1, 1, cursor="x" * 200),
    ):
        with pytest.raises(ValueError):
            bad.spec()


def test_the_watch_call_is_one_always_retried_wait_bounded_by_its_timeout() -> None:
    call = cmd.define.watch(
        [cmd.WatchEntry("a", 0, 0), cmd.WatchEntry("b")],
        timeout=20,
        max_bytes=100,
        max_total_bytes=65536,
        wake_on_eof=True,
        gather=1.5,
    )
    assert call.args == (
        "wait",
        "--watch=a:0:0",
        "--watch=b",
        "--timeout=20",
        "--max-bytes=100",
        "--max-total-bytes=65536",
        "--wake-on-eof",
        "--gather=1.5",
    )
    assert call.retry == "always" and call.wakeable and call.exec_timeout(60) == 80
    assert not cmd.define.watch([cmd.WatchEntry("a")]).wakeable
    with pytest.raises(ValueError):
        cmd.define.watch([])


def test_a_watch_answer_of_another_shape_is_an_incompatible_cli() -> None:
    from orchesjob_provider.exceptions import OrchesjobIncompatibleCli

    entries = [cmd.WatchEntry("a"), cmd.WatchEntry("b")]
    answers: list[dict[str, Any]] = [{"job_id": "a", "news": False}, {"job_id": "b", "news": True}]
    good = {"jobs": answers, "timed_out": False}
    assert [a["job_id"] for a in cmd.check_watch_answer(good, entries)] == ["a", "b"]
    bad: Any
    for bad in ({"jobs": answers[:1]}, {"jobs": answers[::-1]}, {"job_id": "a"}, [], None, {"jobs": ["a", "b"]}):
        with pytest.raises(OrchesjobIncompatibleCli):
            cmd.check_watch_answer(bad, entries)
