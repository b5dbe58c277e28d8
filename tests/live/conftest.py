"""One live Airflow 3 deployment (tests/support/live_airflow.py) for every test in this directory, with a real sshd
and this checkout's CLI behind it.

Starting the deployment costs about half a minute, so it is started once per session and the tests share it: each
one triggers DAG runs of its own (own run ids, so own run keys) and leaves no triggerer stopped behind it. A
missing sshd or an Airflow that does not come up fails the tests; it never skips them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.support.airflow_sandbox import write_cli_launcher  # noqa: E402
from tests.support.live_airflow import LiveAirflow  # noqa: E402
from tests.support.sshd import SshServer  # noqa: E402


class Host:
    """The SSH host's side: this checkout's CLI on one state directory, and a directory for the jobs' markers."""

    def __init__(self, launcher: str, state: Path, work: Path) -> None:
        self.launcher = launcher
        self.state = state
        self.work = work
        work.mkdir(parents=True, exist_ok=True)

    def cli(self, *args: str) -> Any:
        env = dict(os.environ, ORCHESJOB_HOME=str(self.state))
        proc = subprocess.run([self.launcher, *args], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=60)
        if proc.returncode not in (0, 3):
            raise AssertionError(f"orchesjob {' '.join(args)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def jobs(self, run_key: str) -> list[dict[str, Any]]:
        """Every attempt of the run key, oldest first (none yet: an empty list)."""
        found = self.cli("status", "--run-key", run_key, "--all")
        return list(reversed(found or []))

    def wait_job(self, run_key: str, statuses: set[str], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        jobs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            jobs = self.jobs(run_key)
            if jobs and jobs[-1]["status"] in statuses:
                return jobs[-1]
            time.sleep(0.3)
        raise AssertionError(f"no job of {run_key!r} became {sorted(statuses)} within {timeout:g}s: {jobs}")

    def script(self, name: str, seconds: int) -> str:
        """A job that says ``started`` (so its trigger's log shows the trigger runs), appends one line per
        execution to ``<name>.runs``, records its own pid and its child's, and sleeps ``seconds`` in that child."""
        w = self.work
        return (f"echo started; echo run >> {w}/{name}.runs; echo $$ > {w}/{name}.main; sleep {seconds} & "
                f"echo $! > {w}/{name}.child; wait; echo done")

    def runs(self, name: str) -> list[str]:
        path = self.work / f"{name}.runs"
        return path.read_text().splitlines() if path.exists() else []

    def pids(self, name: str, timeout: float = 20) -> list[int]:
        """The job's shell and its child (waiting for the job to have written them)."""
        deadline = time.monotonic() + timeout
        pids = []
        for part in ("main", "child"):
            path = self.work / f"{name}.{part}"
            while not (path.exists() and path.read_text().strip()):
                assert time.monotonic() < deadline, f"the job {name} never wrote {path.name}"
                time.sleep(0.1)
            pids.append(int(path.read_text().strip()))
        return pids


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
def live_airflow(live_sshd: SshServer, live_host: Host,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveAirflow]:
    try:
        import airflow
    except ImportError as exc:
        pytest.fail(f"Airflow is not installed in {sys.executable}: {exc}", pytrace=False)
    if not airflow.__version__.startswith("3."):
        pytest.fail(f"the live tests need Airflow 3, found {airflow.__version__}", pytrace=False)
    connection = live_sshd.airflow_connection(orchesjob_bin=live_host.launcher,
                                              orchesjob_home=str(live_host.state))
    deployment = LiveAirflow(tmp_path_factory.mktemp("live-airflow"), connection)
    try:
        deployment.start()
    except Exception as exc:  # noqa: BLE001 - reported with the components' logs
        pytest.fail(f"the live Airflow deployment did not come up: {exc}", pytrace=False)
    try:
        yield deployment
    finally:
        deployment.stop()
