"""A small declarative argv parser for the CLI's flag grammar.

Why not argparse: every call from Airflow starts a fresh interpreter on the host, and importing argparse and
building nine sub-parsers cost about as much as the interpreter's own start-up. This parser reads one table,
builds nothing, and raises InvalidArgument (exit 2, as JSON) for every mistake instead of printing usage.

Grammar: `orchesjob COMMAND [--flag VALUE | --flag=VALUE | --switch]... [--] [ARGS...]`. Only `start` takes
positional arguments (the command to run); everything after the first `--` is taken verbatim.
"""

from __future__ import annotations

from .errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

SWITCH, VALUE, MULTI = "switch", "value", "multi"

# command -> (summary, {flag: (kind, metavar, help)}, takes the command to run)
COMMANDS: dict[str, tuple[str, dict[str, tuple[str, str, str]], bool]] = {
    "start": (
        "start a job, or return the one that answers for the run key",
        {
            "--run-key": (VALUE, "KEY", "the idempotency key (required)"),
            "--sync": (SWITCH, "", "wait until the job ends"),
            "--strict": (SWITCH, "", "one execution per run key, ever (see unlock)"),
            "--reuse-success": (
                SWITCH,
                "",
                "also return the latest job when it SUCCEEDED; start anew only after a failure",
            ),
            "--start-timeout": (VALUE, "SECS", "seconds to wait for the command to be running (default 10)"),
            "--cwd": (VALUE, "DIR", "working directory of the command"),
            "--env": (MULTI, "KEY=VALUE", "a variable for the command (repeatable)"),
            "--timeout": (VALUE, "SECS", "abort the job after this many seconds"),
            "--request-id": (
                VALUE,
                "ID",
                "the caller's id for this request: a repeat returns the job it answered with",
            ),
            "--adopt-mismatch": (
                SWITCH,
                "",
                "with --request-id: take ownership of a returned job even when its parameters differ",
            ),
        },
        True,
    ),
    "status": (
        "the latest job of a run key, one job, or all active jobs",
        {
            "--run-key": (VALUE, "KEY", "the latest attempt of this run key"),
            "--job-id": (VALUE, "ID", "one job"),
            "--running": (SWITCH, "", "all STARTING and RUNNING jobs"),
            "--all": (SWITCH, "", "with --run-key: every attempt, newest first"),
        },
        False,
    ),
    "wait": (
        "block until a job ends (or --timeout passes), then print it",
        {
            "--run-key": (VALUE, "KEY", "the latest attempt of this run key"),
            "--job-id": (VALUE, "ID", "one job"),
            "--timeout": (VALUE, "SECS", "longest wait in seconds (default 30)"),
            "--stdout-offset": (VALUE, "BYTES", "also return when stdout grows past BYTES, with the new part"),
            "--stderr-offset": (VALUE, "BYTES", "also return when stderr grows past BYTES, with the new part"),
            "--max-bytes": (VALUE, "BYTES", "most log bytes per stream (default 65536)"),
            "--watch": (
                MULTI,
                "ID[:OUT:ERR[:DONE_OUT:DONE_ERR:CURSOR]]",
                "watch this job (repeatable; instead of --run-key/--job-id): return when any has news",
            ),
            "--max-total-bytes": (VALUE, "BYTES", "with --watch: most log bytes in all (default 1 MiB), shared fairly"),
            "--wake-on-eof": (SWITCH, "", "with --watch: also answer at once when stdin ends (the caller hung up)"),
            "--gather": (
                VALUE,
                "SECS",
                "with --watch: when the news is only new output, collect more for up to SECS (an end answers at once)",
            ),
        },
        False,
    ),
    "logs": (
        "print a job's stdout or stderr",
        {
            "--run-key": (VALUE, "KEY", "the latest attempt of this run key"),
            "--job-id": (VALUE, "ID", "one job"),
            "--stream": (VALUE, "stdout|stderr", "which log (default stdout)"),
            "--offset": (VALUE, "BYTES", "start at this byte offset"),
            "--limit": (VALUE, "BYTES", "print at most this many bytes"),
            "--tail": (VALUE, "LINES", "print only the last LINES lines"),
            "--json": (SWITCH, "", "print a JSON chunk with offsets instead of raw bytes"),
            "--follow": (SWITCH, "", "print the log as it grows until the job ends; exit 0 if it SUCCEEDED, else 6"),
        },
        False,
    ),
    "abort": (
        "stop a running job (SIGTERM, then SIGKILL after the grace period)",
        {
            "--run-key": (VALUE, "KEY", "the latest attempt of this run key"),
            "--job-id": (VALUE, "ID", "one job"),
            "--reason": (VALUE, "TEXT", "why (kept in the job record)"),
            "--grace-seconds": (VALUE, "SECS", "SIGTERM to SIGKILL (default 5)"),
            "--if-owner": (VALUE, "ID", "abort only if the job's owner is this request id (exit 4 otherwise)"),
            "--assume-dead": (
                SWITCH,
                "",
                "close a job whose liveness is unknown without signalling anything (you checked that it is gone)",
            ),
        },
        False,
    ),
    "rerun": (
        "start a new execution of a finished job",
        {
            "--run-key": (VALUE, "KEY", "the latest attempt of this run key"),
            "--job-id": (VALUE, "ID", "one job"),
            "--sync": (SWITCH, "", "wait until the new job ends"),
            "--reason": (VALUE, "TEXT", "why (kept in the new job record)"),
            "--start-timeout": (VALUE, "SECS", "seconds to wait for the command to be running (default 10)"),
        },
        False,
    ),
    "unlock": (
        "allow one more execution of a finished strict run key",
        {
            "--run-key": (VALUE, "KEY", "the run key (required)"),
            "--reason": (VALUE, "TEXT", "why (kept with the next job)"),
            "--ttl": (VALUE, "DURATION", "the override expires after this (90, 30m, 2h, 1d)"),
        },
        False,
    ),
    "clean": (
        "delete finished jobs and their logs",
        {
            "--before": (VALUE, "DATETIME", "finished before this (ISO 8601; local time without an offset)"),
            "--after": (VALUE, "DATETIME", "finished at or after this"),
            "--all": (SWITCH, "", "every finished job"),
            "--job-id": (VALUE, "ID", "one finished job"),
            "--run-key": (VALUE, "KEY", "only this run key (with --before, --after or --all)"),
            "--dry-run": (SWITCH, "", "show what would be deleted"),
        },
        False,
    ),
    "ls": (
        "list jobs as a table for people: the running ones, the latest, or a run key's",
        {
            "--last": (VALUE, "N", "the latest N jobs by start time instead of the running ones"),
            "--run-key": (VALUE, "KEY", "the attempts of this run key, newest first (with --last: the latest N)"),
            "--json": (SWITCH, "", "the same rows as JSON"),
        },
        False,
    ),
    "doctor": (
        "check the state directory, database, jobs and logs; say what to do",
        {
            "--fix": (SWITCH, "", "apply the fixes that cannot lose anything, and report each"),
            "--format": (VALUE, "auto|json|text", "JSON, or a summary for people (default: text on a terminal)"),
        },
        False,
    ),
    "metrics": (
        "print the jobs' state in the Prometheus text format (textfile collector)",
        {
            "--recent-hours": (
                VALUE,
                "HOURS",
                "per-key series for keys with a job finished this recently (default 24)",
            ),
            "--max-keys": (VALUE, "N", "at most N run keys get per-key series (default 500)"),
        },
        False,
    ),
    "version": ("print the version and the JSON contract number", {}, False),
}

# short forms: command -> {short: long}
SHORT: dict[str, dict[str, str]] = {"logs": {"-f": "--follow"}}


class Help(Exception):
    """Raised for -h/--help; carries the text to print (help is for people, so it is plain text)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def parse(argv: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """Return (command, values); values has every flag of the command (None / False / [] when absent) and, for
    start, `command` (the argv to run, possibly empty)."""
    if not argv:
        raise InvalidArgument("a command is needed: %s" % ", ".join(COMMANDS))
    head = argv[0]
    if head in ("-h", "--help", "help"):
        raise Help(usage())
    if head in ("--version", "-V"):
        return "version", {}
    if head not in COMMANDS:
        raise InvalidArgument("unknown command %r; the commands are %s" % (head, ", ".join(COMMANDS)))
    _, spec, takes_command = COMMANDS[head]
    if len(argv) > 1 and argv[1] in ("--request", "--request=-"):
        if argv[1:] not in (["--request", "-"], ["--request=-"]):
            raise InvalidArgument(
                "%s: --request - reads the whole request from standard input; give no other arguments" % head
            )
        from . import request

        return head, request.values(head, spec, takes_command, (SWITCH, VALUE, MULTI))
    values: dict[str, Any] = {}
    for flag, (kind, _, _) in spec.items():
        values[dest(flag)] = False if kind == SWITCH else [] if kind == MULTI else None
    rest: list[str] = []
    seen = set()
    i, n = 1, len(argv)
    while i < n:
        tok = argv[i]
        i += 1
        if tok == "--":
            rest.extend(argv[i:])
            break
        if tok in ("-h", "--help"):
            raise Help(usage(head))
        if not tok.startswith("-") or tok == "-":
            if not takes_command:
                raise InvalidArgument("%s: unexpected argument %r" % (head, tok))
            rest.extend(argv[i - 1 :])  # the command to run starts here; its own flags are its own
            break
        name, eq, inline = tok.partition("=")
        name = SHORT.get(head, {}).get(name, name)
        if name not in spec:
            raise InvalidArgument("%s: unknown option %s (see orchesjob %s --help)" % (head, name, head))
        kind = spec[name][0]
        if kind == SWITCH:
            if eq:
                raise InvalidArgument("%s: %s takes no value" % (head, name))
            value: Any = True
        elif eq:
            value = inline
        else:
            if i >= n or argv[i].startswith("--"):
                raise InvalidArgument(
                    "%s: %s needs a value (%s %s; use %s=VALUE for a value starting with --)"
                    % (head, name, name, spec[name][1], name)
                )
            value = argv[i]
            i += 1
        key = dest(name)
        if kind == MULTI:
            values[key].append(value)
            continue
        if name in seen:
            raise InvalidArgument("%s: %s is given more than once" % (head, name))
        seen.add(name)
        values[key] = value
    if takes_command:
        values["command"] = rest
    return head, values


def usage(command: str | None = None) -> str:
    if command is None:
        lines = [
            "usage: orchesjob COMMAND [OPTIONS]",
            "",
            "Run a command exactly once per run key, as a detached job. Every command prints JSON,",
            "except what is for people or other formats: logs, ls, metrics, doctor on a terminal.",
            "",
            "commands:",
        ]
        lines += ["  %-9s %s" % (name, COMMANDS[name][0]) for name in COMMANDS]
        lines += [
            "",
            "orchesjob COMMAND --help shows a command's options.",
            "orchesjob COMMAND --request - reads them from stdin instead, as one JSON object on one line.",
        ]
        return "\n".join(lines) + "\n"
    summary, spec, takes_command = COMMANDS[command]
    lines = [
        "usage: orchesjob %s [OPTIONS]%s" % (command, " [--] COMMAND [ARGS...]" if takes_command else ""),
        "",
        summary,
        "",
    ]
    short = {long: s for s, long in SHORT.get(command, {}).items()}
    for flag, (kind, metavar, text) in spec.items():
        left = flag if kind == SWITCH else "%s %s" % (flag, metavar)
        if flag in short:
            left = "%s, %s" % (short[flag], left)
        lines.append("  %-28s %s" % (left, text))
    return "\n".join(lines) + "\n"
