"""Watching deferred jobs from the triggerer: one shared watcher per triggerer process and SSH destination.

Why: a trigger per job holding its own SSH connection and its own ``orchesjob wait`` process on the host makes
watching cost O(jobs): 300 jobs on one host meant 300 connections and 300 resident Python processes there, and a
triggerer restart meant 300 simultaneous logins against sshd's ``MaxStartups``. Here the triggers of one
destination (connection id, CLI, state directory) subscribe to one ``SharedWatcher``, which holds one connection and
runs one ``wait --watch`` call at a time for all of them, so watching costs O(hosts).

How the guarantees of a trigger are kept:

- Each subscription has its own ``LogRelay``; answers are handed to it synchronously, in the order they arrive,
  before the next call is built from its offsets, so each line is logged once and in order.
- A subscriber arriving while a long poll is in flight wakes it (``--wake-on-eof``: the watcher closes the call's
  stdin and the host answers at once), so a new job is watched from the next round trip, not after the poll.
- Entries carry a cursor (the try's request id) with the offsets already written out, so a trigger rebuilt after a
  triggerer crash (from the kwargs stored when the task deferred, far behind) resumes where its predecessor had
  got to; it marks the place in the log, since the lines delivered after the predecessor's last call show twice.
- A transport failure is retried for every subscriber together, with the usual backoff; each subscriber gives up
  after its own ``max_connection_errors``. Any other error (the connection id unknown in the triggerer's
  environment, a secrets backend that fails, a bug) is handled the same way, on a fresh hook each time, and the
  subscribers that give up get an ``error`` event naming it: the loop never restarts itself at once. One
  subscriber's end (its job ended, was cleaned, its task was killed) never disturbs the others. The last subscriber
  leaving closes the connection, which also ends the host's call.
- Each subscriber's lines and messages are logged in the context of its own trigger (``contextvars``, captured when
  it subscribes): Airflow 3's triggerer tells which trigger a log line belongs to by context variables bound in
  the trigger's task, and the watcher's loop is a task of its own. Logged from the loop's context, every job's
  lines would land in the log of whichever trigger happened to start the loop. The loop itself runs in an empty
  context, so what concerns the connection (asyncssh's messages) goes to the triggerer's own log.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Mapping
from typing import Any

from orchesjob.contract import WATCH_MIN_TOTAL_BYTES as MIN_TOTAL_BYTES  # the CLI's smallest --max-total-bytes
from orchesjob_provider import command as cmd
from orchesjob_provider.exceptions import OrchesjobError, OrchesjobLockTimeout, OrchesjobTransportError
from orchesjob_provider.hooks.orchesjob import OrchesjobAsyncHook
from orchesjob_provider.log_relay import STREAMS, LogRelay
from orchesjob_provider.retry import RetryPolicy

# The whole answer of one call is bounded (each stream by the subscriber's max_bytes), and shared fairly by the host.
MAX_TOTAL_BYTES = 4 << 20
# When the only news is new output, the host collects for this long before answering (an end answers at once): 300
# jobs that each print a line every few seconds would otherwise cost a call (an SSH channel, a Python start on the
# host, an answer of 300 entries to parse here) per line. Lines reach the task log up to this much later.
GATHER_SECONDS = 1.0
JOB_EXTRA_KEYS = ("logs", "timed_out", "news", "cursor")

Outcome = tuple[str, dict[str, Any]]  # ("terminal", {"job": JOB}) or ("error", {"error_type", "message"})


def job_only(answer: Mapping[str, Any]) -> dict[str, Any]:
    """The job object of a ``wait`` answer, without the per-call fields (log chunks, ``timed_out`` ...)."""
    return {k: v for k, v in answer.items() if k not in JOB_EXTRA_KEYS}


class Subscription:
    """One trigger's job, as the watcher sees it: what to ask for, and what to do with each answer.

    :param job_id: the job to watch.
    :param relay: the trigger's log relay (offsets and partial lines); None to follow the job's state only.
    :param cursor: the delivery record's name on the host (the try's request id), so that a rebuilt trigger
        resumes where this one got to; None keeps no record.
    :param max_connection_errors: consecutive transport failures after which this subscriber gives up.
    :param quiet_after: seconds a stream may give no new bytes before its partial last line is written out anyway
        (``LogRelay.flush_quiet``; checked at every answer).
    :param log: where the resume note and give-up warnings go (the trigger's logger).
    :param progressed: called after each answer was taken (the trigger keeps ``serialize()`` in step with it).
    """

    def __init__(
        self,
        job_id: str,
        relay: LogRelay | None,
        cursor: str | None,
        max_connection_errors: int,
        quiet_after: float,
        log: logging.Logger | Any,
        progressed: Callable[[], None] | None = None,
    ) -> None:
        self.job_id = job_id
        self.progressed = progressed
        self.relay = relay
        self.cursor = cursor if relay is not None else None
        self.max_connection_errors = max_connection_errors
        self.quiet_after = quiet_after
        self.log = log
        self.done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        # The trigger's context (its task's, where the triggerer bound the trigger's log fields): everything this
        # subscription logs, it logs in there, whichever task calls it.
        self.context = contextvars.copy_context()

    def entry(self) -> cmd.WatchEntry:
        relay = self.relay
        if relay is None:
            return cmd.WatchEntry(self.job_id)
        return cmd.WatchEntry(
            self.job_id,
            relay.read["stdout"],
            relay.read["stderr"],
            delivered=(relay.offset("stdout"), relay.offset("stderr")),
            cursor=self.cursor,
        )

    def _finish(self, kind: str, **fields: Any) -> None:
        if not self.done.done():
            self.done.set_result((kind, fields))

    def handle(self, answer: Mapping[str, Any]) -> None:
        """Take one answer: log its lines, and finish when the job has ended and its log is all out."""
        self.context.run(self._handle_and_record, answer)

    def _handle_and_record(self, answer: Mapping[str, Any]) -> None:
        try:
            self._handle(answer)
        finally:
            if self.progressed is not None:
                self.progressed()

    def _handle(self, answer: Mapping[str, Any]) -> None:
        if "error" in answer:  # not there (never was, or cleaned away meanwhile)
            self._finish("error", error_type=str(answer.get("error")), message=str(answer.get("message")))
            return
        relay = self.relay
        if not answer.get("news"):
            if relay is not None:
                relay.flush_quiet(self.quiet_after)  # a partial last line waits for its newline only so long
            return
        more = False
        if relay is not None:
            logs = answer.get("logs")
            if isinstance(logs, Mapping):
                self._resume_where_delivered(logs)
            more = relay.take(logs if isinstance(logs, Mapping) else None)
            relay.flush_quiet(self.quiet_after)  # news, but maybe none for a stream that holds a partial line
        if cmd.is_terminal(answer) and not more:
            if relay is not None:
                relay.flush()
            self._finish("terminal", job=job_only(answer))

    def _resume_where_delivered(self, logs: Mapping[str, Any]) -> None:
        """A chunk that starts past our offsets comes from the cursor's record: an earlier trigger of this try
        delivered up to there before the triggerer was restarted. Jump there, and say so where the repeat shows."""
        assert self.relay is not None
        for stream in STREAMS:
            chunk = logs.get(stream)
            start = chunk.get("offset") if isinstance(chunk, Mapping) else None
            if isinstance(start, int) and start > self.relay.read[stream]:
                self.log.warning(
                    "[orchesjob] job %s: the %s log resumes at byte %d, where an earlier trigger of this try had "
                    "delivered it before the triggerer restarted; the lines just before this note may appear twice",
                    self.job_id,
                    stream,
                    start,
                )
                self.relay.resume_at(stream, start)

    def transport_failed(self, exc: BaseException, failures: int, hopeless: bool) -> None:
        """A call failed (``failures`` in a row); give up when it cannot get better or this subscriber's patience
        is over. ``exc`` is an ``OrchesjobError``, or any other exception the watcher's call raised."""
        self.context.run(self._transport_failed, exc, failures, hopeless)

    def _transport_failed(self, exc: BaseException, failures: int, hopeless: bool) -> None:
        if hopeless or failures > self.max_connection_errors:
            if self.relay is not None:
                self.relay.flush()
            self._finish(
                "error",
                error_type=error_type(exc),
                message=f"gave up watching job {self.job_id} after {failures} failed attempt(s): {describe(exc)}",
            )

    def fail(self, exc: OrchesjobError) -> None:
        self.context.run(self._fail, exc)

    def _fail(self, exc: OrchesjobError) -> None:
        if self.relay is not None:
            self.relay.flush()
        self._finish("error", error_type=exc.error_type, message=str(exc))


def error_type(exc: BaseException) -> str:
    """An error event's ``error_type``: the CLI's for an ``OrchesjobError``, else the exception's class name."""
    return exc.error_type if isinstance(exc, OrchesjobError) else type(exc).__name__


def describe(exc: BaseException) -> str:
    """An error for a message: an ``OrchesjobError`` says what it is; any other exception is named by its class."""
    return str(exc) if isinstance(exc, OrchesjobError) else f"{type(exc).__name__}: {exc}"


class SharedWatcher:
    """One connection and one ``wait --watch`` call at a time for every subscription of one destination.

    :param make_hook: builds the async hook (connection id, CLI path, state directory) the watcher calls through.
    :param poll_timeout: seconds one call may block on the host (it returns earlier on any news, or when woken).
    :param max_bytes: largest log chunk per stream per call.
    :param retry: the backoff between failed calls (shared by all subscribers).
    :param on_idle: called once the last subscriber has left and the connection is closed.
    """

    def __init__(
        self,
        make_hook: Callable[[], OrchesjobAsyncHook],
        poll_timeout: float,
        max_bytes: int,
        retry: RetryPolicy,
        on_idle: Callable[[SharedWatcher], None] | None = None,
    ) -> None:
        self.make_hook = make_hook
        self.poll_timeout = poll_timeout
        self.max_bytes = max_bytes
        self.retry = retry
        self.on_idle = on_idle
        self.subs: dict[int, Subscription] = {}
        self.hook: OrchesjobAsyncHook | None = None
        self.task: asyncio.Task[None] | None = None
        self.calls = 0  # for tests and the benchmark: wait calls made

    def subscribe(self, sub: Subscription) -> None:
        self.subs[id(sub)] = sub
        if self.task is None or self.task.done():
            self.task = self._start_loop()
        elif self.hook is not None:
            self.hook.wake()  # the long poll in flight (or the next) does not know this job yet: have it answer now

    def unsubscribe(self, sub: Subscription) -> None:
        self.subs.pop(id(sub), None)
        if not self.subs and self.hook is not None:
            self.hook.wake()  # nobody waits for the poll in flight any more; the loop then closes the connection

    def _start_loop(self) -> asyncio.Task[None]:
        """The loop as a task in an empty context: it serves every subscriber, so it must not carry the context
        (the log fields) of the trigger that happened to subscribe first."""
        return contextvars.Context().run(asyncio.get_running_loop().create_task, self._loop())

    async def _loop(self) -> None:
        failures = 0
        try:
            while self.subs:
                batch = list(self.subs.values())
                try:
                    entries = [s.entry() for s in batch]
                    if self.hook is None:
                        self.hook = self.make_hook()
                    payload = await self.hook.watch(
                        entries,
                        timeout=self.poll_timeout,
                        max_bytes=self.max_bytes,
                        max_total_bytes=max(MIN_TOTAL_BYTES, min(MAX_TOTAL_BYTES, self.max_bytes * 2 * len(batch))),
                        wake_on_eof=True,
                        gather=GATHER_SECONDS,
                    )
                    self.calls += 1
                    answers = cmd.check_watch_answer(payload, entries)
                except (OrchesjobTransportError, OrchesjobLockTimeout) as exc:
                    failures += 1
                    hopeless = isinstance(exc, OrchesjobTransportError) and not exc.transient
                    await self._failed(batch, exc, failures, hopeless)
                    continue
                except OrchesjobError as exc:  # the CLI refused the call: nothing a repeat would change
                    for s in batch:
                        s.fail(exc)
                    self._drop_finished()
                    continue
                except Exception as exc:  # noqa: BLE001 - not the host's answer: the hook itself could not work
                    # e.g. the connection id exists only in the workers' environment. Back off like a transport
                    # failure, on a fresh hook, and let each subscriber give up with this error in its own time.
                    failures += 1
                    await self._close_hook()
                    await self._failed(batch, exc, failures, hopeless=False)
                    continue
                failures = 0
                for s, answer in zip(batch, answers):
                    if self.subs.get(id(s)) is s:  # a subscriber that left meanwhile gets nothing
                        s.handle(answer)
                self._drop_finished()
        except Exception as exc:  # noqa: BLE001 - a bug in the loop itself: end every subscriber with it
            for s in list(self.subs.values()):
                s.transport_failed(exc, failures + 1, hopeless=True)
            self.subs.clear()
        finally:
            await self._close_hook()
            if self.subs:  # someone subscribed while the connection was closing: serve them on a new one
                self.task = self._start_loop()
            elif self.on_idle is not None:
                self.on_idle(self)

    async def _failed(self, batch: list[Subscription], exc: BaseException, failures: int, hopeless: bool) -> None:
        """A call failed: tell the subscribers (each gives up after its own ``max_connection_errors``), then pause
        before the next call, as long as anyone is left."""
        for s in batch:
            s.transport_failed(exc, failures, hopeless)
        self._drop_finished()
        if self.subs:
            pause = self.retry.delay(failures)
            first = batch[0]
            first.context.run(
                first.log.warning,
                "watching %d job(s): %s; retry %d in %.1fs",
                len(self.subs),
                describe(exc),
                failures,
                pause,
            )
            await asyncio.sleep(pause)

    async def _close_hook(self) -> None:
        hook, self.hook = self.hook, None
        if hook is not None:
            try:
                await hook.close()
            except Exception:  # noqa: BLE001 - closing a hook that never worked must not hide why it did not
                pass

    def _drop_finished(self) -> None:
        for key in [k for k, s in self.subs.items() if s.done.done()]:
            del self.subs[key]


# One watcher per event loop (a triggerer runs all its triggers in one) and destination.
_WATCHERS: dict[tuple[Any, ...], SharedWatcher] = {}


def shared_watcher(
    key: tuple[Any, ...],
    make_hook: Callable[[], OrchesjobAsyncHook],
    poll_timeout: float,
    max_bytes: int,
    retry: RetryPolicy,
) -> SharedWatcher:
    """The watcher of this event loop for ``key`` (the destination: connection id, CLI, state directory), made on
    first use; it removes itself once its last subscriber has left."""
    full = (id(asyncio.get_running_loop()), *key)
    watcher = _WATCHERS.get(full)
    if watcher is None:

        def forget(w: SharedWatcher) -> None:
            if _WATCHERS.get(full) is w:
                del _WATCHERS[full]

        watcher = _WATCHERS[full] = SharedWatcher(make_hook, poll_timeout, max_bytes, retry, on_idle=forget)
    return watcher
