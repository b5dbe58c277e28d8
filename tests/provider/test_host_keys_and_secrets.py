"""The provider, hardened: one host-key rule for both SSH paths, no env value in XCom, trigger rows or logs, and the
CLI settings read from the SSH connection.

Host keys: the connections here set none of the test suite's usual ``no_host_key_check``; HOME is an empty
directory, so ``~/.ssh/known_hosts`` is whatever a test writes there. Each case is checked on both paths: the sync
hook (paramiko, made by us from the SSH provider's reading of the connection) and the async hook (asyncssh).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.airflow_case import AirflowCase, job_log_lines
from tests.support.operator_unit import context
from tests.support.ssh_hook_kwargs import fast_ssh_hook_kwargs

pytestmark = [pytest.mark.timeout(300), pytest.mark.sshd]

STRICT_CONN = "orchesjob_strict"


def bare_connection(sshd: Any, **extra: Any) -> dict[str, Any]:
    """The test sshd as a connection without any host-key setting, plus ``extra``."""
    conn = sshd.airflow_connection(**extra)
    conn["extra"].pop("no_host_key_check", None)
    conn["extra"].update(extra)
    return conn


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def use_connection(monkeypatch: pytest.MonkeyPatch, empty_home: Path):
    def use(conn: dict[str, Any]) -> str:
        monkeypatch.setenv(f"AIRFLOW_CONN_{STRICT_CONN.upper()}", json.dumps(conn))
        return STRICT_CONN

    return use


def sync_version(conn_id: str, launcher: str, home: str) -> Any:
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    with OrchesjobHook(
        conn_id,
        orchesjob_bin=launcher,
        orchesjob_home=home,
        retries=0,
        ssh_hook_kwargs=fast_ssh_hook_kwargs(conn_timeout=5),
    ) as hook:
        return hook.version()


def async_version(conn_id: str, launcher: str, home: str) -> Any:
    from orchesjob_provider.hooks.orchesjob import OrchesjobAsyncHook

    async def go() -> Any:
        hook = OrchesjobAsyncHook(conn_id, orchesjob_bin=launcher, orchesjob_home=home, connect_timeout=5)
        try:
            return await hook.version()
        finally:
            await hook.close()

    return asyncio.run(go())


def both_refuse(conn_id: str, launcher: str, home: str, fix_hint: str = "host_key") -> None:
    from orchesjob_provider.exceptions import OrchesjobTransportError

    for path in (sync_version, async_version):
        with pytest.raises(OrchesjobTransportError) as refused:
            path(conn_id, launcher, home)
        message = str(refused.value)
        assert not refused.value.transient and not refused.value.sent, (path.__name__, message)
        assert conn_id in message and fix_hint in message and "no_host_key_check" in message, (path.__name__, message)


def both_accept(conn_id: str, launcher: str, home: str) -> None:
    assert sync_version(conn_id, launcher, home)["contract"]
    assert async_version(conn_id, launcher, home)["contract"]


# ---------------------------------------------------------------------- host keys, both paths


def test_an_unknown_host_is_refused_on_both_paths(sshd, use_connection, orchesjob_launcher, orchesjob_home) -> None:
    conn_id = use_connection(bare_connection(sshd))
    both_refuse(conn_id, orchesjob_launcher, orchesjob_home)
    assert not Path(orchesjob_home).exists()  # not even `version` ran on the host
    assert not (Path(os.environ["HOME"]) / ".ssh").exists()  # and no key was learnt on the way


def test_a_pinned_host_key_is_accepted_on_both_paths(sshd, use_connection, orchesjob_launcher, orchesjob_home) -> None:
    conn_id = use_connection(bare_connection(sshd, host_key=sshd.host_public_key))
    both_accept(conn_id, orchesjob_launcher, orchesjob_home)


def test_a_wrong_host_key_is_refused_on_both_paths(sshd, use_connection, orchesjob_launcher, orchesjob_home) -> None:
    other = Path(str(sshd.client_key_path) + ".pub").read_text()  # some other ed25519 key
    conn_id = use_connection(bare_connection(sshd, host_key=other))
    both_refuse(conn_id, orchesjob_launcher, orchesjob_home)
    assert not Path(orchesjob_home).exists()


def test_a_known_hosts_file_is_honoured_on_both_paths(
    sshd, use_connection, orchesjob_launcher, orchesjob_home, tmp_path: Path
) -> None:
    listed = tmp_path / "known_hosts"
    listed.write_text(f"[{sshd.host}]:{sshd.port} {sshd.host_public_key}\n")
    conn_id = use_connection(bare_connection(sshd, known_hosts=str(listed)))
    both_accept(conn_id, orchesjob_launcher, orchesjob_home)
    # Without a [host]:port entry, the host's own entry counts (asyncssh's lookup, made the same for paramiko).
    listed.write_text(f"{sshd.host} {sshd.host_public_key}\n")
    both_accept(conn_id, orchesjob_launcher, orchesjob_home)
    # A file that lists another host, or another key for this one, trusts nothing here.
    other = Path(str(sshd.client_key_path) + ".pub").read_text().split()[:2]
    listed.write_text(f"otherhost {sshd.host_public_key}\n[{sshd.host}]:{sshd.port} {' '.join(other)}\n")
    both_refuse(conn_id, orchesjob_launcher, orchesjob_home)


def test_the_users_known_hosts_is_honoured_on_both_paths(
    sshd, use_connection, orchesjob_launcher, orchesjob_home, empty_home: Path
) -> None:
    conn_id = use_connection(bare_connection(sshd))
    (empty_home / ".ssh").mkdir()
    (empty_home / ".ssh" / "known_hosts").write_text(f"[{sshd.host}]:{sshd.port} {sshd.host_public_key}\n")
    both_accept(conn_id, orchesjob_launcher, orchesjob_home)


def test_host_key_and_no_host_key_check_together_are_refused(
    sshd, use_connection, orchesjob_launcher, orchesjob_home
) -> None:
    from orchesjob_provider.exceptions import OrchesjobTransportError

    conn_id = use_connection(bare_connection(sshd, host_key=sshd.host_public_key, no_host_key_check=True))
    for path in (sync_version, async_version):
        with pytest.raises(OrchesjobTransportError, match="both no_host_key_check and host_key"):
            path(conn_id, orchesjob_launcher, orchesjob_home)


@pytest.mark.parametrize("deferrable", [True, False])
def test_the_operator_starts_nothing_on_a_host_it_cannot_watch(
    sshd, use_connection, orchesjob_launcher, orchesjob_home, deferrable: bool
) -> None:
    from orchesjob_provider.compat import AirflowException
    from orchesjob_provider.operators.orchesjob import OrchesjobOperator

    conn_id = use_connection(bare_connection(sshd))
    op = OrchesjobOperator(
        task_id="t",
        command=["true"],
        ssh_conn_id=conn_id,
        orchesjob_bin=orchesjob_launcher,
        orchesjob_home=orchesjob_home,
        deferrable=deferrable,
        hook_kwargs={"retries": 0, "ssh_hook_kwargs": fast_ssh_hook_kwargs(conn_timeout=5)},
    )
    with pytest.raises(AirflowException) as refused:
        op.execute(context())
    message = str(refused.value)
    assert "no job was started" in message and conn_id in message and "host_key" in message, message
    # Deferrable or not, the worker's path is checked first (it resolves the CLI, uploading one if needed, that the
    # triggerer will then be given), so the refusal is the worker's: no job and no trigger.
    assert "cannot reach the orchesjob CLI" in message, message
    assert not Path(orchesjob_home).exists()


# ---------------------------------------------------------------------- settings on the connection


def test_cli_settings_come_from_the_connection_unless_the_task_sets_them(
    sshd, monkeypatch: pytest.MonkeyPatch, orchesjob_launcher: str, tmp_path: Path
) -> None:
    from orchesjob_provider.compat import TaskDeferred
    from orchesjob_provider.operators.orchesjob import OrchesjobOperator
    from orchesjob_provider.sensors.orchesjob import OrchesjobSensor

    conn_home = str(tmp_path / "from-connection")
    conn = sshd.airflow_connection(orchesjob_bin=orchesjob_launcher, orchesjob_home=conn_home)
    monkeypatch.setenv("AIRFLOW_CONN_ORCHESJOB_WITH_SETTINGS", json.dumps(conn))

    op = OrchesjobOperator(
        task_id="t", command=["sleep", "5"], ssh_conn_id="orchesjob_with_settings", run_key="from-conn"
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context())
    kwargs = deferred.value.trigger.serialize()[1]
    assert (kwargs["orchesjob_bin"], kwargs["orchesjob_home"]) == (orchesjob_launcher, conn_home)
    assert (Path(conn_home) / "orchesjob.db").exists() or any(Path(conn_home).iterdir())

    sensor = OrchesjobSensor(
        task_id="s", run_key="from-conn", ssh_conn_id="orchesjob_with_settings", timeout=60, poke_interval=1
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context())
    kwargs = deferred.value.trigger.serialize()[1]
    assert (kwargs["orchesjob_bin"], kwargs["orchesjob_home"]) == (orchesjob_launcher, conn_home)
    assert kwargs["job_id"] == op._job_id  # it found the operator's job there

    # The task's own value wins over the connection's.
    own_home = str(tmp_path / "own")
    mine = OrchesjobOperator(
        task_id="t2",
        command=["true"],
        ssh_conn_id="orchesjob_with_settings",
        run_key="own",
        orchesjob_home=own_home,
        deferrable=False,
    )
    result = mine.execute(context())
    assert result["status"] == "SUCCEEDED" and Path(own_home).is_dir()
    op._abort("test over")


# ---------------------------------------------------------------------- real Airflow


def _files_containing(root: Path, needle: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            try:
                if needle in path.read_bytes():
                    found.append(str(path))
            except OSError:
                pass
    return found


@pytest.mark.airflow
def test_no_env_value_in_xcom_trigger_rows_or_logs(af: AirflowCase) -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    af.extra_env["AIRFLOW_VAR_ORCHESJOB_VALUE"] = secret  # a neutral name: Airflow itself would not mask it
    digest = hashlib.sha256(secret.encode()).hexdigest()
    spec = {
        "dag_id": "t_secret",
        "tasks": [
            {
                "task_id": "deferred",
                "kwargs": {
                    "command": ["sh", "-c", 'printf %s "$MY_VALUE" | sha256sum | cut -c1-64; sleep 2; echo done'],
                    "env": {"MY_VALUE": "{{ var.value.orchesjob_value }}"},
                    "poll_interval": 5,
                    "run_key": "secret-d",
                },
            },
            {
                "task_id": "polling",
                "kwargs": {
                    "command": ["sh", "-c", 'printf %s "$MY_VALUE" | sha256sum | cut -c1-64'],
                    "env": {"MY_VALUE": "{{ var.value.orchesjob_value }}"},
                    "deferrable": False,
                    "run_key": "secret-p",
                },
            },
        ],
    }
    run = af.dags_test(spec=spec)
    assert af.sandbox.task_states("t_secret") == {"deferred": "success", "polling": "success"}, run.describe()
    # The value reached the job (it printed its hash) ...
    assert digest in [line for _, line in job_log_lines(run.output)]
    # ... and the provider handed on the name only.
    for task in ("deferred", "polling"):
        assert af.sandbox.xcom("t_secret", task)["env"] == {"MY_VALUE": "***"}
    rows = af.sandbox._query("SELECT value FROM xcom") + af.sandbox._query("SELECT kwargs FROM trigger")
    assert not [row for row in rows if secret in str(row[0])]
    assert secret not in run.output
    # Nowhere in AIRFLOW_HOME: not in the database (rendered fields, XCom, trigger rows), not in any task log file.
    assert _files_containing(af.sandbox.home, secret.encode()) == []
    # The host keeps it (that is where the job needs it), readable only by the state directory's owner.
    assert af.cli("status", "--run-key", "secret-d")["env"] == {"MY_VALUE": secret}
    assert oct(af.remote_home.stat().st_mode & 0o777) == "0o700"


@pytest.mark.airflow
def test_real_airflow_refuses_an_unknown_host_and_reads_settings_from_the_connection(
    af: AirflowCase, sshd: Any, orchesjob_launcher: str, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    af.extra_env["HOME"] = str(home)
    af.extra_env["AIRFLOW_CONN_ORCHESJOB_STRICT"] = json.dumps(bare_connection(sshd))
    af.extra_env["AIRFLOW_CONN_ORCHESJOB_PINNED"] = json.dumps(
        bare_connection(
            sshd, host_key=sshd.host_public_key, orchesjob_bin=orchesjob_launcher, orchesjob_home=str(af.remote_home)
        )
    )
    unset = {"orchesjob_bin": None, "orchesjob_home": None}
    spec = {
        "dag_id": "t_host_keys",
        "tasks": [
            {
                "task_id": "unknown_deferred",
                "kwargs": {"command": ["true"], "ssh_conn_id": "orchesjob_strict", "run_key": "unknown-d"},
            },
            {
                "task_id": "unknown_polling",
                "kwargs": {
                    "command": ["true"],
                    "ssh_conn_id": "orchesjob_strict",
                    "run_key": "unknown-p",
                    "deferrable": False,
                },
            },
            {
                "task_id": "pinned",
                "kwargs": {
                    "command": ["echo", "pinned ok"],
                    "ssh_conn_id": "orchesjob_pinned",
                    "run_key": "pinned",
                    **unset,
                },
            },
            {
                "task_id": "pinned_sensor",
                "kind": "sensor",
                "upstream": ["pinned"],
                "kwargs": {"run_key": "pinned", "ssh_conn_id": "orchesjob_pinned", "timeout": 60, **unset},
            },
        ],
    }
    run = af.dags_test(spec=spec)
    assert af.sandbox.task_states("t_host_keys") == {
        "unknown_deferred": "failed",
        "unknown_polling": "failed",
        "pinned": "success",
        "pinned_sensor": "success",
    }, run.describe()
    assert "no job was started" in run.output and "orchesjob_strict" in run.output
    assert "`host_key` extra" in run.output
    # The refused tasks started nothing; the pinned one ran with the connection's CLI and state directory.
    for key in ("unknown-d", "unknown-p"):
        assert af.cli("status", "--run-key", key, check=False)["error"] == "not_found"
    assert af.jobs("pinned")[0]["status"] == "SUCCEEDED"
    assert "pinned ok" in [line for _, line in job_log_lines(run.output)]
    assert not (home / ".ssh").exists()
