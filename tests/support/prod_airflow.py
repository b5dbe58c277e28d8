"""Airflow 3 in its production shape on one machine: PostgreSQL, Redis, CeleryExecutor with two workers, two
triggerers, scheduler, dag-processor and api-server, every one a process of its own on 127.0.0.1.

This is the deployment the live suite (tests/live) runs on. It is :class:`LiveAirflow` (the same helpers: trigger
a run, wait for a state, clear, mark, find the triggerer holding a trigger, read the task's logs) with what users
outgrow SQLite and LocalExecutor for:

- a private PostgreSQL (tests/support/data_servers.py) as the metadata database, also Celery's result backend;
- a private Redis as the Celery broker, with a short ``visibility_timeout`` (:data:`VISIBILITY_TIMEOUT`), so that a
  task held by a worker longer than that is delivered again to a worker, as the broker does in production after its
  (longer) default;
- two ``airflow celery worker`` processes, ``worker-1`` and ``worker-2``, on the default queue; each gives its task
  instances its own host name (tests/support/live_hostname.py), so ``hostname`` tells which worker ran a try;
- two triggerers, as in :class:`LiveAirflow`.

A test can stop, kill and start again any of them: :meth:`restart` (SIGTERM, then the same command again),
:meth:`crash` (SIGKILL of the whole process group, then the same command again), ``postgres.restart()`` and
``redis.restart()``. :meth:`stop` tears everything down, the servers last, and leaves no process behind.

No pytest here (fixtures wrap it).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.data_servers import Postgres, Redis
from tests.support.live_airflow import LIVE_DAGS, Component, LiveAirflow, LiveAirflowError

VISIBILITY_TIMEOUT = 60  # seconds a worker may hold a delivered task unacknowledged before Redis delivers it again
WORKER_CONCURRENCY = 4


class ProdAirflow(LiveAirflow):
    """Start with :meth:`start`, stop with :meth:`stop` (also on failure).

    :param connections: more SSH connections (``{conn_id: connection dict}``) besides ``connection``, e.g. other
        hosts.
    :param workers: how many Celery workers :meth:`start` starts.
    Other parameters as :class:`LiveAirflow`.
    """

    def __init__(
        self,
        directory: Path,
        connection: Mapping[str, Any],
        python: str = sys.executable,
        *,
        connections: Mapping[str, Mapping[str, Any]] | None = None,
        dag_files: Sequence[Path] = (LIVE_DAGS,),
        wait_for_dag: str = "orchesjob_live_polling",
        triggerers: int = 2,
        workers: int = 2,
        settings: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        self.postgres = Postgres(directory / "postgres.log")
        self.redis = Redis(directory / "redis", directory / "redis.log")
        self.initial_workers = workers
        self._commands: dict[str, tuple[tuple[str, ...], dict[str, str] | None]] = {}
        extra = dict(env or {})
        for conn_id, conn in (connections or {}).items():
            extra[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(dict(conn))
        super().__init__(
            directory,
            connection,
            python,
            dag_files=dag_files,
            wait_for_dag=wait_for_dag,
            triggerers=triggerers,
            settings=settings,
            env=extra,
        )

    def _settings(self) -> dict[str, str]:
        settings = super()._settings()
        settings.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CORE__PARALLELISM": "16",
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.support.live_hostname.hostname",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url,
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": self.postgres.async_url,
                "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{self.postgres.url}",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
            }
        )
        return settings

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 300) -> ProdAirflow:
        deadline = time.monotonic() + timeout
        try:
            self.postgres.start()
            self.redis.start()
            super().start(timeout=max(60.0, deadline - time.monotonic()))
            for n in range(1, self.initial_workers + 1):
                self.start_worker(n, timeout=max(60.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Every Airflow component first (as :class:`LiveAirflow` stops them), then Redis, then PostgreSQL."""
        try:
            super().stop()
        finally:
            try:
                self.redis.stop()
            finally:
                self.postgres.stop()

    def _spawn(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> Component:
        self._commands[name] = (args, dict(env) if env is not None else None)
        return super()._spawn(name, *args, env=env)

    # ------------------------------------------------------------------ workers

    def workers(self) -> list[Component]:
        return [c for c in self.components.values() if c.name.startswith("worker-")]

    def start_worker(self, n: int, timeout: float = 120) -> Component:
        """Start ``worker-N`` and wait until Celery says it is ready to take tasks."""
        name = f"worker-{n}"
        component = self._spawn(
            name,
            "celery",
            "worker",
            "--celery-hostname",
            f"{name}@127.0.0.1",
            "--queues",
            "default",
            "--concurrency",
            str(WORKER_CONCURRENCY),
            "--pid",
            str(self.directory / f"{name}.pid"),
            "-s",
            env={"ORCHESJOB_LIVE_HOSTNAME": name},
        )
        self._until(
            time.monotonic() + timeout,
            f"{name} ready",
            lambda: " ready." in component.process.output(),
            [name],
        )
        return component

    def worker_named(self, hostname: str) -> Component:
        """The worker whose task instances carry ``hostname`` (a task instance's ``hostname`` field)."""
        component = self.components.get(hostname)
        if component is None or not hostname.startswith("worker-"):
            raise LiveAirflowError(f"no worker {hostname!r} in this deployment")
        return component

    def deliveries(self, ti_id: str) -> dict[str, int]:
        """How many times each worker began a workload of the task instance try ``ti_id`` (Airflow 3 gives every
        try an id of its own): more than one in total is the broker delivering the same task again."""
        counts = {}
        for worker in self.workers():
            counts[worker.name] = sum(
                1 for line in worker.process.output().splitlines() if "Executing workload" in line and ti_id in line
            )
        return counts

    # ------------------------------------------------------------------ restarts

    def start_again(self, name: str, timeout: float = 120) -> Component:
        """Start a stopped or killed component's command again under its name (not a triggerer)."""
        args, env = self._commands[name]
        component = self._spawn(name, *args, env=env)
        if name.startswith("worker-"):
            self._until(
                time.monotonic() + timeout, f"{name} ready", lambda: " ready." in component.process.output(), [name]
            )
        elif name.startswith("triggerer-"):
            raise LiveAirflowError("start a triggerer again with start_triggerer() (it gets a job id of its own)")
        return component

    def restart(self, component: Component, timeout: float = 120) -> Component:
        """SIGTERM the component, wait for it to exit, start the same command again (a deploy, an operator's
        restart); returns the new component."""
        self.terminate(component, timeout=timeout)
        return self.start_again(component.name, timeout)

    def crash(self, component: Component, timeout: float = 120, start_again: bool = True) -> Component:
        """SIGKILL the component's whole process group (a machine lost), then, unless told not to, start the same
        command again; returns the new component (or the dead one)."""
        self.kill(component)
        return self.start_again(component.name, timeout) if start_again else component

    def running(self) -> list[str]:
        """The names of the components running now (to hand to :meth:`revive` after a fault)."""
        return [c.name for c in self.components.values() if c.process.running()]

    def revive(self, names: Iterable[str], timeout: float = 120) -> list[str]:
        """Start again each of ``names`` that has exited since (what a service manager's restart does); returns
        those. A triggerer comes back as a new triggerer, with a job id of its own."""
        revived = []
        for name in names:
            component = self.components[name]
            if component.process.running():
                continue
            revived.append(name)
            if name.startswith("triggerer-"):
                self.start_triggerer(timeout)
            else:
                self.start_again(name, timeout)
        return revived

    # ------------------------------------------------------------------ the metadata database (read only)

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """The :class:`LiveAirflow` queries (``?`` placeholders) on PostgreSQL; a server restarting meanwhile is
        waited for (up to a minute)."""
        statement = re.sub(r"\?", "%s", sql)
        deadline = time.monotonic() + 60
        while True:
            try:
                return self.postgres.execute(statement, tuple(params))
            except Exception as exc:
                if "does not exist" in str(exc) and "relation" in str(exc):
                    return []  # before the schema is migrated
                if time.monotonic() > deadline:
                    raise LiveAirflowError(f"the metadata database could not be read ({exc}) for: {sql}") from exc
                time.sleep(0.5)

    def task_states(self, dag_id: str, run_id: str, task_id: str = "job") -> dict[int, str | None]:
        """``{map_index: state}`` of one task's instances in one run."""
        rows = self.query(
            "SELECT map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
            (dag_id, run_id, task_id),
        )
        return {int(i): s for i, s in rows}
