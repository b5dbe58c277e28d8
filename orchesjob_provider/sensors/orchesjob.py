"""OrchesjobSensor: wait for a job that something else started (another DAG, cron, a person) to finish."""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from orchesjob_provider import command as cmd
from orchesjob_provider.cli_choice import CliChoice, choose_cli, cli_settings_from_connection
from orchesjob_provider.cli_install import InstallCli
from orchesjob_provider.compat import (
    AirflowException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    Context,
    default_deferrable,
    event_of_an_earlier_try,
)
from orchesjob_provider.exceptions import OrchesjobError, OrchesjobNotFound
from orchesjob_provider.give_up import TryIdentity
from orchesjob_provider.hooks.orchesjob import OrchesjobHook
from orchesjob_provider.operators.orchesjob import describe_end


class OrchesjobSensor(BaseSensorOperator):
    """Succeed when a remote job reaches SUCCEEDED; fail (or skip, with ``soft_fail``) when it ends otherwise.

    :param ssh_conn_id: an Airflow SSH connection to the host.
    :param run_key: the job's run key (its latest attempt is watched; a key with no job yet is waited for). Templated.
    :param job_id: or one job by id. Templated.
    :param deferrable: wait in the triggerer (default True, or ``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE`` when set).
    :param poll_timeout: seconds one long poll may block on the host while deferred.
    :param orchesjob_bin: the CLI on the host; None (default): the connection's ``orchesjob_bin`` extra, else none
        named (``orchesjob`` on the PATH, or the uploaded copy: see ``install_cli``).
    :param install_cli: ``"auto"``, ``"never"`` or ``"always"`` (see ``OrchesjobHook``); None (default): the
        connection's ``install_cli`` extra, else ``"auto"``. The trigger runs the CLI resolved here.
    :param orchesjob_python: the host's Python 3.9+ for an uploaded CLI; None: the connection's extra, or searched.
    :param orchesjob_home: ``ORCHESJOB_HOME`` on the host; None (default): the connection's ``orchesjob_home``
        extra, else the host's default.
    :param hook_kwargs: more keyword arguments for :class:`OrchesjobHook`.
    :param shared_watcher: while deferred, watch through the triggerer's one watcher for this connection and host
        (default); False: a connection and a host process of the trigger's own (see ``OrchesjobOperator``).

    ``timeout``, ``poke_interval``, ``mode``, ``soft_fail`` and ``exponential_backoff`` behave as on any sensor.
    Returns (XCom) the job JSON, with ``cli``: which CLI answered (as the operator's XCom).
    """

    template_fields: Sequence[str] = ("run_key", "job_id", "orchesjob_home")
    ui_color = "#e8f0cf"

    def __init__(
        self,
        *,
        ssh_conn_id: str = "ssh_default",
        run_key: str | None = None,
        job_id: str | None = None,
        deferrable: bool | None = None,
        poll_timeout: float = 30.0,
        orchesjob_bin: str | Sequence[str] | None = None,
        orchesjob_home: str | None = None,
        install_cli: InstallCli | None = None,
        orchesjob_python: str | None = None,
        hook_kwargs: Mapping[str, Any] | None = None,
        shared_watcher: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (run_key is None) == (job_id is None):
            raise ValueError("give exactly one of run_key or job_id")
        self.ssh_conn_id = ssh_conn_id
        self.run_key = run_key
        self.job_id = job_id
        self.deferrable = default_deferrable() if deferrable is None else bool(deferrable)
        self.poll_timeout = poll_timeout
        self.orchesjob_bin = orchesjob_bin
        self.orchesjob_home = orchesjob_home
        self.install_cli = install_cli
        self.orchesjob_python = orchesjob_python
        if install_cli is not None:  # a bad value or a contradiction fails the DAG parse
            choose_cli(orchesjob_bin, orchesjob_home, install_cli, orchesjob_python)
        self.hook_kwargs = dict(hook_kwargs or {})
        self.shared_watcher = bool(shared_watcher)
        self._job: dict[str, Any] | None = None
        self._cli_used: dict[str, Any] | None = None  # which CLI answered (the hook's report, or the trigger's)
        self._hook: OrchesjobHook | None = None

    @property
    def hook(self) -> OrchesjobHook:
        """One hook (one SSH connection, one version check) for all the pokes of this try."""
        if self._hook is None:
            self._hook = OrchesjobHook(ssh_conn_id=self.ssh_conn_id, **self._cli().hook_kwargs(), **self.hook_kwargs)
        return self._hook

    def _cli(self) -> CliChoice:
        """The CLI settings: the task's, else the connection's extras (see the parameters)."""
        return cli_settings_from_connection(
            self.ssh_conn_id, self.orchesjob_bin, self.orchesjob_home, self.install_cli, self.orchesjob_python
        )

    def _lookup(self) -> dict[str, Any] | None:
        try:
            job = self.hook.status(run_key=self.run_key, job_id=self.job_id)
            self._cli_used = self.hook.settings.cli_info()
            return job
        except OrchesjobNotFound:
            if self.job_id is not None:
                raise  # a job id that does not exist will never appear
            self.log.info("No job with run key %r yet.", self.run_key)
            return None

    def _judge(self, job: Mapping[str, Any]) -> bool:
        """True for SUCCEEDED; a failed end fails the task (or skips it with soft_fail)."""
        status = job.get("status")
        if status == "SUCCEEDED":
            self.log.info("Job %s (run key %r) SUCCEEDED.", job.get("job_id"), job.get("run_key"))
            self._job = dict(job)
            if self._cli_used:
                self._job["cli"] = dict(self._cli_used)
            return True
        message = "job %s (run key %r, attempt %s) ended %s: %s" % (
            job.get("job_id"),
            job.get("run_key"),
            job.get("attempt_no"),
            status,
            describe_end(job),
        )
        if self.soft_fail:
            raise AirflowSkipException(message)
        raise AirflowException(message)

    def poke(self, context: Context) -> bool:
        job = self._lookup()
        if job is None or not cmd.is_terminal(job):
            if job is not None:
                self.log.info("Job %s is %s.", job.get("job_id"), job.get("status"))
            return False
        return self._judge(job)

    def _deadline(self, context: Context) -> float:
        """When ``timeout`` runs out: counted from the task's start (Airflow keeps it across deferrals), or from
        now where the runtime does not say (``airflow dags test`` on Airflow 2). It travels with the trigger."""
        ti = context.get("ti") if hasattr(context, "get") else None
        started = getattr(ti, "start_date", None)
        base = started.timestamp() if isinstance(started, _dt.datetime) else time.time()
        return base + float(self.timeout)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            super().execute(context)
            return self._job
        deadline = self._deadline(context)
        job = self._lookup()
        if job is not None and cmd.is_terminal(job):
            self._judge(job)
            return self._job
        if time.time() >= deadline:
            self._timed_out()
        from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

        cli = self.hook.settings.cli  # resolved by the lookup above: the trigger runs exactly this CLI

        # One deferral until the end: with no job yet, the trigger looks for the run key every poke_interval,
        # then watches the job it finds. The deadline is in the trigger, so it holds across triggerer restarts
        # and in `airflow dags test`, which hands a resumed task only the trigger's event.
        self.defer(
            trigger=OrchesjobTrigger(
                ssh_conn_id=self.ssh_conn_id,
                job_id=job["job_id"] if job is not None else None,
                run_key=self.run_key if job is None else job.get("run_key"),
                orchesjob_bin=cli.orchesjob_bin,
                orchesjob_home=cli.orchesjob_home,
                poll_timeout=self.poll_timeout,
                deadline=deadline,
                stream_logs=False,
                wait_for_key_interval=float(self.poke_interval),
                cli=cli.info(),
                shared_watcher=self.shared_watcher,
                try_identity=TryIdentity.from_context(context).to_kwargs(),  # whose events they are (never aborts)
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> Any:
        if event is None:  # resumed before the trigger fired (see OrchesjobOperator.execute_complete): look again
            return self.execute(context)
        earlier = event_of_an_earlier_try(event, context)
        if earlier is not None:  # an earlier try's event (Airflow 3.0.x): judge the job as it is now
            self.log.info(
                "Airflow resumed this try with the trigger event of try %s: looking at the job afresh.", earlier
            )
            return self.execute(context)
        status = event.get("status")
        if status == "terminal":
            self._cli_used = event.get("cli")
            self._judge(event["job"])
            return self._job
        if status == "timeout":
            # The trigger asked the host at its deadline; ask once more from here (the job may have ended since, or
            # the trigger could not reach the host): only a job still running, or still absent, is a timeout.
            try:
                job = self._lookup()
            except OrchesjobError as exc:
                self._timed_out(f"; the job could not be looked at since: {exc}")
            if job is not None and cmd.is_terminal(job):
                self._judge(job)
                return self._job
            self._timed_out()
        raise AirflowException(f"lost track of job {event.get('job_id')}: {event.get('message')}")

    def _timed_out(self, more: str = "") -> NoReturn:
        message = "the job did not finish within the sensor's timeout of %ss%s" % (self.timeout, more)
        if self.soft_fail:
            raise AirflowSkipException(message)
        raise AirflowSensorTimeout(message)
