"""The command line edge: argv in, JSON out, exit code from errors.py.

This is the only module that knows about argv. It validates every value into plain Python types (so the commands
get nothing they must second-guess), calls one function in commands.py, and prints its result. Every failure,
including a bug, leaves as one JSON object on stdout and one `orchesjob: ...` line on stderr, never a traceback.
"""

from __future__ import annotations

import os
import sys

from .contract import (  # limits and defaults the provider relies on too
    DEFAULT_ABORT_GRACE,
    DEFAULT_MAX_BYTES,
    DEFAULT_START_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
    MAX_CHUNK,
    MAX_JOB_ID,
    MAX_LOCK_TIMEOUT,
    MAX_OFFSET,
    MAX_REQUEST_ID,
    MAX_RUN_KEY,
    MAX_TEXT,
    STREAMS,
    WATCH_DEFAULT_TOTAL_BYTES,
    WATCH_MIN_TOTAL_BYTES,
)
from .errors import EXIT_ERROR, EXIT_OK, InvalidArgument, OrchesjobError
from .jsonout import dump as _dump  # imported now: the error path must not need to open a file (ulimit -n)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, TypeVar

    T = TypeVar("T")


# -- value rules (one place each) ---------------------------------------------------------------------------------
def run_key(value: str | None) -> str | None:
    """Run keys are non-empty, printable, at most 256 characters: they appear in logs, JSON and SSH command lines."""
    if value is None:
        return None
    if not value:
        raise InvalidArgument("--run-key must not be empty")
    if len(value) > MAX_RUN_KEY:
        raise InvalidArgument("--run-key is %d characters long; at most %d are allowed" % (len(value), MAX_RUN_KEY))
    if not value.isprintable():
        raise InvalidArgument("--run-key %r contains control or unprintable characters" % value)
    return value


def request_id(value: str | None, flag: str) -> str | None:
    """A caller's request id: non-empty, printable, at most 128 characters (it travels in SSH command lines)."""
    if value is None:
        return None
    if not value or len(value) > MAX_REQUEST_ID or not value.isprintable():
        raise InvalidArgument("%s %r must be 1-%d printable characters" % (flag, value[:80], MAX_REQUEST_ID))
    return value


def job_id(value: str | None) -> str | None:
    if value is None:
        return None
    if not value or len(value) > MAX_JOB_ID or not value.isprintable():
        raise InvalidArgument("--job-id %r is not a job id" % value)
    return value


def text(value: str | None, flag: str) -> str | None:
    """Free text kept in the job record (reasons, cwd): bounded, and storable as UTF-8."""
    if value is None:
        return None
    if len(value) > MAX_TEXT:
        raise InvalidArgument("%s is %d characters long; at most %d are allowed" % (flag, len(value), MAX_TEXT))
    if "\0" in value:
        raise InvalidArgument("%s contains a NUL character" % flag)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument("%s is not valid UTF-8 (it contains bytes of another encoding)" % flag) from None
    return value


def count(
    value: str | None, flag: str, minimum: int = 0, maximum: int = MAX_OFFSET, default: int | None = None
) -> int | None:
    """A whole number from minimum to maximum; `default` when the flag was left out."""
    if value is None:
        return default
    try:
        n = int(value)
    except ValueError:
        raise InvalidArgument("%s: %r is not a whole number" % (flag, value)) from None
    if n < minimum:
        raise InvalidArgument("%s must be at least %d (got %d)" % (flag, minimum, n))
    if n > maximum:
        raise InvalidArgument("%s must be at most %d (got %d)" % (flag, maximum, n))
    return n


def seconds(value: str | None, flag: str, allow_zero: bool = True, default: float | None = None) -> float | None:
    """A number of seconds; `default` when the flag was left out."""
    if value is None:
        return default
    from .timeutil import parse_seconds

    return parse_seconds(value, flag, allow_zero)


def env_pairs(values: list[str] | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in values or []:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise InvalidArgument("--env %r must look like KEY=VALUE" % item)
        if "\0" in item:
            raise InvalidArgument("--env %r contains a NUL character" % item)
        env[key] = val
    return env


def hours(value: str | None, flag: str) -> float | None:
    """A positive number of hours (fractions allowed), at most 100 years; returned in seconds."""
    if value is None:
        return None
    from .timeutil import MAX_SECONDS

    try:
        n = float(value)
    except ValueError:
        raise InvalidArgument("%s: %r is not a number of hours" % (flag, value)) from None
    if not 0 < n <= MAX_SECONDS / 3600:  # also refuses nan and inf
        raise InvalidArgument("%s must be more than 0 and at most 100 years (got %s)" % (flag, value))
    return n * 3600


def choice(value: str | None, flag: str, allowed: Sequence[str], default: str) -> str:
    if value is None:
        return default
    if value not in allowed:
        raise InvalidArgument("%s must be %s (got %r)" % (flag, " or ".join(allowed), value))
    return value


def command_argv(cmd: Sequence[str]) -> list[str]:
    if not cmd:
        raise InvalidArgument(
            "command is required (provide it after --): orchesjob start --run-key KEY -- COMMAND [ARGS...]"
        )
    if not cmd[0]:
        raise InvalidArgument("the command must not be an empty string")
    return list(cmd)


# -- dispatch -------------------------------------------------------------------------------------------------------
def _given(value: T | None) -> T:
    """A value the checks before it guarantee (a required flag, or one with a default)."""
    assert value is not None
    return value


def _one_of(a: dict[str, Any], *names: str) -> None:
    given = [n for n in names if a.get(n) is not None]
    if len(given) != 1:
        flags = " or ".join("--" + n.replace("_", "-") for n in names)
        raise InvalidArgument(("give only one of %s" if given else "one of %s is required") % flags)


def _watch(a: dict[str, Any]) -> Any:
    """`wait --watch ...`: many jobs in one call (watch.py); the single-job flags do not mix with it."""
    from . import watch

    mixed = [f for f in ("run_key", "job_id", "stdout_offset", "stderr_offset") if a[f] is not None]
    if mixed:
        raise InvalidArgument(
            "wait --watch cannot be combined with %s (each --watch names its job and offsets)"
            % ", ".join("--" + f.replace("_", "-") for f in mixed)
        )
    entries = [watch.parse_entry(spec, job_id, count, lambda v: request_id(v, "--watch cursor")) for spec in a["watch"]]
    return watch.watch(
        entries,
        _given(seconds(a["timeout"], "--timeout", default=DEFAULT_WAIT_TIMEOUT)),
        _given(count(a["max_bytes"], "--max-bytes", 1, MAX_CHUNK, default=DEFAULT_MAX_BYTES)),
        _given(
            count(
                a["max_total_bytes"],
                "--max-total-bytes",
                WATCH_MIN_TOTAL_BYTES,
                MAX_CHUNK,
                default=WATCH_DEFAULT_TOTAL_BYTES,
            )
        ),
        wake_on_eof=a["wake_on_eof"],
        gather=_given(seconds(a["gather"], "--gather")) if a["gather"] is not None else 0.0,
    )


def environment() -> None:
    """Refuse settings from the environment that no command could work with, before anything is done."""
    from .store import check_lock_timeout

    text_value = os.environ.get("ORCHESJOB_LOCK_TIMEOUT")
    if text_value and check_lock_timeout(text_value) is None:
        raise InvalidArgument(
            "ORCHESJOB_LOCK_TIMEOUT=%r is not a number of seconds from 0 to %d" % (text_value[:40], MAX_LOCK_TIMEOUT)
        )


def dispatch(argv: list[str]) -> Any:
    from . import argv as argv_mod
    from . import commands

    c, a = argv_mod.parse(argv)
    fmt = _format(c, a)
    environment()
    if c == "version":
        return commands.version()
    if c in ("help", "completion"):
        return _about(c, a)
    if c == "start":
        if a["run_key"] is None:
            raise InvalidArgument("start needs --run-key KEY")
        if a["strict"] and a["reuse_success"]:
            raise InvalidArgument("--strict and --reuse-success cannot be combined")
        if a["adopt_mismatch"] and a["request_id"] is None:
            raise InvalidArgument("--adopt-mismatch needs --request-id (it is about who owns the job)")
        start_timeout = seconds(a["start_timeout"], "--start-timeout")
        return _view(
            c,
            fmt,
            commands.start(
                _given(run_key(a["run_key"])),
                command_argv(a["command"]),
                sync=a["sync"],
                strict=a["strict"],
                reuse_success=a["reuse_success"],
                start_timeout=DEFAULT_START_TIMEOUT if start_timeout is None else start_timeout,
                cwd=os.path.abspath(_given(text(a["cwd"], "--cwd"))) if a["cwd"] else None,
                env=env_pairs(a["env"]),
                timeout=seconds(a["timeout"], "--timeout", allow_zero=False),
                request_id=request_id(a["request_id"], "--request-id"),
                adopt_mismatch=a["adopt_mismatch"],
            ),
        )
    if c in ("status", "wait", "logs", "abort") and a["job"] is not None:
        if a["job_id"] is not None or a["run_key"] is not None or (c == "status" and a["running"]):
            raise InvalidArgument("%s: give the job as an argument or with --job-id/--run-key, not both" % c)
        a["job_id"] = commands.resolve_job(_given(job_id(a["job"])))
    if c == "status":
        if a["running"]:
            if a["run_key"] is not None or a["job_id"] is not None:
                raise InvalidArgument("status --running cannot be combined with --run-key or --job-id")
        elif a["run_key"] is None and a["job_id"] is None:
            raise InvalidArgument("status needs a job id, --run-key, --job-id or --running")
        else:
            _one_of(a, "run_key", "job_id")
        if a["all"] and not a["run_key"]:
            raise InvalidArgument("status --all needs --run-key")
        return _view(c, fmt, commands.status(run_key(a["run_key"]), job_id(a["job_id"]), a["running"], a["all"]))
    if c == "unlock":
        if a["run_key"] is None:
            raise InvalidArgument("unlock needs --run-key KEY")
        from .timeutil import parse_duration

        ttl = parse_duration(a["ttl"], "--ttl", allow_zero=False) if a["ttl"] is not None else None
        return _view(c, fmt, commands.unlock(_given(run_key(a["run_key"])), text(a["reason"], "--reason"), ttl))
    if c == "clean":
        return _clean(a, fmt)
    if c in ("ls", "doctor", "metrics"):
        return _host_tool(c, a, fmt)
    if c == "wait" and a["watch"]:
        return _view(c, fmt, _watch(a))
    if c == "wait" and (a["max_total_bytes"] is not None or a["wake_on_eof"] or a["gather"] is not None):
        raise InvalidArgument("--max-total-bytes, --wake-on-eof and --gather go with wait --watch")
    _one_of(a, "run_key", "job_id")
    key, jid = run_key(a["run_key"]), job_id(a["job_id"])
    if c == "wait":
        return _view(
            c,
            fmt,
            commands.wait(
                key,
                jid,
                _given(seconds(a["timeout"], "--timeout", default=DEFAULT_WAIT_TIMEOUT)),
                count(a["stdout_offset"], "--stdout-offset"),
                count(a["stderr_offset"], "--stderr-offset"),
                _given(count(a["max_bytes"], "--max-bytes", 1, MAX_CHUNK, default=DEFAULT_MAX_BYTES)),
            ),
        )
    if c == "logs":
        stream = choice(a["stream"], "--stream", STREAMS, "stdout")
        as_json = fmt == "json"
        if a["tail"] is not None and (a["offset"] is not None or a["limit"] is not None):
            raise InvalidArgument("logs --tail cannot be combined with --offset or --limit")
        if a["follow"] and (as_json or a["limit"] is not None):
            raise InvalidArgument("logs --follow cannot be combined with --json or --limit")
        attempt = count(a["attempt"], "--attempt", 1)
        if attempt is not None and key is None:
            raise InvalidArgument("logs --attempt goes with --run-key (attempt N of that key)")
        return commands.logs(
            key,
            jid,
            stream,
            count(a["offset"], "--offset"),
            count(a["limit"], "--limit", 0),
            count(a["tail"], "--tail"),
            as_json,
            follow=a["follow"],
            attempt=attempt,
        )
    if c == "abort":
        return _view(
            c,
            fmt,
            commands.abort(
                key,
                jid,
                text(a["reason"], "--reason"),
                _given(seconds(a["grace_seconds"], "--grace-seconds", default=DEFAULT_ABORT_GRACE)),
                if_owner=request_id(a["if_owner"], "--if-owner"),
                assume_dead=a["assume_dead"],
            ),
        )
    if c == "rerun":
        start_timeout = seconds(a["start_timeout"], "--start-timeout")
        return _view(
            c,
            fmt,
            commands.rerun(
                key,
                jid,
                sync=a["sync"],
                reason=text(a["reason"], "--reason"),
                start_timeout=DEFAULT_START_TIMEOUT if start_timeout is None else start_timeout,
            ),
        )
    raise InvalidArgument("unknown command %r" % c)  # pragma: no cover - argv.parse rejects it first


# Whether failures are answered in JSON on stdout too (cli.main): decided once the format is known.
_ERRORS_AS_JSON: list[bool] = []


def _format(c: str, a: dict[str, Any]) -> str:
    """The answer's form: "json", "table" (the view for people) or "raw" (no --format: logs' bytes, metrics' text).

    `text` is another name of `table`; `auto` (the default of clean and doctor) is table on a terminal, json
    otherwise; `--json` is the same as `--format json`. An explicit `--format json` also makes a failure answer
    in JSON on a terminal."""
    from .arguments import COMMANDS, words

    spec = COMMANDS[c][1]
    if "--format" not in spec:
        return "raw"
    given = a.get("format")
    if a.get("json"):
        if given not in (None, "json"):
            raise InvalidArgument("%s: --json and --format %s contradict each other" % (c, given))
        given = "json"
    allowed = words(spec["--format"][1])
    value = choice(given, "--format", allowed + ("text",), allowed[0])
    if value == "auto":
        value = "table" if _isatty(sys.stdout) else "json"
    if given == "json":
        _ERRORS_AS_JSON.append(True)
    return "table" if value == "text" else value


def _view(c: str, fmt: str, answer: Any) -> Any:
    """The JSON answer as it is, or, with --format table, its view for people (views.py)."""
    if fmt != "table":
        return answer
    from . import views
    from .textout import Terminal

    return views.view(c, answer, Terminal.detect(sys.stdout))


def _about(c: str, a: dict[str, Any]) -> Any:
    """`help [COMMAND]`, `help --man` and `completion SHELL`: text for people and shells, exit 0."""
    from .arguments import COMMANDS, SHELLS
    from .argv import suggest
    from .textout import Text

    if c == "completion":
        shell = a["shell"]
        if shell not in SHELLS:
            raise InvalidArgument(
                "completion needs a shell: %s%s" % (", ".join(SHELLS), suggest(shell, SHELLS) if shell else "")
            )
        from .completion import script

        return Text(script(shell))
    from . import manual

    if a["man"]:
        if a["topic"] is not None:
            raise InvalidArgument("help --man prints the whole manual; give no command with it")
        return Text(manual.man_page())
    topic = a["topic"]
    if topic is not None and topic not in COMMANDS:
        raise InvalidArgument(
            "help: unknown command %r%s; the commands are %s" % (topic, suggest(topic, COMMANDS), ", ".join(COMMANDS))
        )
    return Text(manual.help_text(topic))


def _clean(a: dict[str, Any], fmt: str) -> Any:
    from . import commands
    from .timeutil import parse_datetime

    ranged = a["before"] is not None or a["after"] is not None
    if a["job_id"] is not None and (ranged or a["all"] or a["run_key"] is not None):
        raise InvalidArgument("clean --job-id cannot be combined with other selection options")
    if a["all"] and ranged:
        raise InvalidArgument("clean --all cannot be combined with --before or --after")
    if a["job_id"] is None and not a["all"] and not ranged:
        raise InvalidArgument("clean needs --before, --after, --all or --job-id")
    before = parse_datetime(a["before"], "--before") if a["before"] is not None else None
    after = parse_datetime(a["after"], "--after") if a["after"] is not None else None
    if before is not None and after is not None and after >= before:
        raise InvalidArgument("clean --after must be earlier than --before")
    summary = a["summary"] or fmt == "table"  # a view for people never needs the list
    result = commands.clean(
        before, after, a["all"], job_id(a["job_id"]), run_key(a["run_key"]), a["dry_run"], summary=summary
    )
    return _view("clean", fmt, result)


def _host_tool(c: str, a: dict[str, Any], fmt: str) -> Any:
    """ls, doctor and metrics: for a person at the terminal or for the monitoring stack (text unless asked)."""
    from . import commands
    from .textout import Terminal

    if c == "ls":
        statuses = ls_statuses(a["status"])
        prefix = a["run_key_prefix"]
        if prefix is not None:
            if not prefix or len(prefix) > MAX_RUN_KEY or not prefix.isprintable():
                raise InvalidArgument("--run-key-prefix must be 1-%d printable characters" % MAX_RUN_KEY)
            if a["run_key"] is not None:
                raise InvalidArgument("ls --run-key-prefix cannot be combined with --run-key")
        interval = seconds(a["interval"], "--interval", allow_zero=False)
        if interval is not None and not a["watch"]:
            raise InvalidArgument("ls --interval goes with --watch")
        if a["watch"] and fmt == "json":
            raise InvalidArgument("ls --watch is a view for people; it cannot be combined with --format json")
        return commands.ls(
            count(a["last"], "--last", 1, 100000),
            run_key(a["run_key"]),
            fmt == "json",
            Terminal.detect(sys.stdout),
            statuses=statuses,
            prefix=prefix,
            watch=(2.0 if interval is None else interval) if a["watch"] else None,
        )
    if c == "doctor":
        return commands.doctor(a["fix"], fmt == "table", Terminal.detect(sys.stdout))
    recent = hours(a["recent_hours"], "--recent-hours")
    if a["max_families"] is not None and a["max_keys"] is not None:
        raise InvalidArgument("metrics: --max-keys is the former name of --max-families; give one of them")
    max_families = count(a["max_families"], "--max-families", 0, 100000)
    if max_families is None:
        max_families = count(a["max_keys"], "--max-keys", 0, 100000)
    depth = count(a["family_depth"], "--family-depth", 1, 64)
    return commands.metrics(
        24 * 3600.0 if recent is None else recent,
        500 if max_families is None else max_families,
        1 if depth is None else depth,
    )


def ls_statuses(values: list[str]) -> tuple[str, ...]:
    """`--status` values (repeatable, each may be comma-separated), each one of the seven, in the table's order."""
    from .contract import STATUSES

    wanted = set()
    for value in values:
        for part in value.split(","):
            name = part.strip().upper()
            if name not in STATUSES:
                from .argv import suggest

                raise InvalidArgument(
                    "--status %r is not a status%s; the statuses are %s"
                    % (part, suggest(name, STATUSES), ", ".join(STATUSES))
                )
            wanted.add(name)
    return tuple(s for s in STATUSES if s in wanted)


def _with_upgrade(result: Any) -> Any:
    """A JSON object answer says when this command upgraded the database of orchesjob 1.1.0 it found."""
    store = sys.modules.get(__name__.rpartition(".")[0] + ".store")  # loaded by any command that opened it
    upgraded = getattr(store, "UPGRADED", None)
    if upgraded and isinstance(result, dict):
        result = dict(result, migrated_from=upgraded[0])
    return result


def _emit_error(err: OrchesjobError) -> int:
    """A failure: one JSON object on stdout (unless stdout is a terminal and JSON was not asked for) and one
    `orchesjob: ...` line on stderr. A person at a terminal reads the line once; a program gets the object."""
    if _ERRORS_AS_JSON or not _isatty(sys.stdout):
        _write_json(_with_upgrade(err.to_json()))
    try:
        sys.stderr.write("orchesjob: %s\n" % err.message.replace("\n", " "))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return err.exit_code


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _write_json(obj: Any) -> None:
    _dump(obj, sys.stdout.write)  # in pieces: a log chunk's text is escaped and written a slice at a time
    sys.stdout.write("\n")
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point; exits with the documented code."""
    if sys.version_info < MIN_PYTHON:
        _refuse_python()
    try:
        _main(argv)
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - the error path itself failed (no memory, no descriptors left)
        _last_resort(e)


def _main(argv: Sequence[str] | None) -> None:
    _standard_streams()
    from .argv import Help, NoCommand

    args = list(sys.argv[1:] if argv is None else argv)
    if (
        "--json" in args
        or "--format=json" in args
        or any(a == "--format" and b == "json" for a, b in zip(args, args[1:]))
    ):
        _ERRORS_AS_JSON.append(True)  # asked for JSON: also a failure before the format was read answers in it
    try:
        result = dispatch(args)
        from .logfiles import Blocks

        emit = getattr(result, "emit", None)
        if emit is not None:
            # text for people or another format, or a followed log (textout.Output): it writes itself and says
            # the exit status
            code = emit(sys.stdout)
        elif isinstance(result, (bytes, Blocks)):
            # a log (commands.logs): written block by block as it is read, so any size costs one block of memory
            for block in (result,) if isinstance(result, bytes) else result:
                sys.stdout.buffer.write(block)
            sys.stdout.flush()
            code = EXIT_OK
        else:
            _write_json(_with_upgrade(result))
            code = EXIT_OK
    except NoCommand as e:
        if _isatty(sys.stdout):  # a person typed `orchesjob`: show what it can do
            from .manual import help_text

            sys.stderr.write(help_text())
            sys.stderr.flush()
            code = e.exit_code
        else:
            code = _emit_error(e)
    except OrchesjobError as e:
        code = _emit_error(e)
        if e.error_type in ("corrupt_database", "database"):
            _leave_database_untouched(code)
    except Help as h:
        sys.stdout.write(h.text)
        code = EXIT_OK
    except BrokenPipeError:
        # the reader went away (e.g. `orchesjob logs ... | head`); nothing to report to it
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        code = EXIT_OK
    except KeyboardInterrupt:
        code = _emit_error(OrchesjobError("interrupted", error_type="interrupted"))
    except MemoryError:
        code = _emit_error(OrchesjobError("out of memory (ulimit -v?)", error_type="os_error"))
    except Exception as e:  # noqa: BLE001 - a bug or an environment we did not foresee: still one JSON object
        err = _unexpected(e)
        code = _emit_error(err)
        if err.error_type in ("corrupt_database", "database"):
            _leave_database_untouched(code)
    if argv is None:  # the process's own command line: this answer is all it does
        _leave(code)
    sys.exit(code)


MIN_PYTHON = (3, 9)


def _refuse_python() -> None:
    """Below Python 3.9 nothing is started: the supervisor needs what 3.9 added (os.waitstatus_to_exitcode, pidfds),
    and a job whose supervisor crashes would be LOST and run again by the next retry."""
    version = "%d.%d.%d" % sys.version_info[:3]
    message = "orchesjob needs Python 3.9 or newer; %s is Python %s: run it with a newer python3" % (
        sys.executable or "this interpreter",
        version,
    )
    try:
        sys.stdout.write(
            '{\n  "error": "unsupported_python",\n  "message": "%s",\n  "exit_code": 1,\n  "python": "%s"\n}\n'
            % (message.replace("\\", "\\\\").replace('"', '\\"'), version)
        )
        sys.stdout.flush()
        sys.stderr.write("orchesjob: %s\n" % message)
    except (OSError, ValueError, AttributeError):
        pass
    os._exit(1)


def _standard_streams() -> None:
    """Give descriptors 0, 1 and 2 to /dev/null where the caller closed them (`orchesjob start 2>&-`).

    Otherwise the next file this process opens takes the number: a log, a lock or the database would become
    "standard output" for whatever writes there (the supervisor makes its 0-2 /dev/null before it launches
    anything, and would close such a file). Python leaves sys.stdout or sys.stderr None for a closed stream; they
    get a writer on /dev/null, so a command runs the same, only its answer goes nowhere."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)


def _last_resort(e: BaseException) -> None:
    """Report a failure of the error path itself with nothing but a write(2) of prepared bytes, then exit 1."""
    try:
        name = type(e).__name__.encode("ascii", "replace")[:40]
        data = _LAST_RESORT % name
    except BaseException:  # noqa: BLE001 - not even that: the fixed text
        data = _LAST_RESORT % b"an unknown error"
    try:
        os.write(1, data)
        os.write(2, b"orchesjob: could not finish or report its answer (" + data[:0] + b"see stdout)\n")
    except BaseException:  # noqa: BLE001 - nothing is left to report with
        pass
    os._exit(1)


_LAST_RESORT = (
    b'{\n  "error": "error",\n  "message": "orchesjob could not finish or report its answer (%s; too little '
    b'memory or too few file descriptors?)",\n  "exit_code": 1\n}\n'
)


def _leave(code: int) -> None:
    """End the process once its answer is out, without the interpreter's teardown.

    Teardown frees every object and module one by one: for a `status` that is a fifth of a bare interpreter's whole
    run, and nothing of it is needed. What it would do that matters is done here: the open database connections are
    closed (the WAL checkpointed and its files removed, as before) and the standard streams flushed. The CLI starts
    no threads and registers no exit handlers; a supervisor it forked is its own process."""
    store = sys.modules.get(__name__.rpartition(".")[0] + ".store")
    if store is not None:
        store.close_all()
    _flush_and_exit(code)


def _leave_database_untouched(code: int) -> None:
    """Exit without closing the database: closing the last connection checkpoints the WAL into the database file,
    and a damaged database must be left exactly as it was found."""
    _flush_and_exit(code)


def _flush_and_exit(code: int) -> None:
    """Flush what is still buffered and end the process. An answer that could not be written out (a full disk) is
    not a success; a reader that went away (a closed pipe) has nobody left to tell."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    except (OSError, ValueError) as e:
        code = code or EXIT_ERROR
        try:
            sys.stderr.write("orchesjob: the answer could not be written: %s\n" % e)
        except (OSError, ValueError):
            pass
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(code)


def _no_descriptor(e: BaseException) -> bool:
    """EMFILE, also where it surfaces as an ImportError (a module that could not be opened)."""
    if isinstance(e, OSError):
        return e.errno in (24, 23)  # EMFILE, ENFILE
    return isinstance(e, ImportError) and "Too many open files" in str(e)


def _no_memory(e: BaseException) -> bool:
    """An ImportError of a C extension that could not be mapped (ulimit -v): memory, not a bug."""
    return isinstance(e, ImportError) and ("failed to map segment" in str(e) or "Cannot allocate memory" in str(e))


def _unexpected(e: Exception) -> OrchesjobError:
    store = sys.modules.get(__name__.rpartition(".")[0] + ".store")  # only a command that opened it can fail in it
    if store is not None and isinstance(e, store.DatabaseError):
        from .home import DB_NAME, state_dir

        error: OrchesjobError = store.database_error(e, os.path.join(state_dir(), DB_NAME))
        return error
    if _no_memory(e):
        return OrchesjobError("out of memory (ulimit -v?): %s" % e, error_type="os_error")
    if _no_descriptor(e):
        return OrchesjobError(
            "this process has no file descriptor left (ulimit -n is too low): %s" % e, error_type="os_error"
        )
    if isinstance(e, OSError):
        where = ": %s" % e.filename if e.filename else ""
        return OrchesjobError("%s%s" % (e.strerror or e, where), error_type="os_error")
    if os.environ.get("ORCHESJOB_DEBUG"):
        import traceback

        traceback.print_exc()
    return OrchesjobError("internal error (%s: %s); set ORCHESJOB_DEBUG=1 for details" % (type(e).__name__, e))
