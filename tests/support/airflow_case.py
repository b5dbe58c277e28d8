"""One test's view of the shared Airflow sandbox: its own ORCHESJOB_HOME on the host, its own work directory for
marker files, and helpers to run DAGs, ask the CLI what happened, and read the task log out of Airflow's output.

No pytest here: a fixture builds an ``AirflowCase`` per test.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.support.airflow_sandbox import AirflowRun, AirflowSandbox, BackgroundAirflow
from tests.support.cli import run_installed

DATE = "2026-01-02"
SPEC_VAR = "ORCHESJOB_TEST_SPEC"

# Airflow 2 prints a task's log twice in `dags test` (its console handler and the stdout handler dag.test adds for
# airflow.task, each with its own format); triggers only through the first. Reading only the ISO-format lines sees
# every record once. Airflow 3 prints each record once, in structlog's format (message padded, then logger and loc).
_AF2_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)\+0000\] \{[^}]*\} [A-Z]+ - (.*)$")
_AF3_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z \[[a-z]+\s*\] (.*?)\s+\[[\w.]+\] loc=\S+$")


def log_records(output: str) -> list[tuple[float, str]]:
    """(unix time, message) of every log record in an Airflow command's output, each record once."""
    records = []
    for line in output.splitlines():
        match = _AF2_LINE.match(line) or _AF3_LINE.match(line)
        if match:
            stamp = datetime.fromisoformat(match.group(1) + "+00:00").timestamp()
            records.append((stamp, match.group(2)))
    return records


def job_log_lines(output: str, stream: str = "stdout") -> list[tuple[float, str]]:
    """(unix time, line) of every line of the job's ``stream`` relayed into the task log, in order."""
    prefix = f"[{stream}] "
    return [(t, m[len(prefix) :]) for t, m in log_records(output) if m.startswith(prefix)]


class AirflowCase:
    """A test's host state (``remote_home``), marker directory (``workdir``) and its Airflow runs."""

    def __init__(self, sandbox: AirflowSandbox, launcher: str, remote_home: Path, workdir: Path) -> None:
        self.sandbox = sandbox
        self.launcher = launcher
        self.remote_home = Path(remote_home)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.runs: list[AirflowRun] = []
        self.extra_env: dict[str, str | None] = {}  # more environment for this test's Airflow runs

    # ------------------------------------------------------------------ Airflow

    def env(self, spec: Mapping[str, Any] | None = None, **extra: str | None) -> dict[str, str | None]:
        env: dict[str, str | None] = {
            "ORCHESJOB_REMOTE_HOME": str(self.remote_home),
            "ORCHESJOB_EXAMPLE_WORKDIR": str(self.workdir),
            SPEC_VAR: json.dumps(spec) if spec is not None else None,
        }
        env.update(self.extra_env)
        env.update(extra)
        return env

    def dags_test(
        self,
        dag_id: str | None = None,
        *,
        spec: Mapping[str, Any] | None = None,
        date: str = DATE,
        timeout: float = 240,
    ) -> AirflowRun:
        dag_id = dag_id or (spec or {})["dag_id"]
        return self.keep(self.sandbox.dags_test(dag_id, date, env=self.env(spec), timeout=timeout))

    def tasks_test(
        self, dag_id: str, task_id: str, run_id: str, *, spec: Mapping[str, Any] | None = None, timeout: float = 240
    ) -> AirflowRun:
        return self.keep(self.sandbox.tasks_test(dag_id, task_id, run_id, env=self.env(spec), timeout=timeout))

    def run_task_again(
        self, dag_id: str, task_id: str, *, spec: Mapping[str, Any] | None = None, timeout: float = 240
    ) -> AirflowRun:
        """Run the latest DAG run's task instance again (same run id, so the same default run key), the way that
        keeps its XCom in the database on this Airflow version:

        - Airflow 3: ``airflow tasks test DAG TASK RUN_ID`` (``dags test`` would make a new run id there);
        - Airflow 2: ``airflow dags test DAG DATE`` again (same run id ``manual__DATE``; ``tasks test`` runs in
          test mode there and stores no XCom).
        """
        import airflow

        if int(airflow.__version__.split(".")[0]) >= 3:
            return self.tasks_test(dag_id, task_id, self.sandbox.run_id(dag_id) or "", spec=spec, timeout=timeout)
        return self.dags_test(dag_id, spec=spec, timeout=timeout)

    def keep(self, run: AirflowRun) -> AirflowRun:
        """Remember the run, and keep its output next to the test's files (for reading after a failure)."""
        self.runs.append(run)
        (self.workdir.parent / f"airflow-run-{len(self.runs)}.log").write_text(run.describe(tail=10**6))
        return run

    def start_dags_test(
        self, dag_id: str | None = None, *, spec: Mapping[str, Any] | None = None, date: str = DATE
    ) -> BackgroundAirflow:
        dag_id = dag_id or (spec or {})["dag_id"]
        return self.sandbox.start_dags_test(dag_id, date, env=self.env(spec))

    # ------------------------------------------------------------------ the host

    def cli(self, *args: str, check: bool = True) -> Any:
        """Run the CLI on the host (this machine) against this test's ORCHESJOB_HOME; return its JSON."""
        r = run_installed(self.launcher, self.remote_home, *args, timeout=120)
        if check and r.code != 0:
            raise AssertionError(f"orchesjob {' '.join(args)} failed ({r.code}): {r.out}{r.err}")
        return json.loads(r.out) if r.out.strip() else None

    def jobs(self, run_key: str) -> list[dict[str, Any]]:
        """Every attempt of a run key, oldest first."""
        return list(reversed(self.cli("status", "--run-key", run_key, "--all")))

    def running_jobs(self) -> list[dict[str, Any]]:
        if not self.remote_home.exists():
            return []
        return list(self.cli("status", "--running"))

    def wait_running(self, timeout: float = 120, what: BackgroundAirflow | None = None) -> dict[str, Any]:
        """Wait until a job of this test is RUNNING per ``orchesjob status`` (fails early if ``what`` ended)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [j for j in self.running_jobs() if j["status"] == "RUNNING"]
            if running:
                return running[0]
            if what is not None and not what.running():
                raise AssertionError("the Airflow run ended before any job was RUNNING:\n" + what.output()[-6000:])
            time.sleep(0.3)
        raise AssertionError("no job became RUNNING within %ss" % timeout)

    def wait_all_done(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.running_jobs():
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs still active after {timeout}s: {self.running_jobs()}")
            time.sleep(0.3)

    def marker(self, name: str) -> list[str]:
        """The lines of a marker file in the work directory (one line per physical execution, by convention)."""
        path = self.workdir / name
        return path.read_text().splitlines() if path.exists() else []

    def path(self, name: str) -> str:
        return str(self.workdir / name)


def pid_alive(pid: int) -> bool:
    """True while a process exists and is not a zombie (PID 1 here does not reap everything)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_dead(pids: list[int], timeout: float = 20) -> list[int]:
    """Wait for the processes to be gone; return those still alive at the end."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if pid_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if pid_alive(p)]
    return alive
