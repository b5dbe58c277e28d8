"""A private Airflow installation in one directory: its home, SQLite database, dags folder and SSH connection.

Used by the provider tests and by ``make demo``. Airflow itself always runs in a subprocess (``python -m airflow``),
so whatever a test does to its own process (imports, logging, environment) never leaks into the run being checked,
and a run can be killed with ``kill -9`` exactly like a real worker.

Facts this relies on (checked on Airflow 2.11 and 3.3):

- ``airflow dags test DAG DATE`` runs every task of one DAG run in one process, including deferral: the trigger
  runs inline, so no scheduler, triggerer or API server is needed. Running it again with the same DATE deletes the
  previous run of that date and makes a new one with the same run id, i.e. the same task instances: exactly "a
  second try" as far as the run key is concerned.
- A DAG file needs ``AIRFLOW__CORE__DAGS_FOLDER``; connections come from ``AIRFLOW_CONN_<ID>`` JSON; the database
  must be migrated once (``airflow db migrate``).

This module is imported by pytest fixtures and by plain scripts, so it must not import pytest (nor Airflow: it only
starts it).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO_ROOT / "dags_examples"

PathLike = Union[str, "os.PathLike[str]"]


class AirflowRun:
    """The outcome of one Airflow command: exit code, combined stdout+stderr, and how long it took."""

    def __init__(self, argv: Sequence[str], returncode: int | None, output: str, seconds: float) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        self.seconds = seconds

    def __repr__(self) -> str:
        return f"AirflowRun(rc={self.returncode}, {self.seconds:.1f}s, {' '.join(self.argv[2:5])})"

    def describe(self, tail: int = 120) -> str:
        """For assertion messages: the command, its exit code and the end of its output."""
        lines = self.output.splitlines()[-tail:]
        return f"$ {' '.join(self.argv)}\nexit code {self.returncode} after {self.seconds:.1f}s\n" + "\n".join(lines)


def read_metadata(
    db_path: Path,
    sql: str,
    params: Sequence[Any] = (),
    attempts: int = 40,
    retry_on: Sequence[str] = ("locked", "malformed"),
) -> list[tuple[Any, ...]]:
    """Read Airflow's SQLite metadata database from a test, while Airflow processes may be writing to it.

    Not ``mode=ro``: a read-only connection cannot roll back the journal that a process killed mid-write (tests
    kill workers and triggerers) leaves behind, and then reads pages from the middle of that write ("database disk
    image is malformed"). A normal connection rolls such a journal back as any reader must; ``query_only`` keeps
    the test from writing. A busy or torn read is tried again for a while."""
    for attempt in range(attempts):
        try:
            with sqlite3.connect(str(db_path), timeout=30) as db:
                db.execute("PRAGMA query_only = ON")
                return list(db.execute(sql, tuple(params)))
        except sqlite3.DatabaseError as exc:
            if attempt == attempts - 1 or not any(word in str(exc) for word in retry_on):
                raise
            time.sleep(0.25)
    raise AssertionError("unreachable")


class BackgroundAirflow:
    """An Airflow command running in its own process group, its output going to a file (read it while it runs)."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: str | None) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.started = time.monotonic()
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            self.argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill_group() takes the whole worker down at once
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.process.poll() is None

    def wait_for_output(self, text: str, timeout: float) -> bool:
        """Wait until ``text`` appears in the output (False if the process ended or time ran out first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if not self.running():
                return text in self.output()
            time.sleep(0.2)
        return False

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        """``kill -9`` the whole process group (the CLI, its task runner, inline triggers...), then reap it."""
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass
        self.wait(timeout=30)

    def wait(self, timeout: float) -> AirflowRun:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(timeout=30)
        self._log.close()
        return AirflowRun(self.argv, self.process.returncode, self.output(), time.monotonic() - self.started)

    def stop(self) -> None:
        """Best-effort cleanup for fixtures: kill the group if it is still running."""
        if self.running():
            self.kill_group()
        elif not self._log.closed:
            self._log.close()


class AirflowSandbox:
    """One AIRFLOW_HOME with a SQLite database, a dags folder, SSH connections and the example DAGs' settings.

    :param directory: where AIRFLOW_HOME (``<directory>/airflow``) and the logs of background runs go.
    :param python: the interpreter that has Airflow installed (it runs ``python -m airflow``).
    :param dags_folder: the dags folder (default: the repository's ``dags_examples``).
    :param connections: ``{conn_id: connection dict}``, e.g. ``{"orchesjob_ssh": server.airflow_connection()}``.
    :param remote_bin: ``ORCHESJOB_REMOTE_BIN`` for the example DAGs (the CLI on the SSH host).
    :param remote_home: ``ORCHESJOB_REMOTE_HOME`` (the CLI's state directory on the host).
    :param example_workdir: ``ORCHESJOB_EXAMPLE_WORKDIR`` (where the example jobs write what they did).
    :param extra_env: more environment for every Airflow command.
    """

    def __init__(
        self,
        directory: PathLike,
        *,
        python: str = sys.executable,
        dags_folder: PathLike | None = None,
        connections: Mapping[str, Mapping[str, Any]] | None = None,
        remote_bin: str | None = None,
        remote_home: str | None = None,
        example_workdir: str | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = Path(directory).resolve()
        self.home = self.directory / "airflow"
        self.python = python
        self.dags_folder = Path(dags_folder).resolve() if dags_folder is not None else EXAMPLES_DIR
        self.connections = {k: dict(v) for k, v in (connections or {}).items()}
        self.remote_bin = remote_bin
        self.remote_home = remote_home
        self.example_workdir = example_workdir
        self.extra_env = dict(extra_env or {})
        self._background = 0

    # ------------------------------------------------------------------ environment

    @property
    def db_path(self) -> Path:
        return self.home / "airflow.db"

    def env(self, **overrides: str | None) -> dict[str, str]:
        """The environment of an Airflow command: ours minus any AIRFLOW_* of the caller, plus the sandbox's.

        ``overrides`` win; a value of None removes the variable.
        """
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
        pythonpath = [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                # No "Airflow 3 will remove this" noise in the output the tests read.
                "PYTHONWARNINGS": "ignore",
                "PYTHONPATH": os.pathsep.join(dict.fromkeys(pythonpath)),
                "PYTHONUNBUFFERED": "1",
            }
        )
        for conn_id, conn in self.connections.items():
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(conn)
        if self.remote_bin is not None:
            env["ORCHESJOB_REMOTE_BIN"] = self.remote_bin
        if self.remote_home is not None:
            env["ORCHESJOB_REMOTE_HOME"] = self.remote_home
        if self.example_workdir is not None:
            env["ORCHESJOB_EXAMPLE_WORKDIR"] = self.example_workdir
        env.update(self.extra_env)
        for key, value in overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = str(value)
        return env

    def argv(self, *args: str) -> list[str]:
        return [self.python, "-m", "airflow", *args]

    # ------------------------------------------------------------------ commands

    def setup(self, timeout: float = 300) -> AirflowSandbox:
        """Create AIRFLOW_HOME and migrate its SQLite database (once; about 3 s)."""
        self.home.mkdir(parents=True, exist_ok=True)
        run = self.airflow("db", "migrate", timeout=timeout)
        if run.returncode != 0:
            raise RuntimeError("airflow db migrate failed:\n" + run.describe())
        return self

    def airflow(self, *args: str, env: Mapping[str, str | None] | None = None, timeout: float = 300) -> AirflowRun:
        """Run ``airflow ARGS...`` to the end; returns exit code and combined output (a hung run is killed)."""
        argv = self.argv(*args)
        started = time.monotonic()
        proc = subprocess.Popen(
            argv,
            env=self.env(**dict(env or {})),
            cwd=str(self.directory),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, _ = proc.communicate()
            out += f"\n[sandbox: killed after {timeout:g}s]\n".encode()
        return AirflowRun(argv, proc.returncode, out.decode(errors="replace"), time.monotonic() - started)

    def dags_test(
        self, dag_id: str, logical_date: str, *, env: Mapping[str, str | None] | None = None, timeout: float = 300
    ) -> AirflowRun:
        """``airflow dags test DAG DATE``: one DAG run with every task, deferral included, in one process."""
        return self.airflow("dags", "test", dag_id, logical_date, env=env, timeout=timeout)

    def tasks_test(
        self,
        dag_id: str,
        task_id: str,
        logical_date: str,
        *,
        env: Mapping[str, str | None] | None = None,
        timeout: float = 300,
    ) -> AirflowRun:
        """``airflow tasks test DAG TASK DATE``: one task, no dependencies checked. On Airflow 3 the DAG must be
        in the database first (``reserialize``, or an earlier ``dags test`` of it)."""
        return self.airflow("tasks", "test", dag_id, task_id, logical_date, env=env, timeout=timeout)

    def reserialize(self, env: Mapping[str, str | None] | None = None, timeout: float = 300) -> AirflowRun:
        """Write every DAG of the dags folder to the database (what ``tasks test`` needs on Airflow 3)."""
        return self.airflow("dags", "reserialize", env=env, timeout=timeout)

    def start(self, *args: str, env: Mapping[str, str | None] | None = None) -> BackgroundAirflow:
        """Start ``airflow ARGS...`` in the background (own process group, output in a file)."""
        self._background += 1
        log = self.directory / f"background-{self._background}.log"
        return BackgroundAirflow(self.argv(*args), self.env(**dict(env or {})), log, str(self.directory))

    def start_dags_test(
        self, dag_id: str, logical_date: str, *, env: Mapping[str, str | None] | None = None
    ) -> BackgroundAirflow:
        return self.start("dags", "test", dag_id, logical_date, env=env)

    # ------------------------------------------------------------------ reading the metadata database

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return read_metadata(self.db_path, sql, params)

    def task_states(self, dag_id: str) -> dict[str, str | None]:
        """``{task_id: state}`` (``task_id[i]`` for mapped instances) of the DAG's latest run."""
        rows = self._query(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = "
            "(SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1)",
            (dag_id, dag_id),
        )
        return {(t if m < 0 else f"{t}[{m}]"): s for t, m, s in rows}

    def try_numbers(self, dag_id: str) -> dict[str, int]:
        """``{task_id: try_number}`` of the DAG's latest run."""
        rows = self._query(
            "SELECT task_id, map_index, try_number FROM task_instance WHERE dag_id = ? AND run_id = "
            "(SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1)",
            (dag_id, dag_id),
        )
        return {(t if m < 0 else f"{t}[{m}]"): n for t, m, n in rows}

    def run_id(self, dag_id: str) -> str | None:
        rows = self._query("SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,))
        return rows[0][0] if rows else None

    def xcom(self, dag_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """An XCom of the DAG's latest run, decoded from its JSON (None when there is none)."""
        rows = self._query(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = ? AND map_index = ? AND run_id = "
            "(SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1)",
            (dag_id, task_id, key, map_index, dag_id),
        )
        if not rows:
            return None
        value = rows[0][0]
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value).decode("utf-8")
        decoded = json.loads(value)
        # Airflow 3 may store a JSON document as a JSON string.
        if isinstance(decoded, str):
            try:
                decoded = json.loads(decoded)
            except ValueError:
                pass
        return decoded
