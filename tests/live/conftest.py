"""One live Airflow 3 deployment in its production shape (tests/support/prod_airflow.py: PostgreSQL, Redis,
CeleryExecutor with two workers, two triggerers, scheduler, dag-processor, api-server) for every test in this
directory, with real sshd servers and this checkout's CLI behind them.

Starting the deployment costs about a minute, so it is started once per session and the tests share it: each one
triggers DAG runs of its own (own run ids, so own run keys) and leaves every component running behind it (a test
that stops or kills one starts it again). The main host (``live_sshd``, connection ``orchesjob_live``) serves most
tests; two more hosts (``orchesjob_live_2``, ``orchesjob_live_3``, each an sshd and a state directory of its own)
are there for the tests that spread jobs over hosts. A missing sshd, PostgreSQL or Redis, or an Airflow that does
not come up, fails the tests; it never skips them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.support.cli import write_cli_launcher
from tests.support.fixtures import start_sshd
from tests.support.live_host import Host
from tests.support.prod_airflow import ProdAirflow
from tests.support.sshd import SshServer


def _abort_left(hosts: list[Host]) -> None:
    """After the deployment has stopped: abort the jobs a failed test left running (they outlive their callers by
    design, so nothing else would stop them), so the session leaves no process behind."""
    for host in hosts:
        left = host.abort_running()
        if left:
            print(f"aborted {len(left)} job(s) left running on {host.state}")


@pytest.fixture(scope="session")
def live_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    base = tmp_path_factory.mktemp("live-host")
    launcher = write_cli_launcher(base / "bin" / "orchesjob", python=sys.executable)
    host = Host(launcher, base / "orchesjob-home", base / "work")
    yield host
    _abort_left([host])


@pytest.fixture(scope="session")
def other_hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Host]]:
    """Two more hosts (state directories and job directories of their own) behind ``other_sshds``."""
    hosts = []
    for n in (2, 3):
        base = tmp_path_factory.mktemp(f"live-host-{n}")
        launcher = write_cli_launcher(base / "bin" / "orchesjob", python=sys.executable)
        hosts.append(Host(launcher, base / "orchesjob-home", base / "work"))
    yield hosts
    _abort_left(hosts)


@pytest.fixture(scope="session")
def live_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    server = start_sshd(tmp_path_factory, "live-sshd", required=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def other_sshds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[SshServer]]:
    servers: list[SshServer] = []
    try:
        for n in (2, 3):
            servers.append(start_sshd(tmp_path_factory, f"live-sshd-{n}", required=True))
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def live_airflow(
    live_sshd: SshServer,
    live_host: Host,
    other_sshds: list[SshServer],
    other_hosts: list[Host],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ProdAirflow]:
    try:
        import airflow
    except ImportError as exc:
        pytest.fail(f"Airflow is not installed in {sys.executable}: {exc}", pytrace=False)
    if not airflow.__version__.startswith("3."):
        pytest.fail(f"the live tests need Airflow 3, found {airflow.__version__}", pytrace=False)
    connection = live_sshd.airflow_connection(orchesjob_bin=live_host.launcher, orchesjob_home=str(live_host.state))
    others = {
        f"orchesjob_live_{n}": server.airflow_connection(orchesjob_bin=host.launcher, orchesjob_home=str(host.state))
        for n, server, host in zip((2, 3), other_sshds, other_hosts)
    }
    try:
        deployment = ProdAirflow(tmp_path_factory.mktemp("live-airflow"), connection, connections=others)
    except Exception as exc:  # noqa: BLE001 - a missing server binary, say
        pytest.fail(f"the live Airflow deployment cannot be made here: {exc}", pytrace=False)
    try:
        deployment.start()
    except Exception as exc:  # noqa: BLE001 - reported with the components' logs
        pytest.fail(f"the live Airflow deployment did not come up: {exc}", pytrace=False)
    try:
        yield deployment
    finally:
        deployment.stop()
