"""OrchesjobOperator in-process against the real sshd and CLI: the fine-grained cases of its retry contract.

Each "try" is a fresh operator object executed with the same task-instance context (so the same default run key),
like a new worker process. Deferral is followed the way Airflow does it: ``execute`` raises ``TaskDeferred``, the
trigger runs under asyncio until its event, ``execute_complete`` gets the payload. The same behaviours are shown
end to end through ``airflow dags test`` in test_airflow_*.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from orchesjob_provider.compat import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
    TaskDeferred,
)
from orchesjob_provider.exceptions import OrchesjobInvalidArgument
from orchesjob_provider.give_up import TryIdentity
from orchesjob_provider.hooks.orchesjob import OrchesjobHook
from orchesjob_provider.operators.orchesjob import OrchesjobOperator
from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger
from tests.support.airflow_case import pid_alive, wait_dead
from tests.support.operator_unit import (
    airflow_answers,
    context,
    drive,
    held_job,
    record_log,
    run_trigger,
    sh_job,
    stop_run,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.sshd, pytest.mark.airflow]


@pytest.fixture
def make_op(ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str):
    def make(**kwargs: Any) -> OrchesjobOperator:
        kwargs.setdefault("task_id", "unit_task")
        kwargs.setdefault("poll_interval", 5)
        kwargs.setdefault("hook_kwargs", {"retry_backoff": 0.1})
        return OrchesjobOperator(
            ssh_conn_id=ssh_conn_id, orchesjob_bin=orchesjob_launcher, orchesjob_home=orchesjob_home, **kwargs
        )

    return make


@pytest.fixture
def cli(ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str):
    """A hook to look at the host the way an operator would not: every attempt, raw logs."""
    hook = OrchesjobHook(ssh_conn_id, orchesjob_bin=orchesjob_launcher, orchesjob_home=orchesjob_home)
    yield hook
    hook.close()


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_status(hook: OrchesjobHook, job_id: str, statuses: tuple, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = hook.status(job_id=job_id)
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        time.sleep(0.2)


def read_pids(tmp_path: Path, *names: str, timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    pids = []
    for name in names:
        path = tmp_path / name
        while not (path.exists() and path.read_text().strip()):
            assert time.monotonic() < deadline, f"{name} never written"
            time.sleep(0.1)
        pids.append(int(path.read_text().strip()))
    return pids


def tree_job(tmp_path: Path, seconds: int = 300) -> list[str]:
    """A job with a child process, both recording their pids, so a test can check the whole tree is gone."""
    return sh_job(
        f"echo $$ > {tmp_path}/main.pid; sleep {seconds} & echo $! > {tmp_path}/child.pid; echo started; wait"
    )


def gated_job(gates: Path, script: str) -> list[str]:
    """``script`` as a job that first waits for the file ``gates/open-<its attempt number>`` (at most 60 s, so a
    failed test leaves nothing waiting): the test decides when the job may go on, not the machine's speed."""
    return sh_job(
        f'n=0; while [ ! -e {gates}/open-"$ORCHESJOB_ATTEMPT" ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done; '
        + script
    )


def open_gate(gates: Path, attempt: int) -> None:
    (gates / f"open-{attempt}").touch()


def open_gate_once_started(gates: Path, attempt: int, log: Any) -> threading.Thread:
    """Open the gate of `attempt` from another thread as soon as the operator has logged that it started the job
    (so the start's answer found the job still running), for a try that waits in the worker."""

    def opener() -> None:
        deadline = time.monotonic() + 60
        while not any(m.startswith("Started job") for m in log.messages()):
            if time.monotonic() > deadline:
                return  # the test fails on its own: the job's gate gives up after 60 s
            time.sleep(0.05)
        open_gate(gates, attempt)

    thread = threading.Thread(target=opener, daemon=True)
    thread.start()
    return thread


class _GateOpener(threading.Thread):
    def __init__(self, gate: Path, condition: Any) -> None:
        super().__init__(daemon=True)
        self.gate, self.condition, self.opened = gate, condition, False

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while not self.condition():
            if time.monotonic() > deadline:
                return  # the test fails on its own: `opened` stays False (the job's gate gives up after 60 s)
            time.sleep(0.05)
        self.gate.touch()
        self.opened = True


def open_gate_when(gate: Path, condition: Any) -> _GateOpener:
    """Touch `gate` from another thread once `condition()` holds (within 60 s); `.opened` says whether it did."""
    opener = _GateOpener(gate, condition)
    opener.start()
    return opener


# ---------------------------------------------------------------------- retries: reattach, adopt, new attempt


def test_second_try_while_running_reattaches_to_the_same_job(make_op, tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    gates = tmp_path / "gates"
    gates.mkdir()
    # the job runs on only once the second try has reattached to it: both tries find it running
    command = gated_job(gates, f'echo "$ORCHESJOB_JOB_ID" >> {marker}; for i in 1 2 3; do echo "step $i"; done')
    ctx = context()
    with pytest.raises(TaskDeferred) as first:
        make_op(command=command).execute(ctx)
    job_id = first.value.trigger.job_id

    # The worker of try 1 is gone; try 2 is a new operator object with the same task instance.
    second_op = make_op(command=command)
    log = record_log(second_op)
    with pytest.raises(TaskDeferred) as second:
        second_op.execute(ctx)
    assert second.value.trigger.job_id == job_id
    assert any("Reattached" in m for m in log.messages())
    open_gate(gates, 1)
    result = drive(second_op, ctx, second.value)

    assert result["job_id"] == job_id and result["status"] == "SUCCEEDED" and result["attempt_no"] == 1
    assert lines(marker) == [job_id], "the job ran more than once"


@pytest.mark.parametrize("shared", [True, False], ids=["shared-watcher", "own-watcher"])
def test_shared_watcher_choice_reaches_the_trigger_and_both_finish(make_op, tmp_path: Path, shared: bool) -> None:
    ctx = context()
    gates = tmp_path / "gates"
    gates.mkdir()
    command = gated_job(gates, "echo one; echo two")  # runs on once the try has deferred
    op = make_op(command=command, **({} if shared else {"shared_watcher": False}))
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    assert deferred.value.trigger.shared_watcher is shared
    assert deferred.value.trigger.serialize()[1]["shared_watcher"] is shared
    open_gate(gates, 1)
    assert drive(op, ctx, deferred.value)["status"] == "SUCCEEDED"


def test_second_try_after_success_adopts_the_result(make_op, tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    gates = tmp_path / "gates"
    gates.mkdir()
    # the job waits until the first try has deferred: a job that ended before the operator decided is not deferred
    command = gated_job(gates, f"echo run >> {marker}; echo 'out 1'; echo 'err 1' >&2; echo 'out 2'")
    ctx = context()
    op = make_op(command=command)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    open_gate(gates, 1)
    first = drive(op, ctx, deferred.value)

    again = make_op(command=command)
    log = record_log(again)
    second = again.execute(ctx)  # no TaskDeferred: the job already SUCCEEDED

    assert lines(marker) == ["run"]
    # the same job; adopting it made this try's request its owner (contract 2), the rest is as try 1 saw it
    assert second["owner"] == again._request_id != first["owner"]
    assert {k: v for k, v in second.items() if k != "owner"} == {k: v for k, v in first.items() if k != "owner"}
    assert (second["status"], second["exit_code"], second["attempt_no"]) == ("SUCCEEDED", 0, 1)
    assert any("Adopted" in m and "nothing was run again" in m for m in log.messages())
    # The adopted job's output is shown once in the new try's log.
    assert log.lines("stdout") == ["out 1", "out 2"] and log.lines("stderr") == ["err 1"]


@pytest.mark.parametrize(
    "path", ["deferrable", "deferrable-job-ended-first", "polling"], ids=["deferrable", "ended-first", "polling"]
)
def test_try_after_failure_runs_attempt_2_and_the_message_quotes_stderr(
    make_op, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """A try after a failed one starts attempt 2, and the failure's message quotes the last stderr lines.

    Each attempt's job waits on a gate the test opens, so which way the operator goes is the test's choice:
    deferrable, the gate opens after the deferral (the job is still running when the operator decides, so it must
    defer, and the result comes from the trigger); ended-first, the start's answer comes only once the job has
    ended (the host was slow to answer), so the operator must not defer and takes the result at once; polling, the
    gate opens once the job was started and the try waits for it in the worker.
    """
    marker = tmp_path / "runs"
    flag = tmp_path / "failed-once"
    gates = tmp_path / "gates"
    gates.mkdir()
    command = gated_job(
        gates,
        f"echo run >> {marker}; "
        f"if [ ! -e {flag} ]; then touch {flag}; "
        'for i in 1 2 3 4 5; do echo "stderr line $i" >&2; done; exit 7; fi; echo fine',
    )
    ctx = context()
    if path == "deferrable-job-ended-first":
        open_gate(gates, 1)
        open_gate(gates, 2)
        real_start = OrchesjobHook.start

        def start_answered_once_ended(self: OrchesjobHook, *args: Any, **kwargs: Any) -> Any:
            job = real_start(self, *args, **kwargs)
            ended = wait_status(self, job["job_id"], ("SUCCEEDED", "FAILED"))
            # what `start` would have answered after the end: the job's view now (start leaves out these two)
            return {**job, **{k: v for k, v in ended.items() if k not in ("strict", "strict_override_used")}}

        monkeypatch.setattr(OrchesjobHook, "start", start_answered_once_ended)

    def attempt(no: int) -> dict[str, Any]:
        op = make_op(command=command, deferrable=path != "polling", stderr_tail_lines=3)
        log = record_log(op)
        if path == "polling":
            opener = open_gate_once_started(gates, no, log)
            try:
                return op.execute(ctx)
            finally:
                opener.join(timeout=60)
        if path == "deferrable-job-ended-first":
            try:
                return op.execute(ctx)  # never TaskDeferred: the job had ended when the operator decided
            finally:
                # this try started the job (it adopted nothing) and showed the job's whole output at once
                assert any(m.startswith("Started job") and f"attempt {no})" in m for m in log.messages())
                assert (log.lines("stdout"), len(log.lines("stderr"))) == (([], 5) if no == 1 else (["fine"], 0))
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(ctx)  # a new job that is still running: the operator must defer
        open_gate(gates, no)
        return drive(op, ctx, deferred.value)

    with pytest.raises(AirflowException) as failure:
        attempt(1)
    message = str(failure.value)
    assert "FAILED" in message and "exited with code 7" in message
    assert "stderr line 3\nstderr line 4\nstderr line 5" in message
    assert "stderr line 2" not in message  # only the last stderr_tail_lines lines
    assert not isinstance(failure.value, AirflowSkipException)

    result = attempt(2)
    assert (result["status"], result["attempt_no"], result["exit_code"]) == ("SUCCEEDED", 2, 0)
    assert lines(marker) == ["run", "run"]


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "polling"])
def test_skip_on_exit_code_skips_and_other_codes_fail(make_op, deferrable: bool) -> None:
    def outcome(code: int) -> BaseException:
        op = make_op(
            command=f"echo bye >&2; exit {code}",
            deferrable=deferrable,
            skip_on_exit_code=[99, 100],
            run_key=f"skip-{code}",
        )
        ctx = context()
        try:
            try:
                op.execute(ctx)
            except TaskDeferred as deferred:
                drive(op, ctx, deferred)
        except BaseException as exc:  # noqa: BLE001 - the outcome is the exception
            return exc
        raise AssertionError("the job must not succeed")

    skipped = outcome(99)
    assert isinstance(skipped, AirflowSkipException) and "99" in str(skipped)
    failed = outcome(3)
    assert isinstance(failed, AirflowException) and not isinstance(failed, AirflowSkipException)
    assert "exited with code 3" in str(failed)


def test_strict_never_runs_twice_even_after_a_failure(make_op, tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    command = sh_job(f"echo run >> {marker}; exit 4")
    ctx = context()
    for _ in range(2):
        op = make_op(command=command, idempotency="strict", deferrable=False)
        with pytest.raises(AirflowException, match="exited with code 4"):
            op.execute(ctx)
    assert lines(marker) == ["run"]


# ---------------------------------------------------------------------- parameters and quoting


def test_existing_job_with_other_parameters_fails_unless_allowed(make_op, tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    original = make_op(command=sh_job(f"echo original >> {marker}"), run_key="shared-key", deferrable=False)
    first = original.execute(context())

    other = make_op(command=sh_job(f"echo other >> {marker}"), run_key="shared-key", deferrable=False, env={"X": "1"})
    with pytest.raises(AirflowFailException) as refused:  # AirflowFail: retrying cannot help
        other.execute(context())
    message = str(refused.value)
    assert "shared-key" in message and "different command, cwd, env or timeout" in message
    assert "allow_parameter_mismatch=True" in message and first["job_id"] in message

    allowed = make_op(
        command=sh_job(f"echo other >> {marker}"), run_key="shared-key", deferrable=False, allow_parameter_mismatch=True
    )
    log = record_log(allowed)
    adopted = allowed.execute(context())
    assert adopted["job_id"] == first["job_id"]
    assert any("allow_parameter_mismatch=True" in m for m in log.messages())
    assert lines(marker) == ["original"]


HOSTILE = [
    'it\'s "quoted"',
    "$(touch {pwned})",
    "`touch {pwned}`",
    "a; touch {pwned}; b",
    "line one\nline two",
    "&& || | > < * ? ~ # ! {{ }} \\",
    "  leading and trailing spaces  ",
    "",
]


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "polling"])
def test_injection_strings_arrive_literally(make_op, tmp_path: Path, deferrable: bool) -> None:
    pwned = tmp_path / "pwned"
    hostile = [h.format(pwned=pwned) for h in HOSTILE]
    # Slashes cannot be in a name, so the absolute paths inside make this a few levels deep: still one path.
    cwd = Path(f"{tmp_path}/dir 'with' $(touch {pwned}) `touch {pwned}` ; and\nnewline")
    cwd.mkdir(parents=True)
    report = tmp_path / "report.json"
    script = (
        "import json, os, sys; "
        f"json.dump({{'argv': sys.argv[1:], 'cwd': os.getcwd(), "
        f"'env': {{k: os.environ.get(k) for k in ('H1', 'H2', 'H3')}}}}, open({str(report)!r}, 'w'))"
    )
    run_key = f"key 'q' \"dq\" $(touch {pwned}) `touch {pwned}` ; touch {pwned} & | \\"
    op = make_op(
        command=[sys.executable, "-c", script, *hostile],
        env={"H1": hostile[0], "H2": hostile[1] + hostile[4], "H3": hostile[3]},
        cwd=str(cwd),
        run_key=run_key,
        deferrable=deferrable,
    )
    ctx = context()
    try:
        result = op.execute(ctx)
    except TaskDeferred as deferred:
        assert deferred.trigger.run_key == run_key
        result = drive(op, ctx, deferred)

    assert result["status"] == "SUCCEEDED" and result["run_key"] == run_key
    seen = json.loads(report.read_text())
    assert seen["argv"] == hostile
    assert seen["cwd"] == str(cwd)
    assert seen["env"] == {"H1": hostile[0], "H2": hostile[1] + hostile[4], "H3": hostile[3]}
    assert not pwned.exists(), "a hostile string was executed by a shell"


def test_string_command_reaches_the_jobs_shell_unchanged(make_op, cli, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    text = f"printf '%s|' 'a;b' \"$(echo sub)\" '`x`' '$(touch {pwned})'; echo"
    result = make_op(command=text, deferrable=False, run_key="string-command").execute(context())
    assert result["command"] == ["/bin/sh", "-c", text]
    out = cli.logs(job_id=result["job_id"])["data"]
    # The job's own shell interpreted it (that is what a string command means), exactly once and as written.
    assert out == f"a;b|sub|`x`|$(touch {pwned})|\n"
    assert not pwned.exists()


def test_a_run_key_with_a_newline_is_refused_and_nothing_runs(make_op, tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    op = make_op(command=sh_job(f"touch {pwned}"), run_key="two\nlines", deferrable=False)
    with pytest.raises(OrchesjobInvalidArgument, match="control or unprintable"):
        op.execute(context())
    assert not pwned.exists()


# ---------------------------------------------------------------------- logs


def test_polling_mode_logs_each_line_once_while_the_job_runs(make_op, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    # the job goes on past its first lines only once the task's log shows line 1: logged while the job ran
    command = held_job(
        gate, "echo second; printf 'no newline at the end'", before="echo 'first q\"uote $(x) ✓'; echo 'warn 1' >&2; "
    )
    op = make_op(command=command, deferrable=False, poll_interval=10)
    log = record_log(op)
    opened = open_gate_when(gate, lambda: bool(log.lines("stdout")))
    result = op.execute(context())
    opened.join(5)

    assert result["status"] == "SUCCEEDED"
    assert log.lines("stdout") == ['first q"uote $(x) ✓', "second", "no newline at the end"]
    assert log.lines("stderr") == ["warn 1"]
    assert opened.opened, "line 1 reached the task's log only after the job had ended (or not within 60 s)"


def test_deferrable_mode_logs_each_line_once_across_a_trigger_restart(make_op, tmp_path: Path) -> None:
    """A triggerer restart mid-job: the rebuilt trigger continues at the logged offsets."""
    gate = tmp_path / "gate"
    # lines 1-3, then the job waits until the first trigger has logged something and been stopped: mid-job
    command = held_job(
        gate, 'for i in 4 5 6; do echo "line $i"; done', before='for i in 1 2 3; do echo "line $i"; done; '
    )
    op = make_op(command=command, poll_interval=10)
    ctx = context()
    try:
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(ctx)
        trigger = deferred.value.trigger
        first_log = record_log(trigger)

        async def run_until_a_line_is_logged() -> None:
            gen = trigger.run()
            task = asyncio.ensure_future(gen.__anext__())
            deadline = time.monotonic() + 60
            try:
                while not first_log.lines("stdout") and time.monotonic() < deadline:
                    done, _ = await asyncio.wait({task}, timeout=0.02)
                    if done:
                        break
                assert not task.done(), "the first trigger ended while the job waited at its gate: %r" % (
                    task.result(),
                )
            finally:
                await stop_run(task, gen)

        asyncio.run(run_until_a_line_is_logged())
    finally:
        gate.touch()
    path, kwargs = trigger.serialize()
    rebuilt = OrchesjobTrigger(**json.loads(json.dumps(kwargs)))
    second_log = record_log(rebuilt)
    payload = run_trigger(rebuilt)
    result = op.execute_complete(ctx, payload)

    assert result["status"] == "SUCCEEDED"
    before, after = first_log.lines("stdout"), second_log.lines("stdout")
    assert before, "nothing was logged before the restart"
    assert before + after == [f"line {i}" for i in range(1, 7)]


# ---------------------------------------------------------------------- killing and timeouts


def test_on_kill_of_a_polling_task_aborts_the_remote_process_tree(make_op, cli, tmp_path: Path, monkeypatch) -> None:
    airflow_answers(monkeypatch, ("failed", 1))  # a user marked the task instance failed
    op = make_op(command=tree_job(tmp_path), deferrable=False, poll_interval=2, abort_grace_seconds=2)
    seen: dict[str, Any] = {}

    def killer() -> None:
        # What Airflow does when the task is marked failed or success: call on_kill while
        # execute() is still waiting (Airflow calls execute in the main thread, so the test does too).
        try:
            seen["pids"] = read_pids(tmp_path, "main.pid", "child.pid")
            seen["alive"] = [pid_alive(p) for p in seen["pids"]]
        finally:
            op.on_kill()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    with pytest.raises(AirflowException) as failure:
        op.execute(context())
    thread.join(30)
    assert seen["alive"] == [True, True]
    assert wait_dead(seen["pids"]) == []
    job = cli.status(job_id=op._job_id)
    assert job["status"] == "ABORTED" and "killed" in (job["abort_reason"] or "")
    assert "ABORTED" in str(failure.value)


def test_a_kill_while_the_start_is_in_flight_aborts_by_run_key_only_what_this_start_made(
    make_op, cli, tmp_path: Path, monkeypatch
) -> None:
    """on_kill can arrive after the host launched the job but before the start's answer reached the operator (the
    job id is not known yet). The abort then names the run key and this try's request id: the host aborts the job
    only if this start made it or took it over, never another request's job of the key."""
    airflow_answers(monkeypatch, ("failed", None))  # the task was marked failed
    op = make_op(command=tree_job(tmp_path), deferrable=False, abort_grace_seconds=1)
    op._try = TryIdentity.from_context(context())
    key, request = "in-flight", "airflow:unit:in-flight:try1"
    # the host side of a start in flight: its job runs, owned by this try's request
    job = cli.start(key, tree_job(tmp_path), request_id=request)
    pids = read_pids(tmp_path, "main.pid", "child.pid")
    op._request_id, op._starting = request, key  # what execute() holds while hook.start() has not returned
    assert op._job_id is None
    op.on_kill()
    assert wait_dead(pids) == []
    assert cli.status(job_id=job["job_id"])["status"] == "ABORTED"
    # another request's running job of the key is left alone
    (tmp_path / "b").mkdir()
    other = cli.start(key, tree_job(tmp_path / "b"), request_id="airflow:unit:in-flight:try2")
    others = read_pids(tmp_path / "b", "main.pid", "child.pid")
    op.on_kill()
    assert cli.status(job_id=other["job_id"])["status"] == "RUNNING" and all(pid_alive(p) for p in others)
    # once the start has answered but its job was not accepted (a parameter mismatch), nothing is aborted
    op._request_id, op._starting = "airflow:unit:in-flight:try2", None
    op.on_kill()
    assert cli.status(job_id=other["job_id"])["status"] == "RUNNING"
    cli.abort(job_id=other["job_id"], grace_seconds=1)


def test_trigger_on_kill_aborts_the_remote_process_tree(make_op, cli, tmp_path: Path, monkeypatch) -> None:
    """Airflow 3.3's triggerer calls the trigger's on_kill when a user marks a deferred task failed or success."""
    airflow_answers(monkeypatch, ("success", None))
    op = make_op(command=tree_job(tmp_path), abort_grace_seconds=2)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context())
    trigger = deferred.value.trigger
    assert trigger.abort_on_kill
    pids = read_pids(tmp_path, "main.pid", "child.pid")
    log = record_log(trigger)

    async def run_then_kill() -> None:
        task = asyncio.ensure_future(_drain(trigger))
        deadline = time.monotonic() + 60
        while "started" not in log.lines("stdout"):  # the trigger is watching the job: it relayed its first line
            assert time.monotonic() < deadline and not task.done(), log.messages()
            await asyncio.sleep(0.02)
        task.cancel()  # the triggerer cancels the trigger, then calls on_kill
        await trigger.on_kill()

    asyncio.run(run_then_kill())
    assert wait_dead(pids) == []
    assert cli.status(job_id=trigger.job_id)["status"] == "ABORTED"


def test_a_stale_try_never_aborts_the_job_a_newer_try_reattached_to(make_op, cli, tmp_path: Path, monkeypatch) -> None:
    """Try 1 deferred; try 2 (a new request id) reattached to the same job and so became its owner. Killing try 1
    afterwards (its trigger's on_kill, or the operator's on_kill) names try 1's request id, which the host refuses:
    a warning names the job and its owner, and the job keeps running for try 2. Try 2's own kill aborts it. Airflow
    is made to answer "failed" without a try number (as Airflow 3 does), so the owner lock alone is tested here."""
    airflow_answers(monkeypatch, ("failed", None))
    command = tree_job(tmp_path)
    op1 = make_op(command=command, abort_grace_seconds=1)
    with pytest.raises(TaskDeferred) as first:
        op1.execute(context(try_number=1))
    stale = first.value.trigger
    assert stale.request_id and ":try1:" in stale.request_id
    assert stale.serialize()[1]["request_id"] == stale.request_id  # it travels with the trigger
    pids = read_pids(tmp_path, "main.pid", "child.pid")

    op2 = make_op(command=command, abort_grace_seconds=1)
    with pytest.raises(TaskDeferred) as second:
        op2.execute(context(try_number=2))
    current = second.value.trigger
    job_id = current.job_id
    assert job_id == stale.job_id and ":try2:" in current.request_id
    assert cli.status(job_id=job_id)["owner"] == current.request_id

    trigger_log = record_log(stale)
    asyncio.run(stale.on_kill())
    op_log = record_log(op1)
    op1.on_kill()
    job = cli.status(job_id=job_id)
    assert job["status"] == "RUNNING" and job["owner"] == current.request_id
    for log in (trigger_log, op_log):
        warnings = [m for m in log.messages() if "ot aborting" in m]
        assert len(warnings) == 1 and job_id in warnings[0] and current.request_id in warnings[0], log.messages()

    asyncio.run(current.on_kill())
    assert wait_dead(pids) == []
    assert cli.status(job_id=job_id)["status"] == "ABORTED"


def test_a_kill_while_the_task_instance_still_wants_the_job_leaves_it_running(
    make_op, cli, tmp_path: Path, monkeypatch
) -> None:
    """A cleared deferred task (Airflow: no state yet, then a new try), a triggerer takeover (still deferred) or a
    try that failed with a retry to come (up_for_retry: a worker that stalled past the heartbeat timeout): neither
    the trigger's nor the worker's on_kill aborts; each says so at INFO."""
    op = make_op(command=tree_job(tmp_path), abort_grace_seconds=1)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context(try_number=3))
    trigger = deferred.value.trigger
    assert trigger.try_identity == {
        "dag_id": "unit_dag",
        "task_id": "unit_task",
        "run_id": "manual__unit",
        "map_index": -1,
        "try_number": 3,
    }
    for state in ("deferred", None, "restarting", "up_for_retry"):  # up_for_retry: a retry comes and reattaches
        airflow_answers(monkeypatch, (state, None))
        log = record_log(trigger)
        asyncio.run(trigger.on_kill())
        assert any("still wants the job" in m for m in log.messages()), log.messages()
        log = record_log(op)
        op.on_kill()
        assert any("still wants the job" in m for m in log.messages()), log.messages()
    assert cli.status(job_id=trigger.job_id)["status"] == "RUNNING"
    airflow_answers(monkeypatch, ("failed", 3))
    asyncio.run(trigger.on_kill())
    assert cli.status(job_id=trigger.job_id)["status"] == "ABORTED"


def test_when_airflow_cannot_answer_the_job_runs_on_and_a_warning_says_how_to_abort_it(
    make_op, cli, tmp_path: Path, monkeypatch, orchesjob_launcher: str, orchesjob_home: str
) -> None:
    from orchesjob_provider.give_up import manual_abort_command

    op = make_op(command=tree_job(tmp_path), abort_grace_seconds=1)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context())
    trigger = deferred.value.trigger
    job_id = trigger.job_id
    command = manual_abort_command(job_id, orchesjob_launcher, orchesjob_home)
    airflow_answers(monkeypatch, ConnectionError("the api-server did not answer"))
    _, kwargs = trigger.serialize()
    kwargs.pop("try_identity")  # what a provider before this field saved
    old = OrchesjobTrigger(**kwargs)
    logs = [record_log(trigger), record_log(old), record_log(op)]
    asyncio.run(trigger.on_kill())
    asyncio.run(old.on_kill())
    op.on_kill()
    assert cli.status(job_id=job_id)["status"] == "RUNNING"
    warned = [m for r in logs for m in r.messages() if m.startswith("Not aborting")]
    assert len(warned) == 3, warned
    assert all(job_id in m and command in m for m in warned), warned
    assert "api-server did not answer" in warned[0] and "not known" in warned[1]
    # The command it names really aborts the job.
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert cli.status(job_id=job_id)["status"] == "ABORTED"


def test_execution_timeout_of_a_polling_task_aborts_although_the_task_instance_still_runs(
    make_op, cli, tmp_path: Path, monkeypatch
) -> None:
    """Airflow's own timeout (SIGALRM) interrupts execute, then Airflow calls on_kill while the state is still
    "running": the job must be aborted all the same, by execute itself."""
    try:
        from airflow.sdk.execution_time.timeout import timeout
    except ImportError:  # Airflow 2
        from airflow.utils.timeout import timeout  # type: ignore[no-redef,import-not-found,unused-ignore]
    from orchesjob_provider.compat import AirflowTaskTimeout

    airflow_answers(monkeypatch, ("running", 1))
    op = make_op(command=tree_job(tmp_path), deferrable=False, poll_interval=2, abort_grace_seconds=1)
    log = record_log(op)
    with pytest.raises(AirflowTaskTimeout):
        try:
            with timeout(12):  # long after the job has started (its tree writes the pid files read below)
                op.execute(context())
        except AirflowTaskTimeout:
            op.on_kill()  # what Airflow's task runner does next
            raise
    pids = read_pids(tmp_path, "main.pid", "child.pid")
    assert wait_dead(pids) == []
    job = cli.status(job_id=op._job_id)
    assert job["status"] == "ABORTED" and "execution_timeout" in job["abort_reason"]
    assert not any("still wants" in m for m in log.messages())


async def _drain(trigger: OrchesjobTrigger) -> None:
    async for _ in trigger.run():
        pass


def test_deferred_deadline_aborts_the_job(make_op, cli, tmp_path: Path) -> None:
    """execution_timeout of a deferred task: the trigger fires before Airflow's own timeout, the task aborts."""
    from datetime import timedelta

    op = make_op(command=tree_job(tmp_path), execution_timeout=timedelta(seconds=7), abort_grace_seconds=2)
    ctx = context()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    trigger = deferred.value.trigger
    assert trigger.deadline is not None and trigger.deadline - time.time() < 3
    pids = read_pids(tmp_path, "main.pid", "child.pid")
    payload = run_trigger(trigger, timeout=30)
    assert payload["status"] == "timeout"
    resumed = make_op(command=tree_job(tmp_path), execution_timeout=timedelta(seconds=7), abort_grace_seconds=2)
    with pytest.raises(AirflowException, match="execution_timeout.*aborted"):
        resumed.execute_complete(ctx, payload)
    assert wait_dead(pids) == []
    assert cli.status(job_id=trigger.job_id)["status"] == "ABORTED"


def test_deadline_with_abort_on_kill_false_leaves_the_job_for_the_next_try(make_op, cli, tmp_path: Path) -> None:
    from datetime import timedelta

    marker, gate = tmp_path / "runs", tmp_path / "gate"
    # the job runs until the test opens its gate: past the deadline, and still when the next try looks for it
    command = held_job(gate, "", before=f"echo run >> {marker}; ")
    ctx = context()
    op = make_op(command=command, execution_timeout=timedelta(seconds=6), abort_on_kill=False)
    try:
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(ctx)
        payload = run_trigger(deferred.value.trigger, timeout=30)
        assert payload["status"] == "timeout"
        with pytest.raises(AirflowException, match="left running"):
            make_op(command=command, abort_on_kill=False).execute_complete(ctx, payload)
        assert cli.status(job_id=payload["job_id"])["active"]

        retry = make_op(command=command, abort_on_kill=False)
        with pytest.raises(TaskDeferred) as again:
            retry.execute(ctx)
        assert again.value.trigger.job_id == payload["job_id"]
    finally:
        gate.touch()
    result = drive(retry, ctx, again.value)
    assert result["job_id"] == payload["job_id"] and result["status"] == "SUCCEEDED"
    assert lines(marker) == ["run"]


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "polling"])
def test_the_jobs_own_timeout_aborts_it_on_the_host(make_op, tmp_path: Path, deferrable: bool) -> None:
    op = make_op(command=tree_job(tmp_path), timeout=2, deferrable=deferrable, poll_interval=5)
    ctx = context()
    started = time.monotonic()
    with pytest.raises(AirflowException) as failure:
        try:
            op.execute(ctx)
        except TaskDeferred as deferred:
            drive(op, ctx, deferred)
    pids = read_pids(tmp_path, "main.pid", "child.pid")
    assert wait_dead(pids) == []
    assert time.monotonic() - started < 30
    assert "timeout" in str(failure.value).lower()


# ---------------------------------------------------------------------- a task's timeout says what became of its job


def test_a_task_that_refused_a_job_of_other_parameters_never_takes_it_over(make_op, cli, tmp_path: Path) -> None:
    """Two tasks share a run key with different commands. B is answered with A's running job and refuses to adopt
    it: B must not become its owner. A's execution_timeout then really aborts A's job, and says so."""
    from datetime import timedelta

    marker = tmp_path / "runs"
    command_a = sh_job(f"echo run >> {marker}; " + " ".join(tree_job(tmp_path)[2:]))
    op_a = make_op(
        command=command_a, run_key="shared-key", execution_timeout=timedelta(seconds=8), abort_grace_seconds=1
    )
    ctx_a = context(task_id="a")
    with pytest.raises(TaskDeferred) as deferred:
        op_a.execute(ctx_a)
    trigger = deferred.value.trigger
    pids = read_pids(tmp_path, "main.pid", "child.pid")

    op_b = make_op(task_id="b", command=sh_job("echo other"), run_key="shared-key", deferrable=False)
    with pytest.raises(AirflowFailException, match="Refusing to adopt"):
        op_b.execute(context(task_id="b"))
    job = cli.status(job_id=trigger.job_id)
    assert job["status"] == "RUNNING" and job["owner"] == trigger.request_id  # still A's

    payload = run_trigger(trigger, timeout=30)  # its deadline: 3 s after the start, the job still runs
    assert payload["status"] == "timeout"
    with pytest.raises(AirflowException) as failed:
        op_a.execute_complete(ctx_a, payload)
    assert "execution_timeout" in str(failed.value) and str(failed.value).endswith("it was aborted")
    assert wait_dead(pids) == []
    job = cli.status(job_id=trigger.job_id)
    assert job["status"] == "ABORTED" and "execution_timeout" in job["abort_reason"]
    assert lines(marker) == ["run"]


def test_a_task_that_allows_a_mismatch_takes_the_job_over(make_op, cli, tmp_path: Path) -> None:
    """allow_parameter_mismatch=True adopts the job on purpose: then it is its owner, and its kill aborts it."""
    started = cli.start("adopted-key", tree_job(tmp_path), request_id="someone-else")
    pids = read_pids(tmp_path, "main.pid", "child.pid")
    adopter = make_op(
        command=sh_job("echo other"), run_key="adopted-key", allow_parameter_mismatch=True, abort_grace_seconds=1
    )
    with pytest.raises(TaskDeferred) as deferred:
        adopter.execute(context())
    trigger = deferred.value.trigger
    assert trigger.job_id == started["job_id"]
    assert cli.status(job_id=started["job_id"])["owner"] == trigger.request_id
    with pytest.raises(AirflowException, match="it was aborted"):
        adopter.execute_complete(context(), trigger._event("timeout", message="the deadline passed").payload)
    assert wait_dead(pids) == []
    assert cli.status(job_id=started["job_id"])["status"] == "ABORTED"


def test_a_timeout_of_a_try_whose_job_a_newer_try_took_over_says_it_was_not_aborted(
    make_op, cli, tmp_path: Path
) -> None:
    """Try 1's deadline passes after try 2 reattached to the job: the host refuses try 1's abort (not_owner), and the
    task's failure says so instead of claiming the job was aborted."""
    from datetime import timedelta

    command = tree_job(tmp_path)
    ctx1 = context(try_number=1)
    op1 = make_op(command=command, execution_timeout=timedelta(seconds=8), abort_grace_seconds=1)
    with pytest.raises(TaskDeferred) as first:
        op1.execute(ctx1)
    op2 = make_op(command=command, abort_grace_seconds=1)
    with pytest.raises(TaskDeferred) as second:
        op2.execute(context(try_number=2))
    assert second.value.trigger.job_id == first.value.trigger.job_id
    payload = run_trigger(first.value.trigger, timeout=30)
    assert payload["status"] == "timeout"
    with pytest.raises(AirflowException) as failed:
        op1.execute_complete(ctx1, payload)
    message = str(failed.value)
    assert "NOT aborted" in message and second.value.trigger.request_id in message, message
    assert "it was aborted" not in message
    assert cli.status(job_id=payload["job_id"])["status"] == "RUNNING"
    cli.abort(job_id=payload["job_id"], grace_seconds=1)


def test_a_job_that_ended_just_before_the_timeout_abort_is_reported_as_it_ended(make_op, cli, tmp_path: Path) -> None:
    """The trigger saw the job running at its deadline; it SUCCEEDED before the task's abort reached the host.
    The host refuses the abort (not running), and the task reports the job's real end: success, not "aborted"."""
    gate = tmp_path / "gate"
    command = sh_job(f"echo working; while [ ! -e {gate} ]; do sleep 0.1; done; echo finished")
    op = make_op(command=command, abort_grace_seconds=1)
    ctx = context()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    trigger = deferred.value.trigger
    timeout_event = trigger._event("timeout", message=f"the job {trigger.job_id} was still running at the deadline")
    gate.touch()
    wait_status(cli, trigger.job_id, ("SUCCEEDED",))
    log = record_log(op)
    result = op.execute_complete(ctx, timeout_event.payload)
    assert result["status"] == "SUCCEEDED" and result["job_id"] == trigger.job_id
    assert log.lines("stdout") == ["working", "finished"]
    assert not any("Aborted job" in m for m in log.messages())


def test_a_late_trigger_of_a_job_that_succeeded_in_time_succeeds_the_task(make_op, cli, tmp_path: Path) -> None:
    """The finding: the trigger starts after its deadline (a busy triggerer) while the job had SUCCEEDED in time.
    The task succeeds with the job's result and output; it neither fails nor claims the job was aborted."""
    from datetime import timedelta

    marker = tmp_path / "runs"
    op = make_op(command=sh_job(f"echo run >> {marker}; echo quick"), execution_timeout=timedelta(seconds=7))
    ctx = context()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    trigger = deferred.value.trigger
    wait_status(cli, trigger.job_id, ("SUCCEEDED",))
    # the condition is the wall clock itself: the task resumes after its deadline (time.time() is what it reads)
    time.sleep(max(0.0, trigger.deadline - time.time()) + 0.5)
    resumed = make_op(command=sh_job(f"echo run >> {marker}; echo quick"), execution_timeout=timedelta(seconds=7))
    log = record_log(resumed)
    result = drive(resumed, ctx, deferred.value)
    assert result["status"] == "SUCCEEDED" and result["job_id"] == trigger.job_id
    assert log.lines("stdout") == ["quick"]
    assert lines(marker) == ["run"]
