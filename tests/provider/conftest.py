"""Fixtures for the provider tests: a real sshd, the real CLI reachable through it, and an Airflow SSH connection.

Why real parts: the provider's risks are quoting through a remote shell, SSH channels that close at the wrong time,
and the JSON the real CLI prints. A mock of any of them would test our assumptions, not the product.

When ``CI`` is set, a missing sshd or Airflow is a failure, never a skip: a green CI run must mean these ran.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.sshd import SshServer  # noqa: E402

IN_CI = bool(os.environ.get("CI"))
CONN_ID = "orchesjob_test"

# Airflow writes airflow.cfg and friends into AIRFLOW_HOME on import; keep that out of the user's home.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="orchesjob-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


def _unavailable(message: str) -> None:
    """Skip on a developer machine without the part; fail under CI, where skipping would hide a broken setup."""
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """One real OpenSSH server on 127.0.0.1 for the whole session (starting one takes about half a second)."""
    server = SshServer(tmp_path_factory.mktemp("sshd"))
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - any reason it cannot start is reported the same way
        _unavailable(f"cannot start a real sshd for the provider tests: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def orchesjob_launcher(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Absolute path of a script that runs this checkout's CLI with this interpreter, for the SSH user.

    A non-login SSH command gets a bare PATH and none of our environment, so the provider is pointed at an absolute
    path, exactly as a user would point it at a venv or the zipapp on a real host.
    """
    directory = tmp_path_factory.mktemp("bin")
    path = directory / "orchesjob"
    path.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={_sh_quote(str(REPO_ROOT))}\n"
        "export PYTHONPATH\n"
        f"exec {_sh_quote(sys.executable)} -m orchesjob \"$@\"\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
    return str(path)


def _sh_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


@pytest.fixture
def orchesjob_home(tmp_path: Path) -> str:
    """A fresh remote state directory per test (the CLI creates it, mode 0700)."""
    return str(tmp_path / "orchesjob-home")


@pytest.fixture
def ssh_conn_id(sshd: SshServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """An Airflow SSH connection to the test sshd, given the way deployments often do: ``AIRFLOW_CONN_<ID>`` JSON."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", sshd.airflow_connection_json())
    return CONN_ID


@pytest.fixture
def hook(ssh_conn_id: str, orchesjob_launcher: str, orchesjob_home: str) -> Iterator[object]:
    """A sync hook on the real sshd and CLI, with short retry pauses so failure tests stay quick."""
    from orchesjob_provider.hooks.orchesjob import OrchesjobHook

    h = OrchesjobHook(
        ssh_conn_id,
        orchesjob_bin=orchesjob_launcher,
        orchesjob_home=orchesjob_home,
        retry_backoff=0.1,
        ssh_hook_kwargs={"conn_retry_attempts": 1},
    )
    try:
        yield h
    finally:
        h.close()
