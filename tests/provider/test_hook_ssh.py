"""OrchesjobHook against a real sshd and the real CLI: what a worker does, end to end through SSH."""

from __future__ import annotations

import json
import shlex
import stat
from pathlib import Path

import pytest

from orchesjob.contract import CONTRACT_VERSION
from orchesjob_provider.command import StartMode
from orchesjob_provider.exceptions import (
    OrchesjobCliMissing,
    OrchesjobConflict,
    OrchesjobIncompatibleCli,
    OrchesjobInvalidArgument,
    OrchesjobNotFound,
    OrchesjobNotOwner,
    OrchesjobTransportError,
)
from orchesjob_provider.hooks.orchesjob import OrchesjobHook
from tests.support.cutproxy import CUT_CONN_ID, S2C, Cut, CutProxy, phases_of
from tests.support.hooks import wait_ended
from tests.support.operator_unit import record_log
from tests.support.ssh_hook_kwargs import fast_ssh_hook_kwargs

pytestmark = [pytest.mark.timeout(180), pytest.mark.sshd, pytest.mark.airflow]

INJECTION = [
    "it's",
    'say "hi"',
    "$(touch /tmp/orchesjob-pwned)",
    "`touch /tmp/orchesjob-pwned`",
    "a; touch /tmp/orchesjob-pwned",
    "x && y || z | w > /tmp/orchesjob-pwned",
    "line1\nline2",
    "$HOME ${PATH} ~",
    "-dash --run-key=evil",
    "ünï ✓ 日本 🚀",
    "*",
    "\\",
]


def read_all(hook: OrchesjobHook, job_id: str, stream: str = "stdout") -> str:
    data, offset = "", 0
    while True:
        chunk = hook.logs(job_id=job_id, stream=stream, offset=offset)
        data += chunk["data"]
        if chunk["next_offset"] >= chunk["size"]:
            return data
        offset = chunk["next_offset"]


def test_version_is_checked_and_cached(hook: OrchesjobHook) -> None:
    info = hook.version()
    assert info["contract"] == CONTRACT_VERSION
    assert hook.version() is info


def test_start_status_wait_logs(hook: OrchesjobHook) -> None:
    started = hook.start("basic", ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
    assert started["accepted"] is True and started["existing"] is False
    job_id = started["job_id"]
    job = wait_ended(hook, job_id)
    assert job["status"] == "FAILED" and job["exit_code"] == 3
    assert hook.status(run_key="basic")["job_id"] == job_id
    assert hook.status(job_id=job_id)["status"] == "FAILED"
    assert read_all(hook, job_id) == "out\n"
    assert read_all(hook, job_id, "stderr") == "err\n"
    history = hook.status(run_key="basic", all_attempts=True)
    assert isinstance(history, list) and [j["job_id"] for j in history] == [job_id]


def test_arguments_and_run_keys_arrive_literally(hook: OrchesjobHook, tmp_path: Path) -> None:
    pwned = Path("/tmp/orchesjob-pwned")
    if pwned.exists():
        pwned.unlink()
    run_key = "key 'quoted' \"double\" $(x) `y`; z"
    started = hook.start(run_key, ["printf", "%s\\n", *INJECTION])
    assert started["run_key"] == run_key
    assert started["command"] == ["printf", "%s\\n", *INJECTION]
    job = wait_ended(hook, started["job_id"])
    assert job["status"] == "SUCCEEDED"
    # printf's format is also passed literally, so "%s\\n" is a backslash-n, which printf turns into a newline.
    assert read_all(hook, started["job_id"]) == "".join(f"{arg}\n" for arg in INJECTION)
    assert hook.status(run_key=run_key)["job_id"] == started["job_id"]
    assert not pwned.exists()


def test_env_and_cwd_arrive_literally(hook: OrchesjobHook, tmp_path: Path) -> None:
    workdir = tmp_path / "work dir 'q' $(x)"
    workdir.mkdir()
    value = "v'\"$(touch /tmp/orchesjob-pwned); `x` \n end"
    started = hook.start(
        "env-cwd",
        ["/bin/sh", "-c", 'printf "%s|" "$MY_VAR"; pwd'],
        env={"MY_VAR": value},
        cwd=str(workdir),
    )
    job = wait_ended(hook, started["job_id"])
    assert job["status"] == "SUCCEEDED"
    # The value reached the job (its output shows it), but the hook hands on the name only.
    assert job["env"] == {"MY_VAR": "***"} and started["env"] == {"MY_VAR": "***"} and job["cwd"] == str(workdir)
    assert read_all(hook, started["job_id"]) == f"{value}|{workdir}\n"


def test_string_command_is_a_shell_snippet(hook: OrchesjobHook) -> None:
    started = hook.start("snippet", "echo one; echo two | tr a-z A-Z; exit 0")
    wait_ended(hook, started["job_id"])
    assert read_all(hook, started["job_id"]) == "one\nTWO\n"


def test_reuse_success_adopts_and_strict_never_reruns(hook: OrchesjobHook) -> None:
    first = hook.start("adopt", ["true"])
    wait_ended(hook, first["job_id"])
    again = hook.start("adopt", ["true"])
    assert again["existing"] is True and again["job_id"] == first["job_id"]
    changed = hook.start("adopt", ["false"])
    assert changed["job_id"] == first["job_id"] and changed["parameters_match"] is False

    failed = hook.start("retry-after-failure", ["false"])
    wait_ended(hook, failed["job_id"])
    second = hook.start("retry-after-failure", ["false"])
    assert second["existing"] is False and second["attempt_no"] == 2

    strict = hook.start("strict-key", ["false"], mode="strict")
    wait_ended(hook, strict["job_id"])
    assert hook.start("strict-key", ["false"], mode="strict")["job_id"] == strict["job_id"]
    unlocked = hook.unlock("strict-key", reason="data fix")
    assert unlocked["unlocked"] is True
    assert hook.start("strict-key", ["true"], mode="strict")["job_id"] != strict["job_id"]


def test_abort_then_conflict(hook: OrchesjobHook) -> None:
    started = hook.start("abort-me", ["sleep", "60"])
    aborted = hook.abort(job_id=started["job_id"], reason="test 'reason' $(x)", grace_seconds=1)
    assert aborted["status"] == "ABORTED"
    job = hook.status(job_id=started["job_id"])
    assert job["status"] == "ABORTED" and job["abort_reason"] == "test 'reason' $(x)"
    with pytest.raises(OrchesjobConflict) as info:
        hook.abort(job_id=started["job_id"])
    assert info.value.exit_code == 4 and info.value.payload["error"] == "inconsistent_state"


def test_rerun_and_clean(hook: OrchesjobHook) -> None:
    first = hook.start("rerun-me", ["true"])
    wait_ended(hook, first["job_id"])
    rerun = hook.rerun(run_key="rerun-me", reason="again")
    assert rerun["rerun_of_job_id"] == first["job_id"]
    wait_ended(hook, rerun["job_id"])
    preview = hook.clean(all_jobs=True, run_key="rerun-me", dry_run=True)
    assert preview["dry_run"] is True
    cleaned = hook.clean(job_id=first["job_id"])
    assert cleaned["deleted"] == 1
    with pytest.raises(OrchesjobNotFound):
        hook.status(job_id=first["job_id"])


def test_not_found_and_invalid_are_typed(hook: OrchesjobHook) -> None:
    with pytest.raises(OrchesjobNotFound) as info:
        hook.status(run_key="never started 'x'")
    assert info.value.exit_code == 3 and "never started" in info.value.message
    with pytest.raises(OrchesjobInvalidArgument) as info2:
        hook.start("", ["true"])
    assert info2.value.exit_code == 2
    with pytest.raises(OrchesjobInvalidArgument):
        hook.wait(job_id="x", timeout=-5)


def test_missing_cli_is_reported_clearly(ssh_conn_id: str, orchesjob_home: str) -> None:
    with OrchesjobHook(ssh_conn_id, orchesjob_bin="/nonexistent-dir/orchesjob", orchesjob_home=orchesjob_home) as h:
        with pytest.raises(OrchesjobCliMissing, match="the host has no /nonexistent-dir/orchesjob"):
            h.start("k", ["true"])
    with pytest.raises(ValueError, match="cannot go on the SSH command line"):
        OrchesjobHook(ssh_conn_id, orchesjob_bin="/nonexistent dir/orchesjob")  # refused before anything connects


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return str(path)


def test_incompatible_contract_is_refused(ssh_conn_id: str, orchesjob_home: str, tmp_path: Path) -> None:
    fake = _script(tmp_path / "orchesjob", 'echo \'{"version": "9.0.0", "contract": 99}\'\n')
    with OrchesjobHook(ssh_conn_id, orchesjob_bin=fake, orchesjob_home=orchesjob_home) as h:
        with pytest.raises(OrchesjobIncompatibleCli, match="contract 99"):
            h.status(run_key="k")


def test_start_is_retried_after_the_connection_dies_mid_call(
    ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str, tmp_path: Path
) -> None:
    """The first start reaches the host, starts the job, then the SSH session is killed before the answer comes
    back. The hook retries with the same request id and gets the same job: one execution."""
    marker = tmp_path / "cut-once"
    executions = tmp_path / "executions"
    wrapper = _script(
        tmp_path / "cutting-orchesjob",
        f'if [ "$1" = start ] && [ ! -e {shlex.quote(str(marker))} ]; then\n'
        f"  touch {shlex.quote(str(marker))}\n"
        f'  {shlex.quote(orchesjob_launcher)} "$@" >/dev/null\n'
        "  kill -9 $PPID\n"
        "  sleep 5\n"
        "fi\n"
        f'exec {shlex.quote(orchesjob_launcher)} "$@"\n',
    )
    with OrchesjobHook(
        ssh_conn_id,
        orchesjob_bin=wrapper,
        orchesjob_home=orchesjob_home,
        retry_backoff=0.1,
        ssh_hook_kwargs=fast_ssh_hook_kwargs(),
    ) as h:
        job = h.start("cut", ["/bin/sh", "-c", f"echo x >> {shlex.quote(str(executions))}"])
        assert marker.exists()
        assert job["existing"] is True and job["same_request"] is True
        wait_ended(h, job["job_id"])
        assert executions.read_text() == "x\n"
        assert len(h.status(run_key="cut", all_attempts=True)) == 1


@pytest.mark.parametrize("mode", ["default", "strict", "reuse_success"])
def test_a_start_whose_job_failed_before_the_retry_arrived_runs_once_and_returns_that_failure(
    cut_proxy: CutProxy, orchesjob_launcher: str, orchesjob_home: str, tmp_path: Path, mode: StartMode
) -> None:
    """ "Never twice", hole 5: the first start reaches the host and launches the job, which fails at once; the SSH
    link is cut in the middle of the answer. The hook must retry (the answer is lost) and the retry, a second
    later, must not start attempt 2 of a job that already FAILED: it repeats the call's request id, and the host
    answers it with the job it answered first. One execution, and the hook returns that FAILED job."""
    hook = OrchesjobHook(
        CUT_CONN_ID,
        orchesjob_bin=orchesjob_launcher,
        orchesjob_home=orchesjob_home,
        retry_backoff=1.0,
        command_timeout=10,
        ssh_hook_kwargs=fast_ssh_hook_kwargs(conn_timeout=5),
    )
    log = record_log(hook)

    def fails_fast(name: str) -> list[str]:  # the same length for every name of 3 characters
        return ["/bin/sh", "-c", f"echo x >> {shlex.quote(str(tmp_path / name))}; exit 3"]

    with hook:
        hook.version()
        hook.close()
        # calibration: one uncut start of the same shape on a connection of its own gives the session's offsets
        before = len(cut_proxy.connections)
        calibration = hook.start(f"cal-{mode}", fails_fast("cal"), mode=mode)
        hook.close()
        wait_ended(hook, calibration["job_id"])
        hook.close()
        phases = phases_of(cut_proxy.connections[before])
        first = len(cut_proxy.connections)
        cut_proxy.set_plan(lambda index: Cut(S2C, phases.s_reply + 10, "rst") if index == first else None)
        job = hook.start(f"cut-{mode}", fails_fast("cut"), mode=mode)
        cut_proxy.set_plan(lambda index: None)
        assert cut_proxy.connections[first].cut_done, "the cut did not happen"
        assert job["status"] == "FAILED" and job["exit_code"] == 3, job
        assert job["existing"] is True and job["same_request"] is True and job["attempt_no"] == 1
        assert [j["job_id"] for j in hook.status(run_key=f"cut-{mode}", all_attempts=True)] == [job["job_id"]]
        assert (tmp_path / "cut").read_text() == "x\n"
        assert any("orchesjob start: attempt 1 of 4 failed" in m and "retry 1 of 3" in m for m in log.messages())


def test_a_new_request_id_decides_afresh_and_the_same_one_gets_its_answer_back(hook: OrchesjobHook) -> None:
    """What the operator relies on: the same try (same id) gets its FAILED job back; the next try (new id) starts
    attempt 2 under reuse_success."""
    first = hook.start("per-try", ["false"], request_id="airflow:d:t:r:-1:try1:00000001")
    wait_ended(hook, first["job_id"])
    again = hook.start("per-try", ["false"], request_id="airflow:d:t:r:-1:try1:00000001")
    assert again["job_id"] == first["job_id"] and again["same_request"] is True and again["status"] == "FAILED"
    retry = hook.start("per-try", ["false"], request_id="airflow:d:t:r:-1:try2:00000002")
    assert retry["same_request"] is False and retry["attempt_no"] == 2 and retry["job_id"] != first["job_id"]


def test_abort_if_owner_from_a_stale_request_is_refused(hook: OrchesjobHook) -> None:
    first = hook.start("owned", ["sleep", "60"], request_id="try-1")
    assert first["owner"] == "try-1"
    newer = hook.start("owned", ["sleep", "60"], request_id="try-2")  # a newer try reattaches: it owns the job now
    assert newer["job_id"] == first["job_id"] and newer["owner"] == "try-2"
    with pytest.raises(OrchesjobNotOwner) as info:
        hook.abort(job_id=first["job_id"], if_owner="try-1", grace_seconds=1)
    assert isinstance(info.value, OrchesjobConflict) and info.value.exit_code == 4
    assert info.value.error_type == "not_owner" and info.value.owner == "try-2"
    assert hook.status(job_id=first["job_id"])["status"] == "RUNNING"
    assert hook.abort(job_id=first["job_id"], if_owner="try-2", grace_seconds=1)["status"] == "ABORTED"


def test_unreachable_host_is_a_transport_error(orchesjob_home: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.sshd import free_port

    conn = {
        "conn_type": "ssh",
        "host": "127.0.0.1",
        "port": free_port(),
        "login": "nobody",
        "extra": {"no_host_key_check": True},
    }

    monkeypatch.setenv("AIRFLOW_CONN_ORCHESJOB_DOWN", json.dumps(conn))
    with OrchesjobHook(
        "orchesjob_down",
        orchesjob_home=orchesjob_home,
        retries=2,
        retry_backoff=0.01,
        ssh_hook_kwargs=fast_ssh_hook_kwargs(conn_timeout=5),
    ) as h:
        with pytest.raises(OrchesjobTransportError) as info:
            h.status(run_key="k")
        assert info.value.sent is False
