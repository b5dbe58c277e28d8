"""A small parser for the CLI's flag grammar, reading the argument table (arguments.py).

Why not argparse: every call from Airflow starts a fresh interpreter on the host, and importing argparse and
building a dozen sub-parsers cost about as much as the interpreter's own start-up. This parser reads the table,
builds nothing, and raises InvalidArgument (exit 2) for every mistake, with a "did you mean" where one is close.

Grammar: `orchesjob COMMAND [--flag VALUE | --flag=VALUE | --switch]... [ARG] [--] [ARGS...]`. `start` takes the
command to run (everything after the first `--` verbatim); a few commands take one positional argument (a job id or a
prefix of one, a command name, a shell name).
"""

from __future__ import annotations

from .arguments import COMMANDS, MULTI, POSITIONAL, SHORT, SWITCH, VALUE
from .errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


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
        from .contract import CONTRACT_VERSION, VERSION

        raise Help("orchesjob %s, JSON contract %d\n" % (VERSION, CONTRACT_VERSION))
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

        given = request.values(head, spec, takes_command, (SWITCH, VALUE, MULTI), parse)
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
