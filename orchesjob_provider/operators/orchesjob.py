"""OrchesjobOperator: run a command on a remote host so that Airflow retries never run it twice.

The operator stays thin: the hook does SSH and the CLI's JSON, the trigger does the waiting. What lives here is
Airflow's side of the contract: the run key that every try of a task instance shares, what a retry may adopt,
how a job's end becomes a task state, and aborting the remote job when the task is killed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from orchesjob_provider import command as cmd
from orchesjob_provider import run_key as run_keys
from orchesjob_provider.cli_choice import CliChoice, ResolvedCli, choose_cli, cli_settings_from_connection
from orchesjob_provider.cli_install import InstallCli
from orchesjob_provider.compat import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
    AirflowTaskTimeout,
    BaseOperator,
    Context,
    default_deferrable,
    event_of_an_earlier_try,
    mask_secret,
)
from orchesjob_provider.exceptions import (
    OrchesjobConflict,
    OrchesjobError,
    OrchesjobNotFound,
    OrchesjobNotOwner,
    OrchesjobTransportError,
)
from orchesjob_provider.give_up import WORKER_ASK_TIMEOUT, TryIdentity, ask, log_left_running, manual_abort_command
from orchesjob_provider.hooks.orchesjob import OrchesjobAsyncHook, OrchesjobHook
from orchesjob_provider.log_relay import LogRelay

Idempotency = Literal["reuse_success", "strict", "active_only"]
IDEMPOTENCY_MODES: tuple[Idempotency, ...] = ("reuse_success", "strict", "active_only")
_CLI_MODE: dict[str, cmd.StartMode] = {"reuse_success": "reuse_success", "strict": "strict", "active_only": "default"}
MIN_MASKED_LENGTH = 5  # Airflow 3's default [logging] min_length_masked_secret
KILL_REASON = "the Airflow task was killed (marked failed or success, or it failed)"
TIMEOUT_REASON = "the Airflow task's execution_timeout ran out while the job was still running"


@dataclasses.dataclass(frozen=True)
class AbortOutcome:
    """What an abort of the task's job really did, as the host answered it (never what was hoped for).

    ``kind``: ``aborted`` (the host answered ABORTED), ``not_owner`` (refused: ``owner`` holds the job now),
    ``ended`` (the job had already ended: ``job`` is its record), ``gone`` (not on the host any more), ``failed``
    (the abort could not be done: ``detail`` says why; the job may still run) or ``skipped`` (nothing was asked:
    ``abort_on_kill=False``, or no job yet).
    """

    kind: str
    job: Mapping[str, Any] | None = None
    owner: str | None = None
    detail: str = ""


def describe_end(job: Mapping[str, Any]) -> str:
    """One line saying how a finished job ended, from the most specific field the CLI has filled in so far.

    An abort (by a user, by Airflow, or by the job's own ``timeout``) is recorded as ABORTED before its process tree
    is stopped, so a job can be seen ABORTED before its ``end_reason`` is written: the abort reason says it then.
    """
    if job.get("end_reason"):
        return str(job["end_reason"])
    if job.get("status") == "ABORTED" and job.get("abort_reason"):
        return "aborted: %s" % job["abort_reason"]
    if job.get("signal_name") or job.get("signal"):
        return "killed by signal %s" % (job.get("signal_name") or job.get("signal"))
    if job.get("exit_code") is not None:
        return "exited with code %s" % job["exit_code"]
    return "no exit code recorded"


class OrchesjobOperator(BaseOperator):
    """Start a job on a remote host through orchesjob over SSH, and wait for it without holding a worker slot.

    :param command: the job: a list (an argv, run as is) or a string (run by ``/bin/sh -c`` on the host). Templated.
    :param ssh_conn_id: an Airflow SSH connection to the host.
    :param run_key: the idempotency key. Templated. Default: ``airflow/<dag>/<task>/<run id>[/<map index>]``, the same
        for every try of a task instance, so a retry reattaches instead of starting again.
    :param idempotency: what a try does when the run key already has a job:
        ``reuse_success`` (default) reattaches to an active job, adopts a SUCCEEDED one, starts a new attempt after
        a failure; ``strict`` never starts a second execution (a failed job stays failed until ``orchesjob unlock``);
        ``active_only`` reattaches to an active job and starts anew after any finished one.
    :param cwd: working directory on the host. Templated.
    :param env: environment variables for the job. Templated. The values are registered with Airflow's secrets
        masker and never leave the task: the job the operator returns (XCom) and passes to its trigger lists the
        names only, each value replaced by ``"***"``.
    :param timeout: seconds after which the host aborts the job (kept with the job, so it holds without Airflow).
    :param skip_on_exit_code: exit code(s) that mark the task skipped instead of failed.
    :param poll_interval: seconds one long poll (``orchesjob wait``) may block; the end of the job is noticed at once
        whatever this is.
    :param deferrable: wait in the triggerer (default True, or ``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE`` when set).
    :param abort_on_kill: abort the remote job when the task gives it up (default True): when its
        ``execution_timeout`` runs out, and when it is killed while its task instance is over for good (marked
        failed or success, failed with no retry left, skipped, removed...). A kill that Airflow sends while the task
        instance still wants the job or will run again (it was cleared, a triggerer handed it over, or it is
        ``up_for_retry``: e.g. its worker stalled past the heartbeat timeout) leaves the job running for the try
        that reattaches to it; so does a kill after which Airflow cannot tell the task instance's state (a WARNING
        then names the job and the command that aborts it). See ``orchesjob_provider.give_up``.
    :param allow_parameter_mismatch: adopt an existing job of the run key even when its command, cwd, env or timeout
        differ from this task's, as its owner (default False: the task fails and says why, and the job stays its
        owner's: this task's kill never aborts it).
    :param orchesjob_bin: the CLI on the host (an absolute path is safest; a list for e.g. ``python -m orchesjob``).
        None (default): the SSH connection's ``orchesjob_bin`` extra, else none named: ``orchesjob`` on the PATH, or
        (``install_cli="auto"``) the provider's own copy, uploaded when the host has none.
    :param install_cli: ``"auto"``, ``"never"`` or ``"always"`` (see ``OrchesjobHook``). None (default): the
        connection's ``install_cli`` extra, else ``"auto"``.
    :param orchesjob_python: the host's Python 3.9+ for an uploaded CLI. None (default): the connection's
        ``orchesjob_python`` extra, else ``python3`` and the usual absolute paths.
    :param orchesjob_home: ``ORCHESJOB_HOME`` on the host. None (default): the connection's ``orchesjob_home``
        extra, else the host's default.
    :param start_timeout: seconds ``start`` waits for the command to be running.
    :param abort_grace_seconds: SIGTERM-to-SIGKILL grace when the task aborts the job.
    :param stderr_tail_lines: lines of stderr quoted in the failure message.
    :param hook_kwargs: more keyword arguments for :class:`OrchesjobHook` (``command_timeout``, ``retries`` ...).
    :param shared_watcher: while deferred, watch the job through the triggerer's one watcher for this connection and
        host (default: one SSH connection and one host process for all such jobs). False gives the task's trigger a
        connection and a host process of its own.

    Returns (XCom) the final job JSON: ``job_id``, ``status``, ``exit_code``, ``attempt_no``, timestamps, ...,
    plus ``cli``: which CLI ran it (``path``, ``version``, ``python``, ``origin``: ``host``, ``uploaded`` or
    ``cached``, and ``argv``).

    Each try makes one request id (``airflow:<dag>:<task>:<run>:<map index>:try<N>:<random>``) and starts the job
    with it: the hook repeats that id on every transport retry of the start, so one try never launches two
    executions (a job that FAILED before a retry arrived is that try's result), while the next try, with its own
    id, decides afresh. The id travels with the trigger, and aborting on kill is limited to a job this try still
    owns: a stale try never aborts the job a newer try has reattached to.
    """

    template_fields: Sequence[str] = ("command", "run_key", "cwd", "env", "orchesjob_home")
    template_fields_renderers = {"env": "json", "command": "bash"}
    ui_color = "#cfe8d5"

    def __init__(
        self,
        *,
        command: str | Sequence[str],
        ssh_conn_id: str = "ssh_default",
        run_key: str | None = None,
        idempotency: Idempotency = "reuse_success",
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        skip_on_exit_code: int | Iterable[int] | None = None,
        poll_interval: float = 30.0,
        deferrable: bool | None = None,
        abort_on_kill: bool = True,
        allow_parameter_mismatch: bool = False,
        orchesjob_bin: str | Sequence[str] | None = None,
        orchesjob_home: str | None = None,
        install_cli: InstallCli | None = None,
        orchesjob_python: str | None = None,
        start_timeout: float = 10.0,
        abort_grace_seconds: float = 5.0,
        stderr_tail_lines: int = 20,
        hook_kwargs: Mapping[str, Any] | None = None,
        shared_watcher: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if idempotency not in IDEMPOTENCY_MODES:
            raise ValueError(f"idempotency must be one of {', '.join(IDEMPOTENCY_MODES)}; got {idempotency!r}")
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.command = command
        self.ssh_conn_id = ssh_conn_id
        self.run_key = run_key
        self.idempotency = idempotency
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.timeout = timeout
        if skip_on_exit_code is None:
            self.skip_on_exit_code: list[int] = []
        elif isinstance(skip_on_exit_code, int):
            self.skip_on_exit_code = [skip_on_exit_code]
        else:
            self.skip_on_exit_code = [int(c) for c in skip_on_exit_code]
        self.poll_interval = float(poll_interval)
        self.deferrable = default_deferrable() if deferrable is None else bool(deferrable)
        self.abort_on_kill = abort_on_kill
        self.allow_parameter_mismatch = allow_parameter_mismatch
        self.orchesjob_bin = orchesjob_bin
        self.orchesjob_home = orchesjob_home
        self.install_cli = install_cli
        self.orchesjob_python = orchesjob_python
        if install_cli is not None:  # a bad value or a contradiction fails the DAG parse
            choose_cli(orchesjob_bin, orchesjob_home, install_cli, orchesjob_python)
        self.start_timeout = start_timeout
        self.abort_grace_seconds = abort_grace_seconds
        self.stderr_tail_lines = stderr_tail_lines
        self.hook_kwargs = dict(hook_kwargs or {})
        self.shared_watcher = bool(shared_watcher)
        self._job_id: str | None = None
        self._request_id: str | None = None
        self._starting: str | None = None  # the run key of a start still in flight
        self._try: TryIdentity | None = None
        self._released = False  # the job was already aborted (or left) for an execution_timeout
        self._hook: OrchesjobHook | None = None
        self._cli_used: dict[str, Any] | None = None  # which CLI answered (after the handshake, or from the trigger)

    # ------------------------------------------------------------------ helpers

    def _cli(self) -> CliChoice:
        """The CLI settings: the task's, else the connection's extras (see the parameters)."""
        return cli_settings_from_connection(
            self.ssh_conn_id, self.orchesjob_bin, self.orchesjob_home, self.install_cli, self.orchesjob_python
        )

    def _this_cli(self) -> ResolvedCli:
        """The CLI this try resolved (never a second search or upload), else the one the task's settings name."""
        if self._cli_used is not None:
            return ResolvedCli.from_record(self._cli_used)
        return self._cli().first_try()

    def _new_hook(self) -> OrchesjobHook:
        """A hook on the CLI this try resolved (never a second search or upload), else on the task's settings."""
        if self._cli_used is not None:
            # that CLI's contract was checked by this try (and by its trigger): no second handshake, whose log line
            # would call an uploaded copy "found on the host"
            kwargs = {"check_version": False, **self.hook_kwargs}
            return OrchesjobHook(ssh_conn_id=self.ssh_conn_id, **self._this_cli().hook_kwargs(), **kwargs)
        return OrchesjobHook(ssh_conn_id=self.ssh_conn_id, **self._cli().hook_kwargs(), **self.hook_kwargs)

    def _resolve_cli(self) -> dict[str, Any]:
        """Find (or upload) the CLI once per try and say in the task log which one it is; kept for XCom, the
        trigger and the abort."""
        self.hook.version()
        self._cli_used = self.hook.settings.cli.record()
        return self._cli_used

    @property
    def hook(self) -> OrchesjobHook:
        if self._hook is None:
            self._hook = self._new_hook()
        return self._hook

    def _check_watch_path(self) -> None:
        """Before starting anything: which CLI runs (found, or uploaded per ``install_cli``), and can the path that
        will watch the job reach the host and that CLI? Deferred, that is the triggerer's (asyncssh, with its own
        host-key check, given the CLI resolved here); otherwise this worker's. A task must never start a job it
        cannot watch. Checked afresh on every try (a fixed connection takes effect at once)."""
        try:
            cli = self._resolve_cli()
        except OrchesjobTransportError as exc:
            raise AirflowException(
                f"cannot reach the orchesjob CLI through SSH connection {self.ssh_conn_id!r}, so no job was "
                f"started: {exc}"
            ) from exc
        # (a missing, incompatible or uninstallable CLI raises its own typed error, which says what to do)
        if not self.deferrable:
            return
        command_timeout = self.hook_kwargs.get("command_timeout")
        probe = OrchesjobAsyncHook(
            ssh_conn_id=self.ssh_conn_id,
            **ResolvedCli.from_record(cli).hook_kwargs(),
            **({"command_timeout": command_timeout} if command_timeout is not None else {}),
        )

        async def version() -> Any:
            try:
                return await probe.version()
            finally:
                await probe.close()

        try:
            asyncio.run(version())
        except OrchesjobError as exc:
            raise AirflowException(
                f"the triggerer could not watch a job through SSH connection {self.ssh_conn_id!r} (the deferred "
                f"path, asyncssh), so no job was started: {exc}"
            ) from exc

    def _emit(self, stream: str, line: str) -> None:
        self.log.info("[%s] %s", stream, line)

    def _describe(self, job: Mapping[str, Any]) -> str:
        return "job %s (run key %r, attempt %s)" % (job.get("job_id"), job.get("run_key"), job.get("attempt_no"))

    def _announce(self, job: Mapping[str, Any]) -> None:
        what = self._describe(job)
        if not job.get("existing"):
            self.log.info("Started %s on the host: %s", what, job.get("command"))
        elif job.get("same_request"):
            # An SSH retry of this try's own start: the first attempt launched this job, nothing ran twice.
            self.log.info(
                "Started %s on the host (its answer was lost in transit and asked for again; it is %s): %s",
                what,
                job.get("status"),
                job.get("command"),
            )
        elif cmd.is_terminal(job):
            self.log.info(
                "Adopted the result of %s, which already ended as %s: nothing was run again.", what, job.get("status")
            )
        else:
            self.log.info("Reattached to %s, which is still %s: nothing was started again.", what, job.get("status"))
        if job.get("existing") and job.get("parameters_match") is False:
            message = (
                f"the run key {job.get('run_key')!r} already has {what} with a different command, cwd, env or "
                f"timeout than this task (it runs {job.get('command')!r}). Refusing to adopt it; use another run_key, "
                "or allow_parameter_mismatch=True if that job is the right one."
            )
            if not self.allow_parameter_mismatch:
                raise AirflowFailException(message)
            self.log.warning("Adopting it anyway (allow_parameter_mismatch=True): %s", message)

    def _deadline(self, context: Context) -> float | None:
        """When the trigger must give up: a little before Airflow's own execution_timeout, so that the task can
        abort the remote job itself rather than be cut off."""
        if not self.execution_timeout:
            return None
        ti = context.get("ti") if hasattr(context, "get") else None
        started = getattr(ti, "start_date", None)
        base = started.timestamp() if isinstance(started, _dt.datetime) else time.time()
        return base + max(1.0, self.execution_timeout.total_seconds() - 5.0)

    # ------------------------------------------------------------------ Airflow entry points

    def _mask_env(self) -> None:
        """Register the env values with Airflow's secrets masker (values shorter than ``MIN_MASKED_LENGTH`` are
        not: masking "D" would garble every log line; they still never reach XCom or the trigger)."""
        for value in (self.env or {}).values() if isinstance(self.env, Mapping) else ():
            if len(str(value)) >= MIN_MASKED_LENGTH:
                mask_secret(str(value))

    def render_template_fields(self, *args: Any, **kwargs: Any) -> Any:
        """Render as usual, then mask the env values at once: Airflow stores the rendered fields (redacted by the
        masker) right after this, before ``execute``."""
        result = super().render_template_fields(*args, **kwargs)
        self._mask_env()
        return result

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            return self._execute(context)
        except AirflowTaskTimeout:
            # Airflow's execution_timeout interrupted the wait in this worker. It calls on_kill next, while the
            # task instance is still "running", so on_kill could not tell a timeout from a clear: the task gives the
            # job up here, itself, and on_kill then has nothing left to do.
            self._released = True
            outcome = self._abort(TIMEOUT_REASON)
            if self._job_id:
                self.log.error("%s.", self._timeout_message(outcome))
            raise

    def _execute(self, context: Context) -> dict[str, Any]:
        self._mask_env()
        run_key = self.run_key or run_keys.from_context(context)
        self._check_watch_path()
        self._request_id = run_keys.request_id_from_context(context)  # one per try; every SSH retry repeats it
        self._starting = run_key  # while the answer is out, on_kill can name the job by key and request id only
        self._try = TryIdentity.from_context(context)
        job = self.hook.start(
            run_key,
            self.command,
            mode=_CLI_MODE[self.idempotency],
            cwd=self.cwd,
            env=self.env,
            timeout=self.timeout,
            start_timeout=self.start_timeout,
            request_id=self._request_id,
            # a job of other parameters becomes this try's only when it will adopt it; refused, it stays its owner's
            **({"adopt_mismatch": True} if self.allow_parameter_mismatch else {}),
        )
        self._starting = None  # from here on, only a job this try accepted (its id) is aborted
        self._announce(job)  # raises on a parameter mismatch: that job is not ours to abort in on_kill
        self._job_id = job["job_id"]
        relay = LogRelay(self._emit)
        if cmd.is_terminal(job):
            return self._finish(self._drain(job, relay), relay)
        if self.deferrable:
            from orchesjob_provider.triggers.orchesjob import OrchesjobTrigger

            cli = self._cli_used or {}
            self.defer(
                trigger=OrchesjobTrigger(
                    ssh_conn_id=self.ssh_conn_id,
                    job_id=job["job_id"],
                    run_key=job["run_key"],
                    # the argv that answered here: the triggerer runs exactly it, never searching or uploading
                    orchesjob_bin=self.hook.settings.cli.orchesjob_bin,
                    orchesjob_home=self.hook.settings.cli.orchesjob_home,
                    poll_timeout=self.poll_interval,
                    deadline=self._deadline(context),
                    abort_on_kill=self.abort_on_kill,
                    abort_reason=KILL_REASON,
                    abort_grace_seconds=self.abort_grace_seconds,
                    request_id=self._request_id,
                    cli=cli,
                    try_identity=self._try.to_kwargs(),
                    shared_watcher=self.shared_watcher,
                ),
                method_name="execute_complete",
            )
        return self._finish(self._poll(job, relay), relay)

    def _poll(self, job: dict[str, Any], relay: LogRelay) -> dict[str, Any]:
        """Wait in the worker (deferrable=False): long polls that also bring the new log output."""
        while True:
            # Ask from what has been *read* (relay.read), not what has been written out (relay.offsets): a partial
            # last line is held back in the relay, and asking for it again would show it twice.
            offsets = relay.read
            result = self.hook.wait(
                job_id=job["job_id"],
                timeout=self.poll_interval,
                stdout_offset=offsets["stdout"],
                stderr_offset=offsets["stderr"],
            )
            more = relay.take(result.get("logs"))
            relay.flush_quiet(self.poll_interval)  # a quiet stream's partial last line waits no longer (log_relay)
            if cmd.is_terminal(result) and not more:
                relay.flush()
                return {k: v for k, v in result.items() if k not in ("logs", "timed_out")}

    def _drain(self, job: dict[str, Any], relay: LogRelay) -> dict[str, Any]:
        """Show what a finished job wrote from the relay's offsets on (its whole output for an adopted job)."""
        while True:
            offsets = relay.read
            result = self.hook.wait(
                job_id=job["job_id"],
                timeout=0,
                stdout_offset=offsets["stdout"],
                stderr_offset=offsets["stderr"],
            )
            if not relay.take(result.get("logs")):
                relay.flush()
                return {k: v for k, v in result.items() if k not in ("logs", "timed_out")}

    def execute_complete(self, context: Context, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: show any output it had not, then turn the job's end into the task's.

        Without an event (a deferred task instance run again before its trigger fired: the process running the
        trigger was killed and the task is re-run, e.g. with ``airflow tasks test``), start over: ``execute`` finds
        the job by its run key and reattaches to it or adopts its result.
        """
        if event is None:
            self.log.info("Resumed without a trigger event; looking the job up again by its run key.")
            return self.execute(context)
        earlier = event_of_an_earlier_try(event, context)
        if earlier is not None:
            self.log.info(
                "Airflow resumed this try with the trigger event of try %s (job %s, %s): not this try's. Deciding "
                "afresh by the run key, as a new try does.",
                earlier,
                event.get("job_id"),
                event.get("status"),
            )
            return self.execute(context)
        cli = event.get("cli")
        if cli and cli.get("argv"):  # the CLI the deferring try resolved: drain and report through exactly it
            self._cli_used = dict(cli)
            self._hook = self._new_hook()
        self._job_id = event.get("job_id")
        self._request_id = event.get("request_id")
        self._try = TryIdentity.from_context(context)
        status = event.get("status")
        if status == "terminal":
            relay = LogRelay(self._emit, event.get("stdout_offset", 0), event.get("stderr_offset", 0))
            job = self._drain(dict(event["job"]), relay)
            return self._finish(job, relay)
        if status == "timeout":
            # The trigger looked at the job at its deadline and found it still running. The abort asks the host
            # again, under its lock: a job that ended meanwhile is reported as it ended, never as aborted.
            outcome = self._abort(TIMEOUT_REASON)
            if outcome.kind == "ended" and outcome.job is not None:
                self.log.info(
                    "Job %s had ended (%s) by the time the task's execution_timeout was near: its own end decides.",
                    self._job_id,
                    outcome.job.get("status"),
                )
                relay = LogRelay(self._emit, event.get("stdout_offset", 0), event.get("stderr_offset", 0))
                return self._finish(self._drain(dict(outcome.job), relay), relay)
            raise AirflowException(self._timeout_message(outcome))
        raise AirflowException(
            f"lost track of job {self._job_id}: {event.get('message')}. The job itself is not affected: a retry of "
            "this task reattaches to it by run key."
        )

    def _finish(self, job: Mapping[str, Any], relay: LogRelay) -> dict[str, Any]:
        status = job.get("status")
        if status == "SUCCEEDED":
            self.log.info("%s SUCCEEDED.", self._describe(job))
            result = dict(job)
            if self._cli_used is not None:
                result["cli"] = {k: v for k, v in self._cli_used.items() if k != "orchesjob_home"}
            return result
        exit_code = job.get("exit_code")
        if exit_code is not None and exit_code in self.skip_on_exit_code:
            raise AirflowSkipException(
                f"{self._describe(job)} exited with code {exit_code}, listed in skip_on_exit_code"
            )
        how = describe_end(job)
        tail = self._stderr_tail(job)
        message = f"{self._describe(job)} ended {status}: {how}"
        if tail:
            message += "\nLast lines of its stderr:\n" + tail
        raise AirflowException(message)

    def _stderr_tail(self, job: Mapping[str, Any]) -> str:
        if self.stderr_tail_lines <= 0:
            return ""
        try:
            chunk = self.hook.logs(job_id=job["job_id"], stream="stderr", tail=self.stderr_tail_lines)
        except OrchesjobError as exc:
            self.log.warning("could not read the job's stderr: %s", exc)
            return ""
        return str(chunk.get("data") or "").rstrip("\n")

    def _timeout_message(self, outcome: AbortOutcome) -> str:
        """The task's failure for an execution_timeout, saying what became of the job as the host answered."""
        head = f"job {self._job_id} was still running when the task's execution_timeout ran out"
        if outcome.kind == "aborted":
            return f"{head}; it was aborted"
        if outcome.kind == "skipped":
            return f"{head} (left running)"  # abort_on_kill=False
        if outcome.kind == "not_owner":
            return (
                f"{head}; it was NOT aborted: it belongs to request {outcome.owner!r}, not to this try's "
                f"{self._request_id!r} (a newer try took it over), so it is left running for that one"
            )
        if outcome.kind == "gone":
            return f"{head}; it is no longer on the host (cleaned), so nothing was aborted"
        if outcome.kind == "ended":
            return f"job {self._job_id} had ended ({outcome.detail}) by the time the task's execution_timeout ran out"
        return f"{head}; it could NOT be aborted and may still be running: {outcome.detail}"

    def _abort(self, reason: str) -> AbortOutcome:
        """Abort our job over a connection of its own, if it is still ours, and say what the host answered.

        ``on_kill`` runs while ``execute`` is still inside a ``wait`` on the task's connection (Airflow calls it from
        a signal handler that interrupted that very call, or from another thread): sharing that SSH client could
        hang on its half-read channel, so the abort never touches it. The abort names this try's request id
        (``abort --if-owner``): when a newer try has reattached to the job, the host refuses and the job is left
        to that try.
        """
        # A kill that lands while this try's start is still in flight (the host may have launched the job, the
        # answer is not in yet) names the job by run key, and --if-owner makes sure it is the one this start made
        # or took over, never an older job of the key.
        by_key = self._starting if self._job_id is None and self._request_id else None
        if not (self.abort_on_kill and (self._job_id or by_key)):
            return AbortOutcome("skipped")
        hook = self._new_hook()
        try:
            if by_key is not None:
                aborted = hook.abort(
                    run_key=by_key, reason=reason, grace_seconds=self.abort_grace_seconds, if_owner=self._request_id
                )
            else:
                aborted = hook.abort(
                    job_id=self._job_id,
                    reason=reason,
                    grace_seconds=self.abort_grace_seconds,
                    if_owner=self._request_id,
                )
            job_id = aborted.get("job_id", self._job_id)
            if aborted.get("status") == "ABORTED":
                self.log.info("Aborted job %s on the host.", job_id)
                return AbortOutcome("aborted", job=aborted)
            detail = f"the host answered the abort with status {aborted.get('status')!r}"
            self.log.error("Could not abort job %s: %s.", job_id, detail)
            return AbortOutcome("failed", job=aborted, detail=detail)
        except OrchesjobNotOwner as exc:
            self.log.warning(
                "Not aborting job %s: it now belongs to request %r, not to this try's %r. A newer try took it over, "
                "so it is left running for that one.",
                self._job_id,
                exc.owner,
                self._request_id,
            )
            return AbortOutcome("not_owner", owner=exc.owner, detail=str(exc))
        except OrchesjobNotFound as exc:
            self.log.info("Not aborting job %s: it is no longer on the host (%s).", self._job_id, exc)
            return AbortOutcome("gone", detail=str(exc))
        except OrchesjobConflict as exc:
            return self._not_running(hook, exc)
        except OrchesjobError as exc:
            return self._abort_failed(exc)
        finally:
            hook.close()

    def _not_running(self, hook: OrchesjobHook, refusal: OrchesjobError) -> AbortOutcome:
        """The host refused the abort (exit 4): look at the job to say why (it had ended, or it cannot be stopped
        from here), rather than guess."""
        try:
            job = hook.status(job_id=self._job_id, run_key=None if self._job_id else self._starting)
        except OrchesjobError as exc:
            return self._abort_failed(refusal, f"; its status could not be read either: {exc}")
        if cmd.is_terminal(job):
            self.log.info("Not aborting job %s: it had already ended %s.", job.get("job_id"), job.get("status"))
            return AbortOutcome("ended", job=job, detail=str(job.get("status")))
        return self._abort_failed(refusal)

    def _abort_failed(self, exc: OrchesjobError, more: str = "") -> AbortOutcome:
        cli = self._this_cli()  # the CLI this try used: the command shown must be runnable
        command = manual_abort_command(self._job_id, cli.orchesjob_bin, cli.orchesjob_home) if self._job_id else ""
        detail = f"{exc}{more}" + (f". To abort it on the host: {command}" if command else "")
        self.log.error("Could not abort job %s: %s", self._job_id, detail)
        return AbortOutcome("failed", detail=detail)

    def on_kill(self) -> None:
        """The task was killed while waiting in the worker: abort the remote job if the task instance gave it up.

        Airflow kills a worker's task for a user's "mark failed/success" (the state is then over) and for a
        "clear" of a running task (the state is ``restarting``: the next try reattaches to the job), so the
        state decides (see ``orchesjob_provider.give_up``). An execution_timeout never gets here with the job
        still ours: ``execute`` aborted it already.
        """
        if not (self.abort_on_kill and (self._job_id or self._starting)) or self._released:
            return
        verdict = ask(self._try, timeout=WORKER_ASK_TIMEOUT)
        if not verdict.abort:
            cli = self._this_cli()  # the CLI this try used: the command shown must be runnable
            log_left_running(self.log, self._job_id, verdict, cli.orchesjob_bin, cli.orchesjob_home)
            return
        self.log.info("%s; aborting job %s.", verdict.reason, self._job_id or f"of run key {self._starting!r}")
        self._abort(KILL_REASON)
