"""One live Airflow 3 deployment (tests/support/live_airflow.py) for every test in this directory, with a real sshd
and this checkout's CLI behind it.

Starting the deployment costs about half a minute, so it is started once per session and the tests share it: each
one triggers DAG runs of its own (own run ids, so own run keys) and leaves no triggerer stopped behind it. A
missing sshd or an Airflow that does not come up fails the tests; it never skips them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.airflow_sandbox import write_cli_launcher  # noqa: E402
from tests.support.live_airflow import LiveAirflow  # noqa: E402
from tests.support.live_host import Host  # noqa: E402
from tests.support.sshd import SshServer  # noqa: E402


@pytest.fixture(scope="session")
def live_host(tmp_path_factory: pytest.TempPathFactory) -> Host:
    base = tmp_path_factory.mktemp("live-host")
    launcher = write_cli_launcher(base / "bin" / "orchesjob", python=sys.executable)
    return Host(launcher, base / "orchesjob-home", base / "work")


@pytest.fixture(scope="session")
def live_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    server = SshServer(tmp_path_factory.mktemp("live-sshd"))
    try:
        server.start()
    except Exception as exc:  # noqa: BLE001 - any reason is a failure here
        pytest.fail(f"cannot start a real sshd for the live Airflow tests: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def live_airflow(
    live_sshd: SshServer, live_host: Host, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveAirflow]:
    try:
        import airflow
    except ImportError as exc:
        pytest.fail(f"Airflow is not installed in {sys.executable}: {exc}", pytrace=False)
    if not airflow.__version__.startswith("3."):
        pytest.fail(f"the live tests need Airflow 3, found {airflow.__version__}", pytrace=False)
    connection = live_sshd.airflow_connection(orchesjob_bin=live_host.launcher, orchesjob_home=str(live_host.state))
    deployment = LiveAirflow(tmp_path_factory.mktemp("live-airflow"), connection)
    try:
        deployment.start()
    except Exception as exc:  # noqa: BLE001 - reported with the components' logs
        pytest.fail(f"the live Airflow deployment did not come up: {exc}", pytrace=False)
    try:
        yield deployment
    finally:
        deployment.stop()
