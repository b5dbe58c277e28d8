"""Fixtures for the provider tests: a real sshd, the real CLI reachable through it, and an Airflow SSH connection.

Why real parts: the provider's risks are quoting through a remote shell, SSH channels that close at the wrong time,
and the JSON the real CLI prints. A mock of any of them would test our assumptions, not the product.

When ``CI`` is set, a missing sshd or Airflow is a failure, never a skip: a green CI run must mean these ran.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.airflow_sandbox import write_cli_launcher  # noqa: E402
from tests.support.ssh_hook_kwargs import fast_ssh_hook_kwargs  # noqa: E402
from tests.support.sshd import SshServer  # noqa: E402

IN_CI = bool(os.environ.get("CI"))
CONN_ID = "orchesjob_test"

# asyncssh logs every connection and channel at INFO, which buries a failing test's captured log. The provider
# leaves asyncssh's logger to whoever configures logging (Airflow, the deployment); these tests are that here.
logging.getLogger("asyncssh").setLevel(logging.WARNING)

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
    return write_cli_launcher(tmp_path_factory.mktemp("bin") / "orchesjob", python=sys.executable)


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
        ssh_hook_kwargs=fast_ssh_hook_kwargs(),
    )
    try:
        yield h
    finally:
        h.close()


# ---------------------------------------------------------------------- real Airflow (subprocesses)

EXAMPLES_CONN_ID = "orchesjob_ssh"  # what the example DAGs use by default


@pytest.fixture(scope="session")
def airflow_sandbox(sshd: SshServer, orchesjob_launcher: str, tmp_path_factory: pytest.TempPathFactory):
    """One AIRFLOW_HOME for the session: SQLite migrated once (2-3 s), a dags folder holding the example DAGs and
    the spec-driven test DAG (links, so the examples run exactly as shipped), the SSH connection they use."""
    return new_airflow_sandbox(sshd, orchesjob_launcher, tmp_path_factory)


def new_airflow_sandbox(sshd: SshServer, orchesjob_launcher: str, tmp_path_factory: pytest.TempPathFactory):
    """An AIRFLOW_HOME of its own (see ``airflow_sandbox``), for a test that reads and writes the metadata
    database directly and must not meet what other tests' Airflow processes leave behind."""
    try:
        import airflow  # noqa: F401
    except ImportError as exc:
        _unavailable(f"Airflow is not installed in {sys.executable}: {exc}")
    from tests.support.airflow_sandbox import EXAMPLES_DIR, AirflowSandbox

    directory = tmp_path_factory.mktemp("airflow")
    dags = directory / "dags"
    dags.mkdir()
    sources = sorted(EXAMPLES_DIR.glob("*.py"))
    for source in sources + [REPO_ROOT / "tests" / "support" / "dags" / "spec_dag.py"]:
        (dags / source.name).symlink_to(source)
    sandbox = AirflowSandbox(
        directory,
        python=sys.executable,
        dags_folder=dags,
        connections={EXAMPLES_CONN_ID: sshd.airflow_connection()},
        remote_bin=orchesjob_launcher,
    )
    sandbox.setup()
    return sandbox


@pytest.fixture
def af(airflow_sandbox, orchesjob_launcher: str, tmp_path: Path):
    """This test's host state and marker directory on the shared sandbox (each Airflow run's output is kept in
    tmp_path/airflow-run-N.log for reading after a failure)."""
    from tests.support.airflow_case import AirflowCase

    case = AirflowCase(airflow_sandbox, orchesjob_launcher, tmp_path / "orchesjob-home", tmp_path / "work")
    yield case
    # Leave no job of this test running into the next one (they would only waste CPU, but still).
    try:
        for job in case.running_jobs():
            case.cli("abort", "--job-id", job["job_id"], "--grace-seconds", "1", check=False)
    except Exception:  # noqa: BLE001 - cleanup must not hide the test's own result
        pass
