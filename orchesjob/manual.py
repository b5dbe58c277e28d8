"""The help and the man page, written from the argument table (arguments.py) plus the prose that is not about one flag:
examples, environment variables, exit statuses, files.

Loaded only by `--help`, `orchesjob help` and `orchesjob help --man`: the table itself stays small for the calls
that parse it on every start-up. The man page is the same text as roff (man(7) macros), so `orchesjob help --man |
man -l -` reads on any host that has man, and the packaged orchesjob.1 is this output (a test compares them).
"""

from __future__ import annotations

from .arguments import COMMANDS, POSITIONAL, SHORT, SWITCH
from .contract import VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

DESCRIPTION = (
    "Run a command exactly once per run key, as a detached, supervised job, and answer in JSON. A second start "
    "with the same run key returns the job that is already running; status, wait, logs and abort find it again by "
    "its run key or its job id."
)
OUTPUT = (
    "Every command answers in JSON when its output is not a terminal (the Airflow provider and scripts read it). "
    "For people there are views: ls prints a table, logs the log itself, doctor a report on a terminal, clean a "
    "summary on a terminal; --format table asks any command for its view, --format json for JSON. On a terminal an "
    "error is one line on stderr; otherwise it is also a JSON object on stdout."
)

# (name, meaning)
ENVIRONMENT: tuple[tuple[str, str], ...] = (
    (
        "ORCHESJOB_HOME",
        (
            "the state directory: the database and the jobs' logs. Without it: /var/lib/orchesjob for root, else "
            "$XDG_STATE_HOME/orchesjob (~/.local/state/orchesjob)"
        ),
    ),
    ("ORCHESJOB_LOCK_TIMEOUT", "seconds to wait for the database's write lock before exit 5 (default 30)"),
    ("NO_COLOR", "set to anything but the empty string: no colour in the views for people"),
    ("COLUMNS", "the width tables fit (default: the terminal's; through a pipe, nothing is cut)"),
    ("ORCHESJOB_DEBUG", "set: an internal error also prints its traceback on stderr"),
)

# (code, meaning)
EXIT_STATUS: tuple[tuple[str, str], ...] = (
    ("0", "done (a job that FAILED is still exit 0: its result is in the answer)"),
    ("1", "any other failure: the state directory or the database cannot be used; doctor: findings"),
    ("2", "bad arguments or values; nothing was done"),
    ("3", "no such job or run key"),
    ("4", "the job is not in a state that allows it (abort of a finished job, rerun of an active one)"),
    ("5", "the database stayed locked longer than ORCHESJOB_LOCK_TIMEOUT"),
    ("6", "logs --follow: the followed job ended without succeeding"),
    ("130", "logs --follow, ls --watch: ended by Ctrl-C"),
)

FILES: tuple[tuple[str, str], ...] = (
    ("$ORCHESJOB_HOME/orchesjob.db", "the jobs and run keys (SQLite, WAL)"),
    ("$ORCHESJOB_HOME/logs/JOB.stdout, JOB.stderr", "each job's output"),
)

# command (None: the whole program) -> (command line, what it does)
EXAMPLES: dict[str | None, tuple[tuple[str, str], ...]] = {
    None: (
        ("orchesjob start --run-key nightly -- ./backup.sh", "start a job; the same call again returns it"),
        ("orchesjob ls", "the running jobs"),
        ("orchesjob logs -f 7d5379ff", "follow a job's output until it ends"),
        ("orchesjob help start", "how start works"),
    ),
    "start": (
        ("orchesjob start --run-key nightly -- sh -c 'echo backing up; sleep 20'", "start it, or get the running one"),
        ("orchesjob start --run-key import-2026-05-02 --reuse-success --sync -- ./import.sh", "what a retry wants"),
        ("orchesjob start --run-key k --timeout 3600 --env MODE=full -- ./run", "abort it after an hour"),
    ),
    "status": (
        ("orchesjob status --run-key nightly", "the latest attempt of the key"),
        ("orchesjob status 7d5379ff --format table", "one job by a prefix of its id, for people"),
        ("orchesjob status --running", "every active job, as JSON"),
    ),
    "wait": (
        ("orchesjob wait --run-key nightly --timeout 600", "block until it ends (at most 10 minutes)"),
        ("orchesjob wait 7d5379ff --stdout-offset 0", "also return as soon as its stdout has news"),
    ),
    "logs": (
        ("orchesjob logs -f --run-key nightly", "follow the latest attempt (and the next ones) until the end"),
        ("orchesjob logs 7d5379ff --stream stderr --tail 20", "the last 20 lines of a job's stderr"),
        ("orchesjob logs --run-key nightly --attempt 1", "the log of an earlier attempt"),
    ),
    "abort": (
        ("orchesjob abort --run-key nightly --reason 'wrong input'", "stop the key's running job"),
        ("orchesjob abort 7d5379ff --grace-seconds 30", "SIGTERM, and SIGKILL 30 s later"),
    ),
    "rerun": (("orchesjob rerun --run-key nightly --reason 'data fixed' --sync", "run a finished job again"),),
    "unlock": (("orchesjob unlock --run-key import-2026-05-02 --reason 'data fix' --ttl 2h", "allow one more run"),),
    "clean": (
        ("orchesjob clean --before \"$(date -d '30 days ago' -Iseconds)\" --dry-run", "what a retention clean takes"),
        ("orchesjob clean --before 2026-01-01 --summary", "delete, answer with the counts"),
    ),
    "ls": (
        ("orchesjob ls --watch", "the running jobs, refreshed every 2 seconds"),
        ("orchesjob ls --status FAILED,LOST", "the latest jobs that did not succeed"),
        ("orchesjob ls --run-key-prefix airflow/etl/ --last 50", "the latest jobs of a DAG"),
    ),
    "doctor": (("orchesjob doctor", "is this host's state sound?"), ("orchesjob doctor --fix", "fix what is safe")),
    "metrics": (
        (
            "orchesjob metrics > /var/lib/node_exporter/textfile/orchesjob.prom.tmp",
            "for node_exporter's textfile collector (then rename it into place)",
        ),
    ),
    "version": (("orchesjob version", "the version, the JSON contract, the Python and the code's path"),),
    "help": (("orchesjob help logs", "the help of logs"), ("orchesjob help --man | man -l -", "the manual")),
    "completion": (
        ("source <(orchesjob completion bash)", "bash, for this shell"),
        ('orchesjob completion zsh > "${fpath[1]}/_orchesjob"', "zsh"),
        ("orchesjob completion fish > ~/.config/fish/completions/orchesjob.fish", "fish"),
    ),
}

_WIDTH = 30  # the column where help texts start


def synopsis(command: str) -> str:
    """`orchesjob COMMAND [OPTIONS] [ARG]`, as the usage line and the man page's SYNOPSIS show it."""
    _, spec, takes_command = COMMANDS[command]
    parts = ["orchesjob", command]
    if spec:
        parts.append("[OPTIONS]")
    if command in POSITIONAL:
        parts.append("[%s]" % POSITIONAL[command][0])
    if takes_command:
        parts.append("[--] COMMAND [ARGS...]")
    return " ".join(parts)


def options(command: str) -> list[tuple[str, str]]:
    """(left column, help) of each option of `command`, the short form first where there is one."""
    _, spec, _ = COMMANDS[command]
    short = {long: s for s, long in SHORT.get(command, {}).items()}
    rows = []
    for flag, (kind, metavar, text) in spec.items():
        left = flag if kind == SWITCH else "%s %s" % (flag, metavar)
        if flag in short:
            left = "%s, %s" % (short[flag], left)
        rows.append((left, text))
    rows.append(("-h, --help", "this help"))
    return rows


def _rows(rows: Iterable[tuple[str, str]], indent: str = "  ") -> list[str]:
    out = []
    for left, text in rows:
        if len(left) >= _WIDTH - len(indent):
            out.append(indent + left)
            out.append(" " * _WIDTH + text)
        else:
            out.append("%s%-*s%s" % (indent, _WIDTH - len(indent), left, text))
    return out


def help_text(command: str | None = None) -> str:
    """The plain-text help: of the program (commands, environment, exit status) or of one command (its options and
    examples). Always begins with `usage: orchesjob`."""
    if command is None:
        lines = ["usage: orchesjob COMMAND [OPTIONS]", "", DESCRIPTION, "", "commands:"]
        lines += _rows((name, COMMANDS[name][0]) for name in COMMANDS)
        lines += ["", "environment:"]
        lines += _rows(ENVIRONMENT)
        lines += ["", "exit status:"]
        lines += _rows(EXIT_STATUS)
        lines += ["", "examples:"]
        lines += _rows(EXAMPLES[None])
        lines += [
            "",
            "orchesjob help COMMAND (or orchesjob COMMAND --help) shows a command's options.",
            "orchesjob COMMAND --request - reads them from stdin instead, as one JSON object on one line.",
            "orchesjob help --man | man -l - shows the whole manual.",
        ]
        return "\n".join(lines) + "\n"
    summary = COMMANDS[command][0]
    lines = ["usage: %s" % synopsis(command), "", summary, ""]
    if command in POSITIONAL:
        metavar, _, text = POSITIONAL[command]
        lines += ["arguments:"] + _rows([(metavar, text)]) + [""]
    lines += ["options:"] + _rows(options(command))
    if EXAMPLES.get(command):
        lines += ["", "examples:"] + _rows(EXAMPLES[command])
    return "\n".join(lines) + "\n"


# -- the man page ---------------------------------------------------------------------------------------------------
def _roff(text: str) -> str:
    """Text safe in a roff line: backslashes escaped, dashes as the ASCII minus, no line starting a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    if text[:1] in (".", "'"):
        text = "\\&" + text
    return text


def man_page() -> str:
    """The manual in man(7) roff; the same table and prose as the help."""
    out = [
        '.TH ORCHESJOB 1 "" "orchesjob %s" "User Commands"' % VERSION,
        ".SH NAME",
        "orchesjob \\- run a command exactly once per run key, as a detached, supervised job",
        ".SH SYNOPSIS",
    ]
    for name in COMMANDS:
        out += [".B %s" % _roff(synopsis(name)), ".br"]
    out += [".SH DESCRIPTION", _roff(DESCRIPTION), ".PP", _roff(OUTPUT), ".SH COMMANDS"]
    for name, (summary, _, _) in COMMANDS.items():
        out += [".SS %s" % _roff(synopsis(name)), _roff(summary[:1].upper() + summary[1:] + ".")]
        if name in POSITIONAL:
            metavar, _, text = POSITIONAL[name]
            out += [".TP", ".I %s" % _roff(metavar), _roff(text)]
        for left, text in options(name)[:-1]:
            out += [".TP", ".B %s" % _roff(left), _roff(text)]
        for line, what in EXAMPLES.get(name, ()):
            out += [".TP", ".B %s" % _roff(line), _roff(what)]
    out.append(".SH ENVIRONMENT")
    for name, text in ENVIRONMENT:
        out += [".TP", ".B %s" % _roff(name), _roff(text)]
    out.append(".SH EXIT STATUS")
    for code, text in EXIT_STATUS:
        out += [".TP", ".B %s" % code, _roff(text)]
    out.append(".SH FILES")
    for path, text in FILES:
        out += [".TP", ".I %s" % _roff(path), _roff(text)]
    out.append(".SH EXAMPLES")
    for line, what in EXAMPLES[None]:
        out += [".TP", ".B %s" % _roff(line), _roff(what)]
    out += [
        ".SH SEE ALSO",
        "The documentation of orchesjob: %s (the JSON of every answer, exactly-once, the Airflow provider)."
        % _roff(DOCS_URL),
    ]
    return "\n".join(out) + "\n"


# -- the reference page of the docs site ------------------------------------------------------------------------------
DOCS_URL = "https://orchesjob.github.io/orchesjob/"


def _md(text: str) -> str:
    """Text safe in a Markdown table cell."""
    return text.replace("|", "\\|")


def reference_markdown() -> str:
    """docs/cli-reference.md: every command, option, argument, example, variable and exit status, from the same
    table and prose as the help and the man page (tools/cli_reference.py writes it; a test checks it is current)."""
    out = [
        "# CLI reference",
        "",
        "<!-- Generated from the CLI's argument table (orchesjob/arguments.py, orchesjob/manual.py) by",
        "     `python tools/cli_reference.py`; edit those, not this page. -->",
        "",
        DESCRIPTION,
        "",
        OUTPUT,
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    out += ["| [`%s`](#%s) | %s |" % (name, name, _md(summary)) for name, (summary, _, _) in COMMANDS.items()]
    for name, (summary, _, _) in COMMANDS.items():
        out += ["", "## %s" % name, "", summary[:1].upper() + summary[1:] + ".", "", "```", synopsis(name), "```", ""]
        rows = []
        if name in POSITIONAL:
            metavar, _, text = POSITIONAL[name]
            rows.append(("`%s`" % metavar, text))
        rows += [("`%s`" % left, text) for left, text in options(name)[:-1]]
        if rows:
            out += ["| argument or option | meaning |", "|---|---|"]
            out += ["| %s | %s |" % (_md(left), _md(text)) for left, text in rows]
        if EXAMPLES.get(name):
            out += ["", "Examples:", "", "```bash"]
            out += ["%s   # %s" % (line, what) for line, what in EXAMPLES[name]]
            out.append("```")
    out += ["", "## Environment", "", "| variable | meaning |", "|---|---|"]
    out += ["| `%s` | %s |" % (name, _md(text)) for name, text in ENVIRONMENT]
    out += ["", "## Exit status", "", "| code | meaning |", "|---|---|"]
    out += ["| %s | %s |" % (code, _md(text)) for code, text in EXIT_STATUS]
    out += ["", "## Files", "", "| path | what |", "|---|---|"]
    out += ["| `%s` | %s |" % (path, _md(text)) for path, text in FILES]
    return "\n".join(out) + "\n"
