"""The argument table: every command's flags, positional argument, value words and help, in one place.

The parser (argv.py) reads it, and so do the help and the man page (manual.py) and the shell completion scripts
(completion.py), so none of them can drift from what the parser accepts. Defaults that the provider relies on too
come from the JSON contract (contract.py). Data only: nothing here parses or prints.
"""

from __future__ import annotations

from .contract import (
    DEFAULT_ABORT_GRACE,
    DEFAULT_MAX_BYTES,
    DEFAULT_START_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
    STATUSES,
    WATCH_DEFAULT_TOTAL_BYTES,
)

SWITCH, VALUE, MULTI = "switch", "value", "multi"

SHELLS = ("bash", "zsh", "fish")

# Help texts that state a default of the JSON contract (contract.py), in its words.
_START_TIMEOUT_HELP = "seconds to wait for the command to be running (default %g)" % DEFAULT_START_TIMEOUT
_TOTAL_BYTES_HELP = "with --watch: most log bytes in all (default %d MiB), shared fairly" % (
    WATCH_DEFAULT_TOTAL_BYTES >> 20
)

# The output format of the commands that answer in JSON and also have a view for people.
_FORMAT = (VALUE, "json|table", "json (the default), or table: a view for people")
_JOB = ("JOB", "job", "a job id, or a unique prefix of one (at least 4 characters, as ls shows it)")

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
            "--start-timeout": (
                VALUE,
                "SECS",
                _START_TIMEOUT_HELP,
            ),
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
            "--format": _FORMAT,
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
            "--format": _FORMAT,
        },
        False,
    ),
    "wait": (
        "block until a job ends (or --timeout passes), then print it",
        {
            "--run-key": (VALUE, "KEY", "the latest attempt of this run key"),
            "--job-id": (VALUE, "ID", "one job"),
            "--timeout": (VALUE, "SECS", "longest wait in seconds (default %g)" % DEFAULT_WAIT_TIMEOUT),
            "--stdout-offset": (VALUE, "BYTES", "also return when stdout grows past BYTES, with the new part"),
            "--stderr-offset": (VALUE, "BYTES", "also return when stderr grows past BYTES, with the new part"),
            "--max-bytes": (VALUE, "BYTES", "most log bytes per stream (default %d)" % DEFAULT_MAX_BYTES),
            "--watch": (
                MULTI,
                "ID[:OUT:ERR[:DONE_OUT:DONE_ERR:CURSOR]]",
                "watch this job (repeatable; instead of --run-key/--job-id): return when any has news",
            ),
            "--max-total-bytes": (
                VALUE,
                "BYTES",
                "with --watch: most log bytes in all (default %d MiB), shared fairly"
                % (WATCH_DEFAULT_TOTAL_BYTES >> 20),
            ),
            "--wake-on-eof": (SWITCH, "", "with --watch: also answer at once when stdin ends (the caller hung up)"),
            "--gather": (
                VALUE,
                "SECS",
                "with --watch: when the news is only new output, collect more for up to SECS (an end answers at once)",
            ),
            "--format": _FORMAT,
        },
        False,
    ),
    "logs": (
        "print a job's stdout or stderr",
        {
            "--run-key": (VALUE, "KEY", "the latest attempt of this run key"),
            "--job-id": (VALUE, "ID", "one job"),
            "--attempt": (VALUE, "N", "with --run-key: attempt N of the key instead of its latest"),
            "--stream": (VALUE, "stdout|stderr", "which log (default stdout)"),
            "--offset": (VALUE, "BYTES", "start at this byte offset"),
            "--limit": (VALUE, "BYTES", "print at most this many bytes"),
            "--tail": (VALUE, "LINES", "print only the last LINES lines"),
            "--follow": (SWITCH, "", "print the log as it grows until the job ends; exit 0 if it SUCCEEDED, else 6"),
            "--format": (VALUE, "table|json", "table (the default): the log itself; json: a chunk with offsets"),
            "--json": (SWITCH, "", "the same as --format json"),
        },
        False,
    ),
    "abort": (
        "stop a running job (SIGTERM, then SIGKILL after the grace period)",
        {
            "--run-key": (VALUE, "KEY", "the latest attempt of this run key"),
            "--job-id": (VALUE, "ID", "one job"),
            "--reason": (VALUE, "TEXT", "why (kept in the job record)"),
            "--grace-seconds": (VALUE, "SECS", "SIGTERM to SIGKILL (default %g)" % DEFAULT_ABORT_GRACE),
            "--if-owner": (VALUE, "ID", "abort only if the job's owner is this request id (exit 4 otherwise)"),
            "--assume-dead": (
                SWITCH,
                "",
                "close a job whose liveness is unknown without signalling anything (you checked that it is gone)",
            ),
            "--format": _FORMAT,
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
            "--start-timeout": (
                VALUE,
                "SECS",
                _START_TIMEOUT_HELP,
            ),
            "--format": _FORMAT,
        },
        False,
    ),
    "unlock": (
        "allow one more execution of a finished strict run key",
        {
            "--run-key": (VALUE, "KEY", "the run key (required)"),
            "--reason": (VALUE, "TEXT", "why (kept with the next job)"),
            "--ttl": (VALUE, "DURATION", "the override expires after this (90, 30m, 2h, 1d)"),
            "--format": _FORMAT,
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
            "--summary": (SWITCH, "", "answer with the counts only, without the list of jobs"),
            "--format": (
                VALUE,
                "auto|json|table",
                "auto (the default): a short summary on a terminal, JSON otherwise",
            ),
        },
        False,
    ),
    "ls": (
        "list jobs as a table for people: the running ones, the latest, or a run key's",
        {
            "--last": (VALUE, "N", "the latest N jobs by start time instead of the running ones"),
            "--run-key": (VALUE, "KEY", "the attempts of this run key, newest first (with --last: the latest N)"),
            "--run-key-prefix": (VALUE, "PREFIX", "jobs whose run key starts with PREFIX, newest first (--last, 20)"),
            "--status": (
                MULTI,
                "STATUS",
                "only jobs in this status (repeatable, or comma-separated); finished ones: the latest --last (20)",
            ),
            "--watch": (SWITCH, "", "refresh the list in place every --interval seconds until Ctrl-C"),
            "--interval": (VALUE, "SECS", "with --watch: seconds between refreshes (default 2)"),
            "--format": (VALUE, "table|json", "table (the default), or json: the same rows"),
            "--json": (SWITCH, "", "the same as --format json"),
        },
        False,
    ),
    "doctor": (
        "check the state directory, database, jobs and logs; say what to do",
        {
            "--fix": (SWITCH, "", "apply the fixes that cannot lose anything, and report each"),
            "--format": (VALUE, "auto|json|table", "auto (the default): a report for people on a terminal, JSON else"),
        },
        False,
    ),
    "metrics": (
        "print the jobs' state in the Prometheus text format (textfile collector)",
        {
            "--recent-hours": (
                VALUE,
                "HOURS",
                "per-family series for families with a job finished this recently (default 24)",
            ),
            "--max-families": (VALUE, "N", "at most N job families get per-family series (default 500)"),
            "--max-keys": (VALUE, "N", "the former name of --max-families"),
            "--family-depth": (
                VALUE,
                "N",
                "a run key's family is its first N '/'-separated parts (default 1; airflow/ keys: dag and task)",
            ),
        },
        False,
    ),
    "version": ("print the version and the JSON contract number", {}, False),
    "help": (
        "show how to use orchesjob or one of its commands",
        {"--man": (SWITCH, "", "print the whole manual as a man page (roff): orchesjob help --man | man -l -")},
        False,
    ),
    "completion": ("print the shell completion script for bash, zsh or fish", {}, False),
}

# command -> (metavar, value name, help) of its one positional argument
POSITIONAL: dict[str, tuple[str, str, str]] = {
    "status": _JOB,
    "wait": _JOB,
    "logs": _JOB,
    "abort": _JOB,
    "help": ("COMMAND", "topic", "the command to explain"),
    "completion": ("SHELL", "shell", "bash, zsh or fish"),
}

# short forms: command -> {short: long}
SHORT: dict[str, dict[str, str]] = {"logs": {"-f": "--follow"}, "ls": {"-w": "--watch"}}


def words(metavar: str) -> tuple[str, ...]:
    """The values a flag or argument can take, from its metavar (empty when any value goes): `a|b` lists them."""
    if metavar == "STATUS":
        return STATUSES
    if metavar == "SHELL":
        return SHELLS
    if metavar == "COMMAND":
        return tuple(COMMANDS)
    if "|" in metavar and metavar.islower():
        return tuple(metavar.split("|"))
    return ()
