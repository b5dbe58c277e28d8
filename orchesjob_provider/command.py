"""Remote calls of the orchesjob CLI, and the parsing of its answers. Pure functions, no I/O.

Why this is its own module: the most dangerous thing the provider could do is hand user values (run keys, commands,
environment values) to the login shell a host gives the SSH user, which may be sh, bash, zsh, fish, tcsh or csh,
each quoting differently, and which shows its command line to every user of the host in ``ps``. So nothing of the
user's goes on the command line at all: the line is the CLI (a path checked against a character set every one of
those shells reads literally, ``check_word``), the verb and ``--request -``; the call's arguments travel as one JSON
object on standard input (``Call.request``), which the CLI alone reads (``orchesjob COMMAND --request -``).

It is also where each verb of the CLI is defined, once, for both hooks: ``Verbs`` has one method per verb that
builds a ``Call`` (the verb's arguments, how long the SSH call may take, how far a repeat of it is safe); the sync
and the async hook each run such a ``Call`` over their own transport in their one ``call()`` method.

Nothing here imports Airflow at module level. Raising the typed exceptions (which are ``AirflowException``
subclasses) imports them lazily, only on the failure path.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import re
import shlex
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Generic, Literal, NoReturn, TypeVar, Union

from orchesjob.contract import (  # what the CLI and the provider agree on, defined once for both
    ACTIVE,
    CONTRACT_VERSION,
    DEFAULT_ABORT_GRACE,
    DEFAULT_START_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
    MAX_REQUEST_ID,
    STREAMS,
    TERMINAL,
    WATCH_SEPARATOR,
    watch_spec,
)
from orchesjob.contract import VERSION as __version__
from orchesjob_provider.retry import ALWAYS, BEFORE_SEND, KINDS, NEVER

StartMode = Literal["reuse_success", "default", "strict"]
START_MODES: tuple[StartMode, ...] = ("reuse_success", "default", "strict")
TERMINAL_STATUSES = frozenset(TERMINAL)
ACTIVE_STATUSES = frozenset(ACTIVE)

DEFAULT_COMMAND_TIMEOUT = 60.0  # seconds one CLI call may take over SSH, login and channel included

# What a shell or launcher prints when the program it was asked to run does not exist or cannot run.
_MISSING_CLI_MARKERS = (
    "command not found",
    "not found",
    "no such file or directory",
    "permission denied",
    "no module named",
    "cannot execute",
)

Number = Union[int, float, str]
Binary = Union[str, Sequence[str]]
Moment = Union[str, _dt.datetime, _dt.date]


# --------------------------------------------------------------------------- the command line

# What a word of the command line may hold: characters no shell the provider may meet (sh, bash, zsh, fish, tcsh,
# csh) treats specially, and a leading ``~/`` (the SSH user's home; every one of them expands it).
_SAFE_WORD = re.compile(r"(?:~/)?[A-Za-z0-9_.+:@/-]+")


def _check_text(value: str, what: str) -> str:
    """Reject what no argument can carry, before anything is sent."""
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL character, which cannot be passed to a remote command")
    return value


def check_word(value: Any, what: str) -> str:
    """A program path (or an argument of it) that may stand on the command line as it is: letters, digits and
    ``_ . + : @ / -``, optionally after ``~/``; not starting with ``-``. Anything else is refused here, before
    anything connects: it would mean a different thing to different login shells."""
    text = str(value)
    if not text or text.startswith("-") or not _SAFE_WORD.fullmatch(text):
        raise ValueError(
            f"{what} {text!r} cannot go on the SSH command line: use a path of letters, digits and _ . + : @ / - "
            "(a leading ~/ for the SSH user's home is fine); a path with other characters works through a link "
            "to it, or orchesjob on the host's PATH"
        )
    return text


def cli_words(orchesjob_bin: Binary) -> list[str]:
    """The CLI as command line words: one program path (a string), or an argv prefix (a list, e.g.
    ``["/opt/venv/bin/python", "-m", "orchesjob"]``), each word checked (``check_word``)."""
    if isinstance(orchesjob_bin, str):
        return [check_word(orchesjob_bin, "orchesjob_bin")]
    parts = list(orchesjob_bin)
    if not parts:
        raise ValueError("orchesjob_bin must not be empty")
    first = check_word(parts[0], "orchesjob_bin")
    # arguments after the program may be options (python's -m)
    rest = [check_word(p, "orchesjob_bin") if not str(p).startswith("-") else _option(p) for p in parts[1:]]
    return [first, *rest]


def _option(value: Any) -> str:
    text = str(value)
    if not re.fullmatch(r"-[A-Za-z0-9_.+:@/=-]*", text):
        raise ValueError(f"orchesjob_bin option {text!r} cannot go on the SSH command line")
    return text


def request_line(args: Sequence[Any], state_dir: str | None) -> bytes:
    """A call's standard input: ``{"argv": ARGS, "state_dir": ...}`` on one line (``orchesjob VERB --request -``).
    Every value is as given (JSON carries any text, also the escaped bytes of a non-UTF-8 argument); only a NUL,
    which no argument can hold, is refused."""
    argv = [_check_text(str(a), "argument") for a in args]
    request: dict[str, Any] = {"argv": argv}
    if state_dir is not None and str(state_dir) != "":
        request["state_dir"] = _check_text(str(state_dir), "orchesjob_home")
    return (json.dumps(request, ensure_ascii=True) + "\n").encode("ascii")


def shell_line(words: Sequence[Any]) -> str:
    """A command line for a PERSON to paste into a POSIX shell (a log line saying how to abort a job by hand).
    The provider itself never runs such a line."""
    return " ".join(shlex.quote(str(w)) for w in words)


# --------------------------------------------------------------------------- value rendering


def _number(value: Number, what: str) -> str:
    """Render a number for the CLI; refuse booleans, NaN, infinities and junk before anything is sent."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, not a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return str(int(text))
        except ValueError:
            pass
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{what} must be a number, got {value!r}") from None
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{what} must be finite, got {value!r}")
        if value.is_integer():
            return str(int(value))
        return repr(value)  # shortest text that reads back as the same float
    raise ValueError(f"{what} must be a number, got {type(value).__name__}")


def _non_negative_int(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}") from None
    if number < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return str(number)


def _moment(value: Moment, what: str) -> str:
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    return _check_text(str(value), what)


def normalize_command(command: str | Sequence[Any]) -> list[str]:
    """The job's argv. A string is a shell snippet run by ``/bin/sh -c`` on the host; a list is an argv as is.

    The CLI never runs jobs through a shell, so a string must be given one explicitly; doing it here (rather than
    splitting the string) keeps pipes, redirections and ``&&`` working the way users of ``SSHOperator`` expect.
    """
    if isinstance(command, str):
        if not command.strip():
            raise ValueError("command must not be empty")
        return ["/bin/sh", "-c", _check_text(command, "command")]
    argv = [_check_text(str(part), "command") for part in command]
    if not argv or argv[0] == "":
        raise ValueError("command must be a non-empty list whose first element is the program")
    return argv


def _opt(name: str, value: str) -> str:
    """``--name=value`` as ONE word: a value that starts with ``-`` (a run key like ``-x``) is still a value."""
    return f"{name}={value}"


def _selector(run_key: str | None, job_id: str | None) -> list[str]:
    """``--run-key K`` or ``--job-id ID``: exactly one, because the CLI requires exactly one."""
    if (run_key is None) == (job_id is None):
        raise ValueError("give exactly one of run_key or job_id")
    if job_id is not None:
        return [_opt("--job-id", _check_text(str(job_id), "job_id"))]
    return [_opt("--run-key", _check_text(str(run_key), "run_key"))]


def check_request_id(value: Any, what: str = "request_id") -> str:
    """A request id as the CLI accepts it (1-128 printable characters), refused here before anything is sent."""
    text = str(value)
    if not text or len(text) > MAX_REQUEST_ID or not text.isprintable():
        raise ValueError(f"{what} must be 1-{MAX_REQUEST_ID} printable characters, got {text[:80]!r}")
    return text


def new_request_id(prefix: str = "orchesjob-hook") -> str:
    """A fresh request id, ``PREFIX:<32 random hex digits>``: two calls never share one."""
    return check_request_id(f"{prefix[: MAX_REQUEST_ID - 33]}:{uuid.uuid4().hex}")


# --------------------------------------------------------------------------- the verbs, each defined once

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Call:
    """One CLI call, fully defined: the verb, its arguments, how long the SSH call may take, how far a repeat of
    it is safe.

    :param verb: the CLI command (``args[0]``), for messages.
    :param args: the CLI arguments, quoted one by one when the command line is built.
    :param retry: ``"always"``, ``"before_send"`` or ``"never"`` (see ``orchesjob_provider.retry``).
    :param extra_time: seconds the call may take on top of the hook's ``command_timeout`` (a ``wait`` blocks for
        its own timeout, an ``abort`` for its grace period); None: no bound at all (``start --sync``).
    :param bound: an explicit bound in seconds instead of the two above.
    :param wakeable: the CLI answers at once when its stdin ends (``wait --watch --wake-on-eof``), so a hook that
        can keep stdin open lets its caller cut the call short (``OrchesjobAsyncHook.wake``).
    """

    verb: str
    args: tuple[Any, ...]
    retry: str = NEVER
    extra_time: float | None = 0.0
    bound: float | None = None
    wakeable: bool = False

    def __post_init__(self) -> None:
        if self.retry not in KINDS:
            raise ValueError(f"retry must be one of {', '.join(KINDS)}; got {self.retry!r}")

    def request(self, state_dir: str | None) -> bytes:
        """The call's standard input: its arguments (and the state directory) as one JSON line."""
        return request_line(self.args[1:], state_dir)

    def exec_timeout(self, command_timeout: float) -> float | None:
        """Seconds the SSH call may take (None: unbounded)."""
        if self.bound is not None:
            return float(self.bound)
        if self.extra_time is None:
            return None
        return float(command_timeout) + self.extra_time


@dataclasses.dataclass(frozen=True)
class WatchEntry:
    """One job of a ``watch`` call (``wait --watch``).

    :param job_id: the job.
    :param stdout_offset: bytes of stdout already read (the answer's chunk starts here); None with ``stderr_offset``
        None: no log, only the job's state.
    :param stderr_offset: the same for stderr.
    :param delivered: with ``cursor``: bytes of (stdout, stderr) already written out by the caller, at most the
        offsets read; the host records them under ``cursor`` and answers a later entry of the same cursor whose
        offsets are behind that record from the record (a trigger rebuilt after a triggerer crash).
    :param cursor: the name of the caller's delivery record for this job (1-128 printable characters).
    """

    job_id: str
    stdout_offset: int | None = None
    stderr_offset: int | None = None
    delivered: tuple[int, int] | None = None
    cursor: str | None = None

    def spec(self) -> str:
        """The ``--watch`` value, every part checked here before anything is sent."""
        job_id = _check_text(str(self.job_id), "job_id")
        if WATCH_SEPARATOR in job_id:
            raise ValueError(f"job_id {job_id!r} cannot be watched: it contains ':'")
        if self.stdout_offset is None and self.stderr_offset is None:
            if self.cursor is not None:
                raise ValueError("a watch cursor needs the log offsets")
            return watch_spec(job_id)
        read = (
            int(_non_negative_int(self.stdout_offset or 0, "stdout_offset")),
            int(_non_negative_int(self.stderr_offset or 0, "stderr_offset")),
        )
        if self.cursor is None:
            return watch_spec(job_id, read)
        given = self.delivered if self.delivered is not None else read
        done = (
            int(_non_negative_int(given[0], "delivered stdout")),
            int(_non_negative_int(given[1], "delivered stderr")),
        )
        if done[0] > read[0] or done[1] > read[1]:
            raise ValueError(f"delivered offsets {done} are past the offsets read {read}")
        return watch_spec(job_id, read, done, check_request_id(self.cursor, "cursor"))


def check_watch_answer(payload: Any, entries: Sequence[WatchEntry]) -> list[dict[str, Any]]:
    """The per-entry answers of a ``watch`` call, checked to be one object per entry for the job it names (an
    answer of another shape is a CLI this provider does not understand, never something to guess around)."""
    answers = payload.get("jobs") if isinstance(payload, dict) else None
    if (
        not isinstance(answers, list)
        or len(answers) != len(entries)
        or any(not isinstance(a, dict) or a.get("job_id") != e.job_id for a, e in zip(answers, entries))
    ):
        from orchesjob_provider.exceptions import OrchesjobIncompatibleCli

        raise OrchesjobIncompatibleCli(
            f"the remote orchesjob answered `wait --watch` for {len(entries)} job(s) with "
            f"{_shorten(repr(payload), 300)}; this provider needs JSON contract {CONTRACT_VERSION}",
            payload=payload if isinstance(payload, dict) else None,
        )
    return answers


def _seconds(value: Number | None, default: float, what: str) -> float:
    """A duration the CLI will wait for (a start timeout, a grace period, a wait), for the call's time bound."""
    return default if value is None else max(0.0, float(_number(value, what)))


class Verbs(Generic[T]):
    """The CLI's verbs as Python methods, for both hooks. Each method defines its verb completely, once: the
    arguments (every value checked here, before anything is sent), how long the SSH call may take, and its retry
    kind. It hands that ``Call`` to ``call``, which a hook implements over its transport: the sync hook returns the
    parsed JSON (``T`` is the value), the async hook a coroutine of it (``T`` is an awaitable). ``Definitions``
    returns the ``Call`` itself.
    """

    def call(self, call: Call) -> T:
        """Run ``call`` and return the CLI's parsed JSON (or raise the typed exception of its failure)."""
        raise NotImplementedError

    def run_cli(self, args: Sequence[Any], *, timeout: float | None = None, retry: str = NEVER) -> T:
        """Run ``orchesjob ARGS...`` (every element quoted) and return its parsed JSON: the escape hatch for verbs or
        flags the hook does not wrap. ``timeout``: seconds (default ``command_timeout``); ``retry``: ``"never"``,
        ``"before_send"`` or ``"always"`` (only for calls that are safe to repeat; see ``orchesjob_provider.retry``).
        """
        if not args:
            raise ValueError("run_cli needs at least the verb")
        return self.call(Call(str(args[0]), tuple(args), retry=retry, bound=timeout))

    def version(self) -> T:
        """The remote CLI's ``version`` JSON, checked against our contract (cached after the first success)."""
        return self.call(Call("version", ("version",), retry=ALWAYS))

    def start(
        self,
        run_key: str,
        command: str | Sequence[Any],
        *,
        mode: StartMode = "reuse_success",
        cwd: str | None = None,
        env: Mapping[str, Any] | None = None,
        timeout: Number | None = None,
        start_timeout: Number | None = None,
        sync: bool = False,
        exec_timeout: float | None = None,
        request_id: str | None = None,
        adopt_mismatch: bool = False,
    ) -> T:
        """Start (or, by run key, reattach to / adopt) a job; returns the job plus ``accepted``, ``existing``,
        ``parameters_match``, ``same_request`` and friends. A string ``command`` runs through ``/bin/sh -c``.

        ``mode``: ``reuse_success`` (adopt an active or SUCCEEDED job, the Airflow-retry default), ``default`` (the
        reference CLI's: new job after any terminal one) or ``strict`` (never a second execution for this run key).

        ``request_id`` names this request on the host; None makes a fresh one for this call. Every transport retry
        of the call repeats the same id, and the host answers a repeated id with the job it answered first, whatever
        its status since (``same_request: true``): so ``start`` is retried after any transport failure in every
        mode, and a start whose first attempt launched a job that FAILED before the retry arrived returns that
        FAILED job instead of running it again. Give the same id only to what is the same request (one Airflow try).

        ``adopt_mismatch``: a job of the run key whose command, cwd, env or timeout differ (``parameters_match:
        false``) still becomes this request's (its owner, for ``abort(if_owner=...)``); without it such a job keeps
        its owner, since the caller is expected to refuse it.

        ``exec_timeout`` bounds the SSH call; it defaults to ``command_timeout`` plus ``start_timeout`` (and is
        unbounded for ``sync=True``, which waits for the job itself).
        """
        if mode not in START_MODES:
            raise ValueError(f"mode must be one of {', '.join(START_MODES)}; got {mode!r}")
        rid = new_request_id() if request_id is None else check_request_id(request_id)
        args: list[str] = ["start", _opt("--run-key", _check_text(str(run_key), "run_key"))]
        args.append(_opt("--request-id", rid))
        if adopt_mismatch:
            args.append("--adopt-mismatch")
        if sync:
            args.append("--sync")
        if mode == "strict":
            args.append("--strict")
        elif mode == "reuse_success":
            args.append("--reuse-success")
        if start_timeout is not None:
            args += [_opt("--start-timeout", _number(start_timeout, "start_timeout"))]
        if cwd is not None:
            args += [_opt("--cwd", _check_text(str(cwd), "cwd"))]
        for key, value in (env or {}).items():
            key = _check_text(str(key), "env name")
            if not key or "=" in key:
                raise ValueError(f"invalid environment variable name {key!r}")
            args += [_opt("--env", f"{key}={_check_text(str(value), 'env value')}")]
        if timeout is not None:
            args += [_opt("--timeout", _number(timeout, "timeout"))]
        args.append("--")
        args += normalize_command(command)
        extra = None if sync else _seconds(start_timeout, DEFAULT_START_TIMEOUT, "start_timeout")
        return self.call(Call("start", tuple(args), retry=ALWAYS, extra_time=extra, bound=exec_timeout))

    def status(
        self,
        *,
        run_key: str | None = None,
        job_id: str | None = None,
        running: bool = False,
        all_attempts: bool = False,
    ) -> T:
        """The latest job of a run key, or one job by id (a dict); every attempt (``all_attempts``) or every
        active job (``running``) as a list."""
        if running:
            if run_key is not None or job_id is not None:
                raise ValueError("running=True cannot be combined with run_key or job_id")
            args = ["status", "--running"]
        else:
            args = ["status", *_selector(run_key, job_id)]
        if all_attempts:
            if run_key is None:
                raise ValueError("all_attempts=True needs run_key")
            args.append("--all")
        return self.call(Call("status", tuple(args), retry=ALWAYS))

    def wait(
        self,
        *,
        run_key: str | None = None,
        job_id: str | None = None,
        timeout: Number | None = DEFAULT_WAIT_TIMEOUT,
        stdout_offset: int | None = None,
        stderr_offset: int | None = None,
        max_bytes: int | None = None,
    ) -> T:
        """Long-poll until the job is terminal, ``timeout`` passes, or (given offsets) a log grows; returns the job
        plus ``timed_out`` and, with offsets, ``logs`` chunks. The SSH call may take ``timeout`` plus
        ``command_timeout``."""
        args = ["wait", *_selector(run_key, job_id)]
        if timeout is not None:
            args += [_opt("--timeout", _number(timeout, "timeout"))]
        if stdout_offset is not None:
            args += [_opt("--stdout-offset", _non_negative_int(stdout_offset, "stdout_offset"))]
        if stderr_offset is not None:
            args += [_opt("--stderr-offset", _non_negative_int(stderr_offset, "stderr_offset"))]
        if max_bytes is not None:
            args += [_opt("--max-bytes", _non_negative_int(max_bytes, "max_bytes"))]
        blocks = _seconds(timeout, DEFAULT_WAIT_TIMEOUT, "timeout")
        return self.call(Call("wait", tuple(args), retry=ALWAYS, extra_time=blocks))

    def watch(
        self,
        entries: Sequence[WatchEntry],
        *,
        timeout: Number | None = DEFAULT_WAIT_TIMEOUT,
        max_bytes: int | None = None,
        max_total_bytes: int | None = None,
        wake_on_eof: bool = False,
        gather: Number | None = None,
    ) -> T:
        """Long-poll many jobs in one call (``wait --watch``): returns ``{"jobs": [one answer per entry, in order],
        "timed_out", "woken"}`` as soon as any entry has news (its job ended, wrote past its offsets, or is not
        there). ``max_total_bytes`` bounds the log bytes of the whole answer (shared fairly); ``wake_on_eof`` makes
        the call wakeable (see ``Call.wakeable``); ``gather``: seconds to go on collecting when the news is only
        new output (an end still answers at once). Check the answer with ``check_watch_answer``."""
        if not entries:
            raise ValueError("watch needs at least one entry")
        args = ["wait", *(_opt("--watch", e.spec()) for e in entries)]
        if timeout is not None:
            args += [_opt("--timeout", _number(timeout, "timeout"))]
        if max_bytes is not None:
            args += [_opt("--max-bytes", _non_negative_int(max_bytes, "max_bytes"))]
        if max_total_bytes is not None:
            args += [_opt("--max-total-bytes", _non_negative_int(max_total_bytes, "max_total_bytes"))]
        if wake_on_eof:
            args.append("--wake-on-eof")
        if gather is not None:
            args += [_opt("--gather", _number(gather, "gather"))]
        blocks = _seconds(timeout, DEFAULT_WAIT_TIMEOUT, "timeout")
        return self.call(Call("wait", tuple(args), retry=ALWAYS, extra_time=blocks, wakeable=wake_on_eof))

    def logs(
        self,
        *,
        run_key: str | None = None,
        job_id: str | None = None,
        stream: str = "stdout",
        offset: int | None = None,
        limit: int | None = None,
        tail: int | None = None,
    ) -> T:
        """One CHUNK of a job's log (``data``, ``offset``, ``next_offset``, ``size``); read on from ``next_offset``."""
        if stream not in STREAMS:
            raise ValueError(f"stream must be 'stdout' or 'stderr', got {stream!r}")
        args = ["logs", *_selector(run_key, job_id), _opt("--stream", stream)]
        if offset is not None:
            args += [_opt("--offset", _non_negative_int(offset, "offset"))]
        if limit is not None:
            args += [_opt("--limit", _non_negative_int(limit, "limit"))]
        if tail is not None:
            args += [_opt("--tail", _non_negative_int(tail, "tail"))]
        args.append("--json")
        return self.call(Call("logs", tuple(args), retry=ALWAYS))

    def abort(
        self,
        *,
        run_key: str | None = None,
        job_id: str | None = None,
        reason: str | None = None,
        grace_seconds: Number | None = None,
        if_owner: str | None = None,
    ) -> T:
        """Abort an active job (SIGTERM to its process group, then SIGKILL after ``grace_seconds``). Raises
        ``OrchesjobConflict`` when the job already finished; with ``if_owner`` (a request id), ``OrchesjobNotOwner``
        when the job's owner is another request (a newer try took it over). Repeated only when the failure happened
        before the command was sent."""
        args = ["abort", *_selector(run_key, job_id)]
        if if_owner is not None:
            args.append(_opt("--if-owner", check_request_id(if_owner, "if_owner")))
        if reason is not None:
            args += [_opt("--reason", _check_text(str(reason), "reason"))]
        if grace_seconds is not None:
            args += [_opt("--grace-seconds", _number(grace_seconds, "grace_seconds"))]
        grace = _seconds(grace_seconds, DEFAULT_ABORT_GRACE, "grace_seconds")
        return self.call(Call("abort", tuple(args), retry=BEFORE_SEND, extra_time=grace))

    def rerun(
        self,
        *,
        run_key: str | None = None,
        job_id: str | None = None,
        reason: str | None = None,
        start_timeout: Number | None = None,
        sync: bool = False,
        exec_timeout: float | None = None,
    ) -> T:
        """Start a new execution of a finished job's command (never repeated once sent: it is not idempotent)."""
        args = ["rerun", *_selector(run_key, job_id)]
        if sync:
            args.append("--sync")
        if reason is not None:
            args += [_opt("--reason", _check_text(str(reason), "reason"))]
        if start_timeout is not None:
            args += [_opt("--start-timeout", _number(start_timeout, "start_timeout"))]
        extra = None if sync else _seconds(start_timeout, DEFAULT_START_TIMEOUT, "start_timeout")
        return self.call(Call("rerun", tuple(args), retry=BEFORE_SEND, extra_time=extra, bound=exec_timeout))

    def unlock(self, run_key: str, *, reason: str | None = None, ttl: int | str | None = None) -> T:
        """Allow one more ``strict`` execution of a finished run key (optionally expiring after ``ttl``)."""
        args = ["unlock", _opt("--run-key", _check_text(str(run_key), "run_key"))]
        if reason is not None:
            args += [_opt("--reason", _check_text(str(reason), "reason"))]
        if ttl is not None:
            args += [_opt("--ttl", _check_text(str(ttl), "ttl"))]
        return self.call(Call("unlock", tuple(args), retry=BEFORE_SEND))

    def clean(
        self,
        *,
        before: Moment | None = None,
        after: Moment | None = None,
        all_jobs: bool = False,
        job_id: str | None = None,
        run_key: str | None = None,
        dry_run: bool = False,
    ) -> T:
        """Delete finished jobs and their logs on the host (active jobs are never touched)."""
        args = ["clean"]
        if job_id is not None:
            if before is not None or after is not None or all_jobs or run_key is not None:
                raise ValueError("job_id cannot be combined with other selections")
            args += [_opt("--job-id", _check_text(str(job_id), "job_id"))]
        else:
            if before is None and after is None and not all_jobs:
                raise ValueError("give before, after, all_jobs=True or job_id")
            if before is not None:
                args += [_opt("--before", _moment(before, "before"))]
            if after is not None:
                args += [_opt("--after", _moment(after, "after"))]
            if all_jobs:
                args.append("--all")
            if run_key is not None:
                args += [_opt("--run-key", _check_text(str(run_key), "run_key"))]
        if dry_run:
            args.append("--dry-run")
        return self.call(Call("clean", tuple(args), retry=BEFORE_SEND))


class Definitions(Verbs[Call]):
    """The verbs' definitions without running them: ``define.start(...)`` is the ``Call`` a hook would run."""

    def call(self, call: Call) -> Call:
        return call


define = Definitions()


# --------------------------------------------------------------------------- parsing


def _decode(data: str | bytes | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return data


def extract_json(text: str) -> Any:
    """The JSON document on stdout, or None.

    The whole text is tried first. Failing that, the first line that starts a JSON object or array and runs to the
    end of the output is used: a remote ``.bashrc`` that prints a banner must not turn a good answer into an error.
    """
    stripped = text.strip()
    if not stripped:
        return None
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    decoder = json.JSONDecoder()
    position = 0
    for line in text.splitlines(keepends=True):
        head = line.lstrip()
        if head[:1] in ("{", "["):
            start = position + (len(line) - len(head))
            try:
                value, end = decoder.raw_decode(text, start)
            except ValueError:
                value, end = None, -1
            if end != -1 and not text[end:].strip():
                return value
        position += len(line)
    return None


def looks_like_missing_cli(exit_code: int | None, stderr: str) -> bool:
    """True when the shell could not run the CLI at all (not installed, wrong path, not executable). A symptom
    only: whether a CLI exists is then asked of the host itself (``cli_install.probe``)."""
    if exit_code in (126, 127):
        return True
    low = stderr.lower()
    return any(marker in low for marker in _MISSING_CLI_MARKERS) and "orchesjob" in low


def parse_output(
    stdout: str | bytes | None,
    exit_code: int | None,
    stderr: str | bytes | None = "",
    *,
    command: str = "",
) -> Any:
    """The CLI's answer as Python data, or the typed exception for what went wrong.

    - exit 0 with JSON: the parsed value (a dict, or a list for ``status --all/--running``);
    - a CLI error JSON: ``OrchesjobInvalidArgument`` / ``NotFound`` / ``Conflict`` / ``LockTimeout`` / ``Error``;
    - exit 126/127 or "not found" from the shell: ``OrchesjobIncompatibleCli``;
    - no exit status (channel closed) or no JSON: ``OrchesjobTransportError`` with ``sent=True`` (whatever came
      back came from the host, so the command reached it).
    """
    out = _decode(stdout)
    err = _decode(stderr)
    payload = extract_json(out)
    if exit_code == 0 and payload is not None:
        return payload
    _raise_failure(out, exit_code, err, payload, command)


def _raise_failure(out: str, exit_code: int | None, err: str, payload: Any, command: str) -> NoReturn:
    from orchesjob_provider.exceptions import (
        OrchesjobCliMissing,
        OrchesjobTransportError,
        error_from_payload,
    )

    detail = _shorten(err.strip() or out.strip())
    if exit_code is None or exit_code < 0:
        raise OrchesjobTransportError(
            "the SSH channel closed before orchesjob reported an exit status"
            + (f"; output so far: {detail}" if detail else ""),
            exit_code=exit_code,
            stderr=err,
            command=command,
            sent=True,
        )
    if isinstance(payload, dict) and "error" in payload:
        raise error_from_payload(payload, exit_code, stderr=err, command=command)
    if looks_like_missing_cli(exit_code, err):
        # a symptom only (127 from sh, 1 and "Command not found." from tcsh, 126 for a file that cannot run): the
        # handshake asks the host whether the file exists before anything is uploaded (never shadowed)
        raise OrchesjobCliMissing(
            f"the orchesjob CLI could not be run on the remote host (exit {exit_code}): {detail or 'no output'}. "
            "Install it there (pip/pipx install orchesjob, or copy orchesjob.pyz) and point orchesjob_bin at it "
            "(non-login SSH commands usually have PATH=/usr/local/bin:/usr/bin:/bin, so an absolute path is "
            "safest), or name no orchesjob_bin and let the provider upload its own copy (install_cli 'auto')",
            exit_code=exit_code,
            stderr=err,
            command=command,
        )
    if exit_code == 0:
        reason = "orchesjob exited 0 but printed no JSON"
    else:
        reason = f"orchesjob exited {exit_code} without an error JSON"
    raise OrchesjobTransportError(
        reason + (f": {detail}" if detail else ""), exit_code=exit_code, stderr=err, command=command, sent=True
    )


def check_version(payload: Any) -> dict[str, Any]:
    """Accept a ``version`` answer of our contract, or raise ``OrchesjobIncompatibleCli`` saying what differs."""
    from orchesjob_provider.exceptions import OrchesjobIncompatibleCli

    if not isinstance(payload, dict) or "contract" not in payload:
        raise OrchesjobIncompatibleCli(
            f"the remote orchesjob did not report a JSON contract version (got {_shorten(repr(payload))}); "
            f"this provider needs contract {CONTRACT_VERSION}",
            payload=payload if isinstance(payload, dict) else None,
        )
    contract = payload.get("contract")
    if contract != CONTRACT_VERSION:
        raise OrchesjobIncompatibleCli(
            f"the remote orchesjob {payload.get('version', '?')} speaks JSON contract {contract!r}; this provider is "
            f"orchesjob {__version__} and speaks JSON contract {CONTRACT_VERSION}: install orchesjob {__version__} "
            f"on the host (pip install 'orchesjob=={__version__}'), or remove the host's orchesjob so that the "
            f"provider uses its own copy",
            payload=payload,
        )
    return payload


def is_terminal(job: Mapping[str, Any]) -> bool:
    """True when the job will not change any more (``active`` false, or a terminal status)."""
    if "active" in job and isinstance(job["active"], bool):
        return not job["active"]
    return str(job.get("status")) in TERMINAL_STATUSES


def _shorten(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


REDACTED = "***"


def redact_env(payload: Any) -> Any:
    """A CLI answer with the values of every job's ``env`` replaced by ``"***"`` (the names stay, so one can see
    which variables a job got). The provider never hands a value on: not in XCom, not in trigger events, not in
    logs. A job object is a dict with an ``env``; answers holding jobs are lists of them or dicts around one."""
    if isinstance(payload, list):
        return [redact_env(item) for item in payload]
    if not isinstance(payload, dict):
        return payload
    out = {}
    for key, value in payload.items():
        if key == "env" and isinstance(value, dict):
            out[key] = {str(name): REDACTED for name in value}
        elif isinstance(value, (dict, list)):
            out[key] = redact_env(value)
        else:
            out[key] = value
    return out
