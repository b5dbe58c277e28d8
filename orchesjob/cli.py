"""The command line edge: argv in, JSON out, exit code from errors.py.

This is the only module that knows about argv. It validates every value into plain Python types (so the commands
get nothing they must second-guess), calls one function in commands.py, and prints its result. Every failure,
including a bug, leaves as one JSON object on stdout and one `orchesjob: ...` line on stderr, never a traceback.
"""

import argparse
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

from .errors import EXIT_ERROR, EXIT_OK, InvalidArgument, OrchesjobError

MAX_RUN_KEY = 256
MAX_TEXT = 4096
MAX_CHUNK = 16 << 20


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so its errors become JSON too."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InvalidArgument("%s: %s" % (self.prog, message))


# -- value rules (one place each) ---------------------------------------------------------------------------------
def run_key(value: Optional[str]) -> Optional[str]:
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


def job_id(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    if not value or len(value) > 64 or not value.isprintable():
        raise InvalidArgument("--job-id %r is not a job id" % value)
    return value


def text(value: Optional[str], flag: str) -> Optional[str]:
    if value is None:
        return None
    if len(value) > MAX_TEXT:
        raise InvalidArgument("%s is %d characters long; at most %d are allowed" % (flag, len(value), MAX_TEXT))
    if "\0" in value:
        raise InvalidArgument("%s contains a NUL character" % flag)
    return value


def count(value: Optional[str], flag: str, minimum: int = 0, maximum: Optional[int] = None) -> Optional[int]:
    if value is None:
        return None
    try:
        n = int(value)
    except ValueError:
        raise InvalidArgument("%s: %r is not a whole number" % (flag, value)) from None
    if n < minimum:
        raise InvalidArgument("%s must be at least %d (got %d)" % (flag, minimum, n))
    if maximum is not None and n > maximum:
        raise InvalidArgument("%s must be at most %d (got %d)" % (flag, maximum, n))
    return n


def seconds(value: Optional[str], flag: str, allow_zero: bool = True) -> Optional[float]:
    if value is None:
        return None
    from .timeutil import parse_seconds

    return parse_seconds(value, flag, allow_zero)


def env_pairs(values: Optional[List[str]]) -> Dict[str, str]:
    env: Dict[str, str] = {}
    for item in values or []:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise InvalidArgument("--env %r must look like KEY=VALUE" % item)
        if "\0" in item:
            raise InvalidArgument("--env %r contains a NUL character" % item)
        env[key] = val
    return env


def command_argv(cmd: Sequence[str]) -> List[str]:
    if not cmd:
        raise InvalidArgument("start needs a command to run, after --: orchesjob start --run-key KEY -- COMMAND [ARGS...]")
    if not cmd[0]:
        raise InvalidArgument("the command must not be an empty string")
    return list(cmd)


# -- parser ---------------------------------------------------------------------------------------------------------
def _target(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--run-key", metavar="KEY", help="the run key (its latest job)")
    g.add_argument("--job-id", metavar="ID", help="one job by id")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    top = _Parser(prog="orchesjob", description="Run a command exactly once per run key, as a detached job.")
    top.add_argument("--version", action="store_true", help="print the version as JSON")
    sub = top.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("start", help="start a job, or return the one that answers for the run key")
    p.add_argument("--run-key", required=True, metavar="KEY")
    p.add_argument("--sync", action="store_true", help="wait until the job ends")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--strict", action="store_true", help="one execution per run key, ever (see unlock)")
    mode.add_argument("--reuse-success", action="store_true",
                      help="also return the latest job when it SUCCEEDED; start anew only after a failure")
    p.add_argument("--start-timeout", metavar="SECS", help="seconds to wait for the target to start (default 10)")
    p.add_argument("--cwd", metavar="DIR", help="working directory of the command")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="set a variable for the command (repeatable)")
    p.add_argument("--timeout", metavar="SECS", help="abort the job after this many seconds")
    p.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments, after --")

    p = sub.add_parser("status", help="the latest job of a run key, one job, or all active jobs")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--run-key", metavar="KEY")
    g.add_argument("--job-id", metavar="ID")
    g.add_argument("--running", action="store_true", help="all STARTING and RUNNING jobs")
    p.add_argument("--all", action="store_true", help="every attempt of the run key, newest first")

    p = sub.add_parser("wait", help="block until a job ends (or --timeout passes), then print it")
    _target(p)
    p.add_argument("--timeout", metavar="SECS", default="30", help="longest wait in seconds (default 30)")
    p.add_argument("--stdout-offset", metavar="BYTES", help="also return when stdout grows past BYTES, with the new part")
    p.add_argument("--stderr-offset", metavar="BYTES", help="also return when stderr grows past BYTES, with the new part")
    p.add_argument("--max-bytes", metavar="BYTES", default="65536", help="most log bytes per stream (default 65536)")

    p = sub.add_parser("logs", help="print a job's stdout or stderr")
    _target(p)
    p.add_argument("--stream", choices=("stdout", "stderr"), default="stdout")
    p.add_argument("--offset", metavar="BYTES", help="start at this byte offset")
    p.add_argument("--limit", metavar="BYTES", help="print at most this many bytes")
    p.add_argument("--tail", metavar="LINES", help="print only the last LINES lines")
    p.add_argument("--json", action="store_true", help="print a JSON chunk with offsets instead of raw bytes")

    p = sub.add_parser("abort", help="stop a running job (SIGTERM, then SIGKILL after the grace period)")
    _target(p)
    p.add_argument("--reason", metavar="TEXT")
    p.add_argument("--grace-seconds", metavar="SECS", default="5")

    p = sub.add_parser("rerun", help="start a new execution of a finished job")
    _target(p)
    p.add_argument("--sync", action="store_true")
    p.add_argument("--reason", metavar="TEXT")
    p.add_argument("--start-timeout", metavar="SECS")

    p = sub.add_parser("unlock", help="allow one more execution of a finished strict run key")
    p.add_argument("--run-key", required=True, metavar="KEY")
    p.add_argument("--reason", metavar="TEXT")
    p.add_argument("--ttl", metavar="DURATION", help="the override expires after this (e.g. 90, 30m, 2h, 1d)")

    p = sub.add_parser("clean", help="delete finished jobs and their logs")
    p.add_argument("--before", metavar="DATETIME")
    p.add_argument("--after", metavar="DATETIME")
    p.add_argument("--all", action="store_true")
    p.add_argument("--job-id", metavar="ID")
    p.add_argument("--run-key", metavar="KEY")
    p.add_argument("--dry-run", action="store_true")

    sub.add_parser("version", help="print the version and JSON contract number")
    top.epilog = "orchesjob %s" % __version__
    return top


# -- dispatch -------------------------------------------------------------------------------------------------------
def _split_command(argv: List[str]) -> "tuple[List[str], Optional[List[str]]]":
    """For start, everything after the first `--` is the command, verbatim (it may contain -- itself)."""
    if argv and argv[0] == "start" and "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, None


def dispatch(argv: List[str]) -> Any:
    from . import commands

    head, cmd = _split_command(argv)
    a = build_parser().parse_args(head)
    if a.version or a.cmd == "version":
        return commands.version()
    if a.cmd is None:
        raise InvalidArgument("a command is needed: start, status, wait, logs, abort, rerun, unlock, clean or version")
    c = a.cmd
    if c == "start":
        if cmd is None:
            cmd = a.command
        elif a.command:
            raise InvalidArgument("unexpected arguments before --: %s" % " ".join(a.command))
        start_timeout = seconds(a.start_timeout, "--start-timeout")
        return commands.start(
            run_key(a.run_key), command_argv(cmd), sync=a.sync, strict=a.strict, reuse_success=a.reuse_success,
            start_timeout=commands.DEFAULT_START_TIMEOUT if start_timeout is None else start_timeout,
            cwd=os.path.abspath(text(a.cwd, "--cwd")) if a.cwd else None, env=env_pairs(a.env),
            timeout=seconds(a.timeout, "--timeout", allow_zero=False),
        )
    if c == "status":
        if a.all and not a.run_key:
            raise InvalidArgument("status --all needs --run-key")
        return commands.status(run_key(a.run_key), job_id(a.job_id), a.running, a.all)
    if c == "wait":
        return commands.wait(
            run_key(a.run_key), job_id(a.job_id), seconds(a.timeout, "--timeout"),
            count(a.stdout_offset, "--stdout-offset"), count(a.stderr_offset, "--stderr-offset"),
            count(a.max_bytes, "--max-bytes", 1, MAX_CHUNK),
        )
    if c == "logs":
        if a.tail is not None and (a.offset is not None or a.limit is not None):
            raise InvalidArgument("logs --tail cannot be combined with --offset or --limit")
        return commands.logs(
            run_key(a.run_key), job_id(a.job_id), a.stream, count(a.offset, "--offset"),
            count(a.limit, "--limit", 0), count(a.tail, "--tail"), a.json,
        )
    if c == "abort":
        return commands.abort(run_key(a.run_key), job_id(a.job_id), text(a.reason, "--reason"),
                              seconds(a.grace_seconds, "--grace-seconds"))
    if c == "rerun":
        start_timeout = seconds(a.start_timeout, "--start-timeout")
        return commands.rerun(
            run_key(a.run_key), job_id(a.job_id), sync=a.sync, reason=text(a.reason, "--reason"),
            start_timeout=commands.DEFAULT_START_TIMEOUT if start_timeout is None else start_timeout,
        )
    if c == "unlock":
        from .timeutil import parse_duration

        ttl = parse_duration(a.ttl, "--ttl", allow_zero=False) if a.ttl is not None else None
        return commands.unlock(run_key(a.run_key), text(a.reason, "--reason"), ttl)
    if c == "clean":
        return _clean(a)
    raise InvalidArgument("unknown command %r" % c)  # pragma: no cover - argparse rejects it first


def _clean(a: argparse.Namespace) -> Any:
    from . import commands
    from .timeutil import parse_datetime

    ranged = a.before is not None or a.after is not None
    if a.job_id is not None and (ranged or a.all or a.run_key is not None):
        raise InvalidArgument("clean --job-id cannot be combined with other selection options")
    if a.all and ranged:
        raise InvalidArgument("clean --all cannot be combined with --before or --after")
    if a.job_id is None and not a.all and not ranged:
        raise InvalidArgument("clean needs --before, --after, --all or --job-id")
    before = parse_datetime(a.before, "--before") if a.before is not None else None
    after = parse_datetime(a.after, "--after") if a.after is not None else None
    if before is not None and after is not None and after >= before:
        raise InvalidArgument("clean --after must be earlier than --before")
    return commands.clean(before, after, a.all, job_id(a.job_id), run_key(a.run_key), a.dry_run)


def _emit_error(err: OrchesjobError) -> int:
    _write_json(err.to_json())
    try:
        sys.stderr.write("orchesjob: %s\n" % err.message.replace("\n", " "))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return err.exit_code


def _write_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console entry point; exits with the documented code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = dispatch(args)
        if isinstance(result, bytes):
            sys.stdout.buffer.write(result)
            sys.stdout.flush()
        else:
            _write_json(result)
        code = EXIT_OK
    except OrchesjobError as e:
        code = _emit_error(e)
    except BrokenPipeError:
        # the reader went away (e.g. `orchesjob logs ... | head`); nothing to report to it
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        code = EXIT_OK
    except KeyboardInterrupt:
        code = _emit_error(OrchesjobError("interrupted", error_type="interrupted"))
    except Exception as e:  # a bug or an environment we did not foresee: still one JSON object, no traceback
        code = _emit_error(_unexpected(e))
    sys.exit(code)


def _unexpected(e: Exception) -> OrchesjobError:
    import sqlite3

    if isinstance(e, sqlite3.DatabaseError):
        from .home import DB_NAME, state_dir
        from .store import database_error

        return database_error(e, os.path.join(state_dir(), DB_NAME))
    if isinstance(e, OSError):
        return OrchesjobError("%s%s" % (e.strerror or e, ": %s" % e.filename if e.filename else ""), error_type="os_error")
    if os.environ.get("ORCHESJOB_DEBUG"):
        import traceback

        traceback.print_exc()
    return OrchesjobError("internal error (%s: %s); set ORCHESJOB_DEBUG=1 for details" % (type(e).__name__, e))
