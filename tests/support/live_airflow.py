"""A live Airflow 3 deployment on this machine: api-server, scheduler, dag-processor and triggerers as processes.

What ``airflow dags test`` cannot show needs this: a deferred task cleared or marked from the REST API while its
trigger runs in a triggerer process, a triggerer that stalls while another one takes its triggers over, a task
killed by its own ``execution_timeout``. Every component is a real ``python -m airflow`` process in a process group
of its own, so a test can stop, continue or kill one exactly as an operating system would.

The deployment (checked on Airflow 3.3 and 3.0.6):

- LocalExecutor on a SQLite metadata database; all traffic on 127.0.0.1 (the api-server on a free port, the
  components started with ``-s`` so no log server listens anywhere);
- one JWT secret and the execution API URL shared by every component (the workers and the triggerers talk to the
  api-server, never to the database);
- the simple auth manager with one admin whose password file is written before the api-server starts;
- short heartbeat and health thresholds, so a stalled triggerer is replaced within about 20 s.

Helpers cover what tests about killing, stalling and restarting components need: trigger a DAG run, wait for a
task instance's state, clear or mark it, find the triggerer holding its trigger, stop/continue/kill/start a
triggerer, read a task's log files. No pytest here (fixtures wrap it).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.airflow_sandbox import AirflowSandbox, BackgroundAirflow, read_metadata
from tests.support.sshd import free_port

ADMIN = ("admin", "admin")
LIVE_DAGS = Path(__file__).resolve().parent / "dags" / "live_dags.py"
CONN_ID = "orchesjob_live"
# Seconds without a heartbeat before another triggerer takes the triggers over (an integer: Airflow 3.0 reads it so).
TRIGGERER_HEALTH_THRESHOLD = 10


class LiveAirflowError(RuntimeError):
    """The deployment did not come up, or a component died; the message carries the end of its log."""


class Component:
    """One Airflow component process (and its children, in the same process group)."""

    def __init__(self, name: str, process: BackgroundAirflow) -> None:
        self.name = name
        self.process = process
        self.stopped = False  # SIGSTOPped by a test
        self.job_id: int | None = None  # a triggerer's job id in the metadata database

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.process.output().splitlines()[-lines:])


class LiveAirflow:
    """Start with :meth:`start`, stop with :meth:`stop` (also on failure: it never leaves a process behind).

    :param directory: everything goes here (AIRFLOW_HOME, component logs, the dags folder).
    :param connection: the SSH connection (as ``SshServer.airflow_connection()`` makes it) the DAGs use; its
        extras should name ``orchesjob_bin`` and ``orchesjob_home``.
    :param python: the interpreter with Airflow 3 installed.
    :param dag_files: DAG files linked into the dags folder; ``wait_for_dag`` is one of their DAG ids, known to the
        api-server before :meth:`start` returns.
    :param triggerers: how many triggerers :meth:`start` starts (tests of a takeover need two, a benchmark one).
    :param settings: ``AIRFLOW__...`` values over the deployment's own; ``env``: more environment for every
        component (the DAG files read it).
    """

    def __init__(
        self,
        directory: Path,
        connection: Mapping[str, Any],
        python: str = sys.executable,
        *,
        dag_files: Sequence[Path] = (LIVE_DAGS,),
        wait_for_dag: str = "orchesjob_live_polling",
        triggerers: int = 2,
        settings: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = Path(directory).resolve()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        dags = self.directory / "dags"
        dags.mkdir(parents=True, exist_ok=True)
        for dag_file in dag_files:
            if not (dags / dag_file.name).exists():
                (dags / dag_file.name).symlink_to(dag_file)
        self.wait_for_dag = wait_for_dag
        self.initial_triggerers = triggerers
        self.sandbox = AirflowSandbox(
            self.directory,
            python=python,
            dags_folder=dags,
            connections={CONN_ID: dict(connection)},
            extra_env={**self._settings(), **(settings or {}), **(env or {})},
        )
        self.components: dict[str, Component] = {}
        self._token: str | None = None
        self._triggerers = 0

    def _settings(self) -> dict[str, str]:
        return {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN[0]}:admin",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "5",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(TRIGGERER_HEALTH_THRESHOLD),
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        }

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 240) -> LiveAirflow:
        deadline = time.monotonic() + timeout
        try:
            self.sandbox.setup(timeout=timeout)
            (self.sandbox.home / "simple_auth_manager_passwords.json.generated").write_text(
                json.dumps({ADMIN[0]: ADMIN[1]})
            )
            self._spawn("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.port), "-w", "1")
            self._until(deadline, "the api-server answering", self._api_up, ["api-server"])
            self._spawn("dag-processor", "dag-processor")
            self._spawn("scheduler", "scheduler", "-s")
            for _ in range(self.initial_triggerers):
                self.start_triggerer(deadline - time.monotonic())
            self._until(
                deadline,
                "the live DAGs parsed",
                lambda: self._dag_known(self.wait_for_dag),
                ["dag-processor", "scheduler"],
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM every component (a stopped one is continued first), SIGKILL what is left after 20 s."""
        for component in self.components.values():
            component.signal(signal.SIGCONT)
            component.signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for component in self.components.values():
            try:
                component.process.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            component.process.stop()

    def _spawn(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> Component:
        component = Component(name, self.sandbox.start(*args, env=env))
        log = self.directory / f"{name}.log"
        if log.exists() or log.is_symlink():
            log.unlink()
        log.symlink_to(component.process.log_path)  # a readable name next to the numbered background logs
        self.components[name] = component
        return component

    def _until(self, deadline: float, what: str, check: Callable[[], Any], watch: Iterable[str]) -> Any:
        while True:
            result = check()
            if result:
                return result
            for name in watch:
                component = self.components[name]
                if not component.process.running():
                    raise LiveAirflowError(f"{name} exited while waiting for {what}:\n{component.tail()}")
            if time.monotonic() > deadline:
                logs = "\n\n".join(f"--- {n}\n{self.components[n].tail()}" for n in watch)
                raise LiveAirflowError(f"timed out waiting for {what}\n{logs}")
            time.sleep(0.5)

    # ------------------------------------------------------------------ triggerers

    def triggerers(self) -> list[Component]:
        return [c for c in self.components.values() if c.name.startswith("triggerer")]

    def start_triggerer(self, timeout: float = 120) -> Component:
        """Start one more triggerer and wait until it has a job id in the database (so tests can tell which
        triggerer holds a trigger)."""
        known = set(self._triggerer_job_ids())
        self._triggerers += 1
        component = self._spawn(f"triggerer-{self._triggerers}", "triggerer", "-s")

        def new_job() -> int | None:
            fresh = [i for i in self._triggerer_job_ids() if i not in known]
            return fresh[0] if fresh else None

        component.job_id = self._until(
            time.monotonic() + timeout, f"{component.name}'s job row", new_job, [component.name]
        )
        return component

    def _triggerer_job_ids(self) -> list[int]:
        rows = self.query("SELECT id FROM job WHERE job_type = 'TriggererJob' ORDER BY id")
        return [int(r[0]) for r in rows]

    def triggerer_holding(self, dag_id: str, run_id: str, task_id: str) -> Component | None:
        """The triggerer that runs this task instance's trigger now (None while unassigned)."""
        rows = self.query(
            "SELECT t.triggerer_id FROM task_instance ti JOIN trigger t ON ti.trigger_id = t.id "
            "WHERE ti.dag_id = ? AND ti.run_id = ? AND ti.task_id = ?",
            (dag_id, run_id, task_id),
        )
        holder = rows[0][0] if rows else None
        return next((c for c in self.triggerers() if holder is not None and c.job_id == holder), None)

    def pause(self, component: Component) -> None:
        """SIGSTOP the component's whole process group (a stalled host, a long GC pause, a frozen VM)."""
        component.signal(signal.SIGSTOP)
        component.stopped = True

    def resume(self, component: Component) -> None:
        component.signal(signal.SIGCONT)
        component.stopped = False

    def terminate(self, component: Component, timeout: float = 60) -> None:
        """SIGTERM the component and wait for it to exit (a deploy, a graceful restart)."""
        component.signal(signal.SIGCONT)
        component.signal(signal.SIGTERM)
        run = component.process.wait(timeout=timeout)  # SIGKILLs the group if it does not exit in time
        if run.returncode is None or run.returncode < 0:
            raise LiveAirflowError(f"{component.name} did not exit on SIGTERM:\n{component.tail()}")
        component.stopped = False

    def kill(self, component: Component) -> None:
        """SIGKILL the component's process group (a crashed host) and reap it; ``start_triggerer`` starts a
        replacement triggerer, which gets a job id of its own."""
        component.signal(signal.SIGCONT)
        component.process.kill_group(signal.SIGKILL)
        component.stopped = False

    # ------------------------------------------------------------------ a task's worker processes

    def worker_processes(self, ti_id: str, timeout: float = 60) -> list[int]:
        """The pids running one task instance in a worker: its task supervisor (a LocalExecutor worker process,
        which heartbeats for the task) and the task process it forked (titled ``airflow worker -- <ti id>``).
        Stopping both is a stalled worker: a frozen VM, a long swap storm, a debugger attached."""
        title = f"airflow worker -- {ti_id}".encode()
        deadline = time.monotonic() + timeout
        while True:
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        cmdline = f.read()
                    with open(f"/proc/{entry}/stat", "rb") as f:
                        stat = f.read()
                except OSError:
                    continue
                if cmdline.startswith(title):
                    parent = int(stat.rsplit(b")", 1)[1].split()[1])  # the field after the state letter
                    return [parent, int(entry)]
            if time.monotonic() > deadline:
                raise LiveAirflowError(f"no worker process titled {title.decode()!r} within {timeout:g}s")
            time.sleep(0.5)

    # ------------------------------------------------------------------ the metadata database (read only)

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        db_path = self.sandbox.db_path
        if not db_path.exists():
            return []
        try:
            return read_metadata(
                db_path, sql, tuple(params), attempts=50, retry_on=("locked", "malformed", "no such table")
            )
        except sqlite3.DatabaseError as exc:
            raise LiveAirflowError(f"the metadata database could not be read ({exc}) for: {sql}") from exc

    # ------------------------------------------------------------------ REST (the public API, as a user)

    def _api_up(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _dag_known(self, dag_id: str) -> bool:
        try:
            self.rest("GET", f"/api/v2/dags/{dag_id}")
        except LiveAirflowError:
            return False
        return True

    def token(self) -> str:
        if self._token is None:
            answer = self._http("POST", "/auth/token", {"username": ADMIN[0], "password": ADMIN[1]}, token=None)
            self._token = str(answer["access_token"])
        return self._token

    def rest(self, method: str, path: str, body: Any = None) -> Any:
        return self._http(method, path, body, token=self.token())

    def _http(self, method: str, path: str, body: Any, token: str | None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as exc:
            raise LiveAirflowError(f"{method} {path}: HTTP {exc.code}: {exc.read().decode(errors='replace')}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise LiveAirflowError(f"{method} {path}: {exc}") from exc
        return json.loads(text) if text.strip() else None

    def trigger(self, dag_id: str, conf: Mapping[str, Any], run_id: str | None = None) -> str:
        run_id = run_id or f"live__{int(time.time() * 1000)}_{secrets.token_hex(3)}"
        self.rest(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": dict(conf)}
        )
        return run_id

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/{task_id}"
        return dict(self.rest("GET", path))

    def wait_state(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        states: Iterable[str | None],
        timeout: float,
        try_number: int | None = None,
    ) -> dict[str, Any]:
        """Wait until the task instance is in one of ``states`` (and at ``try_number``, when given)."""
        wanted = set(states)
        deadline = time.monotonic() + timeout
        seen: list[tuple[Any, Any]] = []
        while True:
            ti = self.task_instance(dag_id, run_id, task_id)
            now = (ti.get("state"), ti.get("try_number"))
            if not seen or seen[-1] != now:
                seen.append(now)
            if now[0] in wanted and (try_number is None or now[1] == try_number):
                return ti
            if time.monotonic() > deadline:
                raise LiveAirflowError(
                    f"{dag_id}.{task_id} in {run_id} never reached {sorted(map(str, wanted))}"
                    f"{'' if try_number is None else f' at try {try_number}'} within {timeout:g}s; states seen "
                    f"(state, try): {seen}\n{self.diagnostics(dag_id, run_id, task_id)}"
                )
            time.sleep(0.5)

    def clear(self, dag_id: str, run_id: str, task_ids: list[str]) -> Any:
        return self.rest(
            "POST",
            f"/api/v2/dags/{dag_id}/clearTaskInstances",
            {
                "dry_run": False,
                "task_ids": task_ids,
                "dag_run_id": run_id,
                "only_failed": False,
                "reset_dag_runs": True,
            },
        )

    def mark(self, dag_id: str, run_id: str, task_id: str, state: str) -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/{task_id}"
        return self.rest("PATCH", path, {"new_state": state})

    # ------------------------------------------------------------------ logs

    def task_log(
        self, dag_id: str, run_id: str, task_id: str, try_number: int, triggerer: Component | None = None
    ) -> str:
        """The task's log of one try and every triggerer's log of that try's trigger, concatenated; with
        ``triggerer``, only what that triggerer wrote about the try's trigger."""
        folder = self.sandbox.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        pattern = f"attempt={try_number}.log*"
        if triggerer is not None:
            pattern = f"attempt={try_number}.log.trigger.{triggerer.job_id}.log"
        parts = sorted(folder.glob(pattern)) if folder.exists() else []
        return "\n".join(p.read_text(errors="replace") for p in parts)

    def wait_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, text: str, timeout: float) -> str:
        """Wait until the logs of that try (the task's or its trigger's) contain ``text``; return them."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.task_log(dag_id, run_id, task_id, try_number)
            if text in log:
                return log
            if time.monotonic() > deadline:
                raise LiveAirflowError(
                    f"{text!r} never appeared in the log of try {try_number} within "
                    f"{timeout:g}s\n{self.diagnostics(dag_id, run_id, task_id)}"
                )
            time.sleep(0.5)

    def diagnostics(self, dag_id: str, run_id: str, task_id: str) -> str:
        """For assertion messages: the task's logs of every try and the end of each component's log."""
        out = []
        for n in range(1, 5):
            text = self.task_log(dag_id, run_id, task_id, n)
            if text:
                out.append(f"--- task log, try {n}\n" + "\n".join(text.splitlines()[-40:]))
        for component in self.components.values():
            out.append(f"--- {component.name}\n{component.tail(25)}")
        return "\n".join(out)
