"""Fixtures for the provider tests: an Airflow SSH connection to the real sshd and a hook on it, and real Airflow.

The sshd and the CLI launcher it runs are the shared fixtures of tests/support/fixtures.py.

Why real parts: the provider's risks are quoting through a remote shell, SSH channels that close at the wrong time,
and the JSON the real CLI prints. A mock of any of them would test our assumptions, not the product.

When ``CI`` is set, a missing sshd or Airflow is a failure, never a skip: a green CI run must mean these ran.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.airflow_sandbox import REPO_ROOT
from tests.support.guards import airflow_guard, prepare_airflow_process, unavailable
from tests.support.ssh_hook_kwargs import fast_ssh_hook_kwargs
from tests.support.sshd import SshServer

CONN_ID = "orchesjob_test"
# The modules here that test the provider's pure parts and run without Airflow; every other one imports it.
WITHOUT_AIRFLOW = ("test_cli_pack.py", "test_give_up_unit.py")

prepare_airflow_process()


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """The Airflow guard of this directory: a module that needs Airflow is skipped whole where it is not installed
    (a failure under CI instead), before its imports run."""
    if module_path.name in WITHOUT_AIRFLOW:
        return None
    return airflow_guard(module_path, parent)


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
        unavailable(f"Airflow is not installed in {sys.executable}: {exc}")
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
