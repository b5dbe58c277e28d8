"""The trigger that watches a remote orchesjob job from Airflow's triggerer.

Why it is shaped like this:

- Triggers do not poll on their own: each subscribes its job to the shared watcher of its destination
  (``orchesjob_provider.watcher``), which long-polls ``orchesjob wait --watch`` for all jobs of one host over one
  SSH connection, so watching costs O(hosts), not O(jobs). A call returns as soon as any job ends or writes output,
  so the task learns of its job's end within about a second.
- A trigger fires exactly once, so log chunks are not events. Each chunk is written to the trigger's logger as it
  arrives (which Airflow routes into the task's log) and the offsets move on. Lines are logged whole: a partial last
  line waits for its newline, unless the job goes quiet for a whole poll or ends.
- Resuming: ``serialize()`` reports the offsets of what has been logged, and every call tells the host what has
  been delivered under the try's request id (a cursor). Airflow rebuilds a trigger after a triggerer crash from the
  kwargs stored when the task deferred, not from a later ``serialize()``; the host then answers from the cursor, so
  a crash repeats at most the lines delivered after the last call (marked in the log), never the whole log.
- SSH trouble is expected on long jobs. Transport errors are retried with a capped exponential backoff, and only
  after ``max_connection_errors`` failures in a row does it give up with an ``error`` event, which the operator turns
  into a task failure (a retry of the task then reattaches to the same job by run key).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from orchesjob_provider import command as cmd
from orchesjob_provider.cli_choice import ResolvedCli
from orchesjob_provider.compat import (
    BaseTrigger,
    TriggerEvent,
    airflow_major_version,
    in_a_triggerer,
    triggerer_calls_on_kill,
)
from orchesjob_provider.exceptions import (
    OrchesjobConflict,
    OrchesjobError,
    OrchesjobLockTimeout,
    OrchesjobNotFound,
    OrchesjobNotOwner,
    OrchesjobTransportError,
)
from orchesjob_provider.give_up import TryIdentity, aask, log_left_running, warm_up
from orchesjob_provider.hooks.orchesjob import OrchesjobAsyncHook
from orchesjob_provider.log_relay import LogRelay
from orchesjob_provider.retry import RetryPolicy
from orchesjob_provider.watcher import SharedWatcher, Subscription, describe, error_type, job_only, shared_watcher


class OrchesjobTrigger(BaseTrigger):
    """Wait for a remote orchesjob job to finish, streaming its stdout/stderr into the log meanwhile.

    Fires one event:

    - ``{"status": "terminal", "job": JOB, "job_id", "run_key", "stdout_offset", "stderr_offset"}`` when the job is
      no longer active (whatever its outcome: the operator decides what FAILED means);
    - ``{"status": "error", "message", "error_type", ...offsets}`` when the job cannot be watched (SSH kept failing,
      the job was cleaned away, incompatible CLI);
    - ``{"status": "timeout", "message", ...}`` when the optional ``deadline`` (Unix time) has passed and the host,
      asked then, says the job still runs (or cannot be asked: the message says which). A trigger that starts after
      its deadline (a busy or restarting triggerer) asks first too: a job that ended in time fires ``terminal``.

    :param stdout_offset: bytes of stdout already shown; logging starts after them.
    :param stderr_offset: the same for stderr.
    :param poll_timeout: seconds one ``wait`` call may block on the host.
    :param max_bytes: largest log chunk per stream per call.
    :param max_connection_errors: consecutive transport failures tolerated before giving up.
    :param retry_backoff: first pause after a failure, doubled each time up to ``max_backoff``.
    :param deadline: optional Unix timestamp after which the trigger stops waiting (inline triggers of
        ``dag.test`` ignore the defer timeout, so this keeps them bounded).
    :param stream_logs: log the job's output as it comes (an operator running the job); False only waits for the
        end (a sensor watching a job that belongs to someone else).
    :param abort_on_kill: let ``on_kill`` abort the remote job when the task instance really gave it up. Airflow 3.3
        calls ``on_kill`` when it cancels a trigger "by user action", which is not always a kill: it also does so
        when a deferred task is cleared (its new try reattaches to the job) and when another triggerer took the
        trigger over after this one stalled. So ``on_kill`` first asks Airflow (the Task SDK's task-state lookup)
        about the try in ``try_identity`` and aborts only when that try's state is over for good (marked failed or
        success, failed with no retry left, skipped, upstream_failed, removed); a task instance that is running,
        deferred, queued, scheduled, restarting, up_for_retry (a retry is coming and reattaches) or without a state
        still wants the job, and the job is left alone. When
        Airflow cannot answer (error, timeout, no ``try_identity``), the job is left running and a WARNING names it
        with the command that aborts it on the host. A triggerer that restarts or is stopped cancels its triggers
        without ``on_kill``. Airflow 2 never calls a trigger's ``on_kill``: there the job keeps running until the
        task's next try reattaches to it (see the operator for the execution_timeout case).
    :param abort_reason: the reason recorded with such an abort.
    :param abort_grace_seconds: seconds between SIGTERM and SIGKILL for such an abort (the CLI's default if None).
    :param request_id: the request id of the ``start`` of the try that deferred (the operator's). ``on_kill`` then
        aborts only while the job's owner is still that request (``abort --if-owner``): once a newer try has
        reattached to the job, killing this stale one leaves the job alone, whatever Airflow answered. None: abort
        whoever owns it.
    :param cli: which CLI the worker resolved (``ResolvedCli.info()`` of ``orchesjob_provider.cli_choice``: path,
        version, python, origin, argv, the sha256 of an uploaded copy), handed back in every event so the resumed task
        can report it. With ``orchesjob_bin`` (that argv) and ``orchesjob_home`` it makes the trigger's one frozen
        ``ResolvedCli``, which every hook of the trigger runs: it never looks for a CLI nor uploads one.
    :param try_identity: the try that deferred (``dag_id``, ``task_id``, ``run_id``, ``map_index``,
        ``try_number``), as :class:`~orchesjob_provider.give_up.TryIdentity` writes it: whom ``on_kill`` asks
        Airflow about. Kwargs saved before it existed load with None, and such a trigger never aborts on kill.
    :param wait_for_key_interval: with ``job_id=None``, the trigger watches the latest job of ``run_key`` and, while
        that key has no job yet, looks again every this many seconds (a sensor waiting for a job someone else will
        start). Once a job is found it is watched by its id.
    :param shared_watcher: watch through the triggerer's one watcher per destination (default). False gives this
        trigger a watcher (an SSH connection and a host process) of its own, as before shared watching existed.
    """

    def __init__(
        self,
        ssh_conn_id: str,
        job_id: str | None,
        run_key: str | None = None,
        orchesjob_bin: str | Sequence[str] = "orchesjob",
        orchesjob_home: str | None = None,
        stdout_offset: int = 0,
        stderr_offset: int = 0,
        poll_timeout: float = 30.0,
        max_bytes: int = 65536,
        max_connection_errors: int = 5,
        retry_backoff: float = 2.0,
        max_backoff: float = 60.0,
        command_timeout: float = 60.0,
        deadline: float | None = None,
        stream_logs: bool = True,
        abort_on_kill: bool = False,
        abort_reason: str | None = None,
        abort_grace_seconds: float | None = None,
        wait_for_key_interval: float = 5.0,
        request_id: str | None = None,
        shared_watcher: bool = True,
        cli: Mapping[str, Any] | None = None,
        try_identity: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self.job_id = job_id
        self.run_key = run_key
        self.cli = dict(cli) if cli else None
        # the CLI the deferring worker resolved, as one frozen value: every hook of this trigger (the watcher's, the
        # abort's) runs exactly it, an uploaded copy verified by its sha256 on every call
        self.resolved = ResolvedCli.from_record(
            {"sha256": (self.cli or {}).get("sha256"), "argv": orchesjob_bin, "orchesjob_home": orchesjob_home}
        )
        self.orchesjob_bin = self.resolved.orchesjob_bin
        self.orchesjob_home = self.resolved.orchesjob_home
        self.stdout_offset = int(stdout_offset)
        self.stderr_offset = int(stderr_offset)
        self.poll_timeout = float(poll_timeout)
        self.max_bytes = int(max_bytes)
        self.max_connection_errors = int(max_connection_errors)
        self.retry_backoff = float(retry_backoff)
        self.max_backoff = float(max_backoff)
        self.command_timeout = float(command_timeout)
        self.deadline = None if deadline is None else float(deadline)
        self.stream_logs = bool(stream_logs)
        self.abort_on_kill = bool(abort_on_kill)
        self.abort_reason = abort_reason
        self.abort_grace_seconds = None if abort_grace_seconds is None else float(abort_grace_seconds)
        self.wait_for_key_interval = float(wait_for_key_interval)
        self.request_id = request_id
        self.shared_watcher = bool(shared_watcher)
        self.try_identity = dict(try_identity) if try_identity is not None else None
        self._kill_task: asyncio.Future[None] | None = None  # on_kill's shielded work (kept: the loop holds weakly)
        self._cancelled = False  # run() was cancelled by the triggerer (a kill, a shutdown, a hand-over...)
        if not job_id and not run_key:
            raise ValueError("OrchesjobTrigger needs a job_id or a run_key")

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Class path and kwargs; the offsets are those of the log text already written out."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "ssh_conn_id": self.ssh_conn_id,
                "job_id": self.job_id,
                "run_key": self.run_key,
                "orchesjob_bin": self.orchesjob_bin,
                "orchesjob_home": self.orchesjob_home,
                "stdout_offset": self.stdout_offset,
                "stderr_offset": self.stderr_offset,
                "poll_timeout": self.poll_timeout,
                "max_bytes": self.max_bytes,
                "max_connection_errors": self.max_connection_errors,
                "retry_backoff": self.retry_backoff,
                "max_backoff": self.max_backoff,
                "command_timeout": self.command_timeout,
                "deadline": self.deadline,
                "stream_logs": self.stream_logs,
                "abort_on_kill": self.abort_on_kill,
                "abort_reason": self.abort_reason,
                "abort_grace_seconds": self.abort_grace_seconds,
                "wait_for_key_interval": self.wait_for_key_interval,
                "request_id": self.request_id,
                "shared_watcher": self.shared_watcher,
                "cli": self.cli,
                "try_identity": self.try_identity,
            },
        )

    def _make_hook(self, check_version: bool = True) -> OrchesjobAsyncHook:
        return OrchesjobAsyncHook(
            ssh_conn_id=self.ssh_conn_id,
            **self.resolved.hook_kwargs(),
            command_timeout=self.command_timeout,
            retries=0,  # the trigger does its own, longer, retrying below
            check_version=check_version,
        )

    def _event(self, status: str, **fields: Any) -> TriggerEvent:
        payload: dict[str, Any] = {
            "status": status,
            "job_id": self.job_id,
            "run_key": self.run_key,
            "stdout_offset": self.stdout_offset,
            "stderr_offset": self.stderr_offset,
            "request_id": self.request_id,
        }
        try_number = (self.try_identity or {}).get("try_number")
        if try_number is not None:  # whose event this is: a later try must not take it for its own (compat)
            payload["try_number"] = try_number
        if self.cli:
            payload["cli"] = self.cli
        payload.update(fields)
        return TriggerEvent(payload)

    def _backoff(self, failures: int) -> float:
        return RetryPolicy(self.max_connection_errors, self.retry_backoff, self.max_backoff).delay(failures)

    # ------------------------------------------------------------------ log streaming

    def log_line(self, stream: str, line: str) -> None:
        """Write one line of the job's output to the trigger's log (which Airflow shows in the task log)."""
        self.log.info("[%s] %s", stream, line)

    def _sync_offsets(self, relay: LogRelay) -> None:
        """Keep serialize() in step with what has been written out, so a rebuilt trigger resumes exactly there."""
        self.stdout_offset = relay.offset("stdout")
        self.stderr_offset = relay.offset("stderr")

    # ------------------------------------------------------------------ main loop

    def _watcher(self) -> SharedWatcher:
        retry = RetryPolicy(self.max_connection_errors, self.retry_backoff, self.max_backoff)
        if not self.shared_watcher:
            return SharedWatcher(self._make_hook, self.poll_timeout, self.max_bytes, retry)
        cli = self.resolved
        key = (self.ssh_conn_id, cli.argv, cli.orchesjob_home, cli.sha256)
        return shared_watcher(key, self._make_hook, self.poll_timeout, self.max_bytes, retry)

    def _left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.time()

    async def run(self) -> AsyncGenerator[TriggerEvent, None]:
        """Find the job (by run key, if no id yet), subscribe it to the watcher, log its output as the watcher hands
        it over, and fire one event when it has ended (or cannot be watched, or the deadline passes)."""
        inner = self._run()
        try:
            async for event in inner:
                yield event
        except asyncio.CancelledError:
            self._cancelled = True  # for cleanup(): the triggerer stopped this trigger before it fired
            raise
        finally:
            await inner.aclose()  # its own finally (leaving the watcher) runs now, also when run() is closed early

    async def _run(self) -> AsyncGenerator[TriggerEvent, None]:
        if self.abort_on_kill and in_a_triggerer():  # so that a kill's question is answered at once (give_up.warm_up)
            warm_up(TryIdentity.from_kwargs(self.try_identity))
        relay = LogRelay(self.log_line, self.stdout_offset, self.stderr_offset, max_line=self.max_bytes)
        if not self.job_id:
            missing = await self._find_job()
            if missing is not None:
                yield missing
                return
        assert self.job_id is not None
        sub = Subscription(
            self.job_id,
            relay if self.stream_logs else None,
            self.request_id,
            self.max_connection_errors,
            self.poll_timeout,
            self.log,
            progressed=lambda: self._sync_offsets(relay),
        )
        left = self._left()
        if left is not None and left <= 0:
            # Started after the deadline (a busy or restarting triggerer): the job may have ended in time. Ask it.
            yield await self._at_deadline(relay)
            return
        watcher = self._watcher()
        watcher.subscribe(sub)
        try:
            try:
                kind, fields = await asyncio.wait_for(asyncio.shield(sub.done), None if left is None else max(0, left))
            except asyncio.TimeoutError:
                watcher.unsubscribe(sub)
                yield await self._at_deadline(relay)
                return
            self._sync_offsets(relay)
            yield self._event(kind, **fields)
        finally:
            watcher.unsubscribe(sub)

    async def _at_deadline(self, relay: LogRelay) -> TriggerEvent:
        """The event at the deadline, after asking the host about the job: ``terminal`` when it has ended (in
        time, or since: the watcher's last answer may be older than the end, and a trigger that starts late never
        had one), ``timeout`` only when the host says it still runs, or when the host cannot be asked (the
        message says so; the task asks again before it acts)."""
        relay.flush()
        self._sync_offsets(relay)
        hook = self._make_hook()
        try:
            job = await hook.status(job_id=self.job_id)
        except Exception as exc:  # noqa: BLE001 - whatever it was, the job's state is unknown: say so
            return self._event(
                "timeout",
                message=(
                    f"the deadline passed and the job {self.job_id} could not be looked at "
                    f"({type(exc).__name__}: {exc})"
                ),
            )
        finally:
            await hook.close()
        if cmd.is_terminal(job):
            self.log.info(
                "the deadline has passed, but job %s had already ended %s: reporting its end",
                self.job_id,
                job["status"],
            )
            return self._event("terminal", job=job_only(job))
        return self._event("timeout", message=f"the job {self.job_id} was still {job.get('status')} at the deadline")

    async def _find_job(self) -> TriggerEvent | None:
        """With only a run key: look for its latest job until there is one (then ``job_id`` is set and None is
        returned), or return the event that ends the trigger (deadline, SSH kept failing, a CLI error)."""
        hook = self._make_hook()
        failures = 0
        try:
            while True:
                try:
                    job = await hook.status(run_key=self.run_key)
                except OrchesjobNotFound:
                    failures = 0
                    left = self._left()  # asked after the look: a trigger that starts late still looks once
                    if left is not None and left <= 0:
                        return self._event(
                            "timeout",
                            message=f"no job with run key {self.run_key!r} had started by the deadline",
                        )
                    pause = self.wait_for_key_interval if left is None else min(self.wait_for_key_interval, left)
                    await asyncio.sleep(max(0.05, pause))
                    continue
                except (OrchesjobTransportError, OrchesjobLockTimeout) as exc:
                    failures += 1
                    hopeless = isinstance(exc, OrchesjobTransportError) and not exc.transient
                    if hopeless or failures > self.max_connection_errors:
                        return self._event(
                            "error",
                            error_type=exc.error_type,
                            message=(
                                f"gave up looking for run key {self.run_key!r} "
                                f"after {failures} failed attempt(s): {exc}"
                            ),
                        )
                    pause = self._backoff(failures)
                    self.log.warning(
                        "looking for run key %r: %s; retry %d of %d in %.1fs",
                        self.run_key,
                        exc,
                        failures,
                        self.max_connection_errors,
                        pause,
                    )
                    await asyncio.sleep(pause)
                    continue
                except OrchesjobError as exc:
                    return self._event("error", error_type=exc.error_type, message=str(exc))
                except Exception as exc:  # noqa: BLE001 - the hook could not work at all (e.g. an unknown conn id)
                    failures += 1
                    if failures > self.max_connection_errors:
                        return self._event(
                            "error",
                            error_type=error_type(exc),
                            message=(
                                f"gave up looking for run key {self.run_key!r} after {failures} failed attempt(s): "
                                f"{describe(exc)}"
                            ),
                        )
                    pause = self._backoff(failures)
                    self.log.warning(
                        "looking for run key %r: %s; retry %d of %d in %.1fs",
                        self.run_key,
                        describe(exc),
                        failures,
                        self.max_connection_errors,
                        pause,
                    )
                    await hook.close()
                    hook = self._make_hook()
                    await asyncio.sleep(pause)
                    continue
                self.job_id = str(job["job_id"])
                return None
        finally:
            await hook.close()

    async def on_kill(self) -> None:
        """Abort the remote job when the task instance gave it up (see ``abort_on_kill``).

        A job that already ended is not an error here, nor a job that a newer try has taken over (its owner is no
        longer this trigger's ``request_id``: it is left running for that try), and nothing is raised: Airflow only
        logs what ``on_kill`` raises, so a clear log line is more useful.

        Airflow 3.3's triggerer repeats its cancel of a trigger until the trigger is gone, and a repeat lands inside
        ``on_kill`` while it still waits for Airflow's answer or for the abort: the work runs shielded, so a repeat
        ends the wait but not the decision or the abort.
        """
        if not self.abort_on_kill:
            return
        self._kill_task = asyncio.ensure_future(self._kill())
        await asyncio.shield(self._kill_task)

    async def cleanup(self) -> None:
        """Where the triggerer never calls ``on_kill`` (Airflow 2 and 3.0-3.2: see ``compat.triggerer_calls_on_kill``),
        a trigger it cancelled may have been killed: abort the job when the task instance gave it up.

        Those triggerers cancel a trigger and call only ``cleanup()`` for every reason alike: its task instance was
        marked failed or success, or cleared, but also the triggerer is shutting down or the trigger moved to
        another triggerer. Nothing tells them apart here, so the rule of ``on_kill`` decides, unchanged: Airflow is
        asked about the try, and only a task instance that is over for good has its job aborted (a shutdown or a
        hand-over finds it still ``deferred``; a clear finds it waiting to run again); no answer aborts nothing. A
        trigger that fired its event, or was never cancelled, has nothing to do. Only Airflow 3 is asked from
        here: on Airflow 2 a deferred task's kill leaves the job to its next try (see README).
        """
        try:
            await super().cleanup()
        finally:
            if (
                self._cancelled
                and self.abort_on_kill
                and self._kill_task is None
                and not triggerer_calls_on_kill()
                and airflow_major_version() >= 3
            ):
                self.log.info("The trigger was cancelled: asking Airflow whether its task instance gave the job up.")
                self._kill_task = asyncio.ensure_future(self._kill())
                await asyncio.shield(self._kill_task)

    async def _kill(self) -> None:
        """Ask Airflow whether the task instance gave the job up and, while the answer is on its way, get the abort
        ready (log in to the host, check the CLI's contract): when the answer is yes, only the abort itself is left.
        Getting ready changes nothing on the host, so a "no" (or no answer) costs one login and nothing else."""
        # The CLI the deferring try resolved and checked travels in the kwargs (``cli``): the abort runs exactly it
        # and need not check its contract again (an uploaded one is still verified by its sha256 on every call).
        # Each check is a CLI start on the host, half a second on a busy one, between a kill and its abort.
        hook = self._make_hook(check_version=not (self.cli or {}).get("version"))
        ready = asyncio.ensure_future(self._ready_to_abort(hook))
        try:
            verdict = await aask(TryIdentity.from_kwargs(self.try_identity))
            if not verdict.abort:
                log_left_running(
                    self.log, self.job_id, verdict, self.resolved.orchesjob_bin, self.resolved.orchesjob_home
                )
                return
            self.log.info("%s; aborting job %s", verdict.reason, self.job_id)
            try:
                await ready
            except Exception:  # noqa: BLE001 - the abort logs in again itself, and says why if it cannot
                pass
            try:
                aborted = await hook.abort(
                    job_id=self.job_id,
                    reason=self.abort_reason,
                    grace_seconds=self.abort_grace_seconds,
                    if_owner=self.request_id,
                )
                self.log.info("aborted job %s (run key %s): %s", self.job_id, self.run_key, aborted.get("status"))
            except OrchesjobNotOwner as exc:
                self.log.warning(
                    "not aborting job %s (run key %s): it now belongs to request %r, not to this try's %r; a newer "
                    "try took it over, so it is left to that one",
                    self.job_id,
                    self.run_key,
                    exc.owner,
                    self.request_id,
                )
            except OrchesjobConflict as exc:  # the host says why: it had ended, or it cannot be stopped from here
                self.log.info("job %s was not aborted: %s", self.job_id, exc)
            except OrchesjobError as exc:
                self.log.warning("could not abort job %s: %s", self.job_id, exc)
        finally:
            if not ready.done():
                ready.cancel()
            await asyncio.gather(ready, return_exceptions=True)
            await hook.close()

    async def _ready_to_abort(self, hook: OrchesjobAsyncHook) -> None:
        """Log in and, where the hook checks the CLI's contract before its first call, check it now."""
        await hook.get_conn()
        if hook.settings.version_first(
            cmd.define.abort(job_id=self.job_id, run_key=None if self.job_id else self.run_key)
        ):
            await hook.version()
