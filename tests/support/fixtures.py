"""The fixtures more than one test directory uses, registered for all of them by tests/conftest.py.

- ``home``: a fresh ORCHESJOB_HOME per test, and whatever the test left running in it killed afterwards (every
  process started for a test carries ORCHESJOB_HOME=<that home> in its environment, so it is found by that, by pid,
  without touching anything else on the machine);
- ``sshd``: one real OpenSSH server on 127.0.0.1 for the session; ``orchesjob_launcher``: this checkout's CLI as an
  executable the SSH user runs;
- ``cut_proxy``: the cutting TCP proxy (tests/support/cutproxy.py) in front of that sshd, with the Airflow
  connection ``CUT_CONN_ID`` going through it;
- ``airflow_available``: a test that needs Airflow and its SSH libraries, where its module does not import them;
- ``v110``: a real orchesjob 1.1.0 for the session (tests/support/v110.py).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import _kill_leftovers, write_cli_launcher
from tests.support.cutproxy import CUT_CONN_ID, CutProxy
from tests.support.guards import unavailable
from tests.support.sshd import SshServer
from tests.support.v110 import v110  # noqa: F401 - the session fixture of a real orchesjob 1.1.0


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A fresh ORCHESJOB_HOME (not created yet: the CLI creates it)."""
    h = tmp_path / "ojhome"
    yield h
    _kill_leftovers(h)
    if h.exists():
        os.chmod(str(h), 0o700)


def start_sshd(tmp_path_factory: pytest.TempPathFactory, name: str, *, required: bool = False) -> SshServer:
    """A real OpenSSH server on 127.0.0.1 in a temp directory of its own (about half a second to start). One that
    cannot start skips the test on a developer machine and fails it under CI, or fails it always when `required`
    (the live suite: its deployment is what it tests)."""
    server = SshServer(tmp_path_factory.mktemp(name))
    try:
        return server.start()
    except Exception as exc:
        message = f"cannot start a real sshd: {exc}"
        if required:
            pytest.fail(message, pytrace=False)
        unavailable(message)
        raise  # unavailable() skipped or failed the test; never reached


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """One real OpenSSH server on 127.0.0.1 for the whole session."""
    server = start_sshd(tmp_path_factory, "sshd")
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
    return write_cli_launcher(tmp_path_factory.mktemp("bin") / "orchesjob", python=sys.executable)


@pytest.fixture
def cut_proxy(sshd: SshServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[CutProxy]:
    """A proxy in front of the real sshd that counts connections and cuts them as planned, and the Airflow
    connection ``CUT_CONN_ID`` that goes through it (given as ``AIRFLOW_CONN_<ID>`` JSON)."""
    proxy = CutProxy(sshd.host, sshd.port).start()
    conn = sshd.airflow_connection()
    conn["port"] = proxy.port
    monkeypatch.setenv(f"AIRFLOW_CONN_{CUT_CONN_ID.upper()}", json.dumps(conn))
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def airflow_available() -> None:
    """Airflow and the SSH libraries the provider uses, or the test is unavailable (a failure under CI)."""
    try:
        import airflow  # noqa: F401
        import asyncssh  # noqa: F401
        import paramiko  # noqa: F401
    except ImportError as exc:
        unavailable(f"Airflow and its SSH libraries are needed here: {exc}")
