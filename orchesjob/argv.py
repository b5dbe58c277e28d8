"""The argument table, and a small parser for the CLI's flag grammar.

The table below is the one place where a command's flags, positional argument, value words and help live: the
parser reads it, and so do the help (manual.py), the man page and the shell completion scripts (completion.py), so
none of them can drift from what the parser accepts.

Why not argparse: every call from Airflow starts a fresh interpreter on the host, and importing argparse and
building a dozen sub-parsers cost about as much as the interpreter's own start-up. This parser reads the table,
builds nothing, and raises InvalidArgument (exit 2) for every mistake, with a "did you mean" where one is close.

Grammar: `orchesjob COMMAND [--flag VALUE | --flag=VALUE | --switch]... [ARG] [--] [ARGS...]`. `start` takes the
command to run (everything after the first `--` verbatim); a few commands take one positional argument (a job id or a
prefix of one, a command name, a shell name).
"""

from __future__ import annotations

from .errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

SWITCH, VALUE, MULTI = "switch", "value", "multi"

STATUSES = ("STARTING", "RUNNING", "SUCCEEDED", "FAILED", "LOST", "CANCELLED", "ABORTED")
SHELLS = ("bash", "zsh", "fish")

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
            "--grace-seconds": (VALUE, "SECS", "SIGTERM to SIGKILL (default 5)"),
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
            "--start-timeout": (VALUE, "SECS", "seconds to wait for the command to be running (default 10)"),
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


class Help(Exception):
    """Raised for -h/--help; carries the text to print (help is for people, so it is plain text)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class NoCommand(InvalidArgument):
    """A bare `orchesjob`: a person gets the usage (cli.py), a program the usual error object."""


def dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def parse(argv: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """Return (command, values); values has every flag of the command (None / False / [] when absent), its
    positional argument's name (None when absent) and, for start, `command` (the argv to run, possibly empty)."""
    if not argv:
        raise NoCommand("a command is needed: %s (orchesjob help explains them)" % ", ".join(COMMANDS))
    head = argv[0]
    if head in ("-h", "--help"):
        raise Help(usage())
    if head in ("--version", "-V"):
        # one line, as orchesjob 1.1.0 printed it and as people expect of --version; `orchesjob version` is the JSON
        from . import CONTRACT_VERSION, __version__

        raise Help("orchesjob %s, JSON contract %d\n" % (__version__, CONTRACT_VERSION))
    if head not in COMMANDS:
        raise InvalidArgument(
            "unknown command %r%s; the commands are %s" % (head, suggest(head, COMMANDS), ", ".join(COMMANDS))
        )
    _, spec, takes_command = COMMANDS[head]
    if len(argv) > 1 and argv[1] in ("--request", "--request=-"):
        if argv[1:] not in (["--request", "-"], ["--request=-"]):
            raise InvalidArgument(
                "%s: --request - reads the whole request from standard input; give no other arguments" % head
            )
        from . import request

        given = request.values(head, spec, takes_command, (SWITCH, VALUE, MULTI))
        if head in POSITIONAL:  # a request names the job by its fields (job_id, run_key), never positionally
            given.setdefault(POSITIONAL[head][1], None)
        return head, given
    values: dict[str, Any] = {}
    for flag, (kind, _, _) in spec.items():
        values[dest(flag)] = False if kind == SWITCH else [] if kind == MULTI else None
    positional = POSITIONAL.get(head)
    if positional is not None:
        values[positional[1]] = None
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
            if takes_command:
                rest.extend(argv[i - 1 :])  # the command to run starts here; its own flags are its own
                break
            if positional is None or values[positional[1]] is not None:
                raise InvalidArgument("%s: unexpected argument %r" % (head, tok))
            values[positional[1]] = tok
            continue
        name, eq, inline = tok.partition("=")
        name = SHORT.get(head, {}).get(name, name)
        if name not in spec:
            raise InvalidArgument(
                "%s: unknown option %s%s (see orchesjob %s --help)" % (head, name, _elsewhere(head, name), head)
            )
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
    elif rest:
        raise InvalidArgument("%s: unexpected argument %r after --" % (head, rest[0]))
    return head, values


def _elsewhere(command: str, flag: str) -> str:
    """A hint for an option this command does not have: the close spelling it has, or the commands that have it."""
    hint = suggest(flag, list(COMMANDS[command][1]) + list(SHORT.get(command, {})))
    if hint:
        return hint
    owners = [name for name, (_, spec, _) in COMMANDS.items() if flag in spec]
    return " (an option of %s)" % ", ".join(owners) if owners else ""


# -- "did you mean" -------------------------------------------------------------------------------------------------
def suggest(word: str, candidates: Sequence[str] | dict[str, Any]) -> str:
    """`; did you mean X?` naming the candidates close to `word` (a typo, a swap, a start of it), or ""."""
    close = [c for c in candidates if _close(word, c)]
    if not close:
        return ""
    return "; did you mean %s?" % " or ".join(close[:3])


def _close(word: str, candidate: str) -> bool:
    if word == candidate:
        return False
    bare = word.lstrip("-")
    if len(bare) >= 3 and candidate.lstrip("-").startswith(bare):
        return True
    allowed = 1 if len(candidate) <= 5 else 2
    return distance(word, candidate, allowed) <= allowed


def distance(a: str, b: str, limit: int) -> int:
    """Edit distance with adjacent swaps counted as one edit (optimal string alignment); anything above `limit`
    is reported as limit + 1 (the rows are cut short: the words here are short)."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return min(prev[-1], limit + 1)


def usage(command: str | None = None) -> str:
    """The help of orchesjob or of one command (manual.py writes it from the table above)."""
    from .manual import help_text

    return help_text(command)
