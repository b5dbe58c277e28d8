"""`orchesjob COMMAND --request -`: the whole request as one JSON object on standard input.

Why: a command line is parsed by whatever login shell a host gives the SSH user (sh, bash, zsh, fish, tcsh, csh:
each quotes differently) and is shown by `ps` to every user of the host for as long as the process runs. A request
on standard input is read by this program alone. So a caller (the Airflow provider) puts only the interpreter, the
CLI's path, the command name and `--request -` on the command line, and everything of the user's (the job's command
and arguments, env values, cwd, run key, request id, the state directory) in the JSON.

The object's keys are the command's flags without their dashes (`run_key`, `request_id`, `reuse_success`, ...),
plus `command` (start: the argv to run, a list of strings) and `state_dir` (an absolute path or `~/...`, instead
of ORCHESJOB_HOME); or `argv`, the command's arguments as a list, read exactly as a command line (what the provider
sends: it builds one argument list for every verb), with `state_dir` beside it. Switches are JSON booleans,
values strings or numbers, repeatable flags lists of strings; `env` may also be an object. It is read up to the end
of its first line (the caller may keep stdin open after it: `wait --watch --wake-on-eof` watches for its end), and
then checked by the same rules as the flags (cli.py).
"""

from __future__ import annotations

import os

from .errors import InvalidArgument

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    Parser = Callable[[list[str]], tuple[str, dict[str, Any]]]

MAX_REQUEST = 16 << 20


def read_line(fd: int = 0) -> bytes:
    """Standard input up to its first newline (or its end), at most MAX_REQUEST bytes."""
    data = bytearray()
    while b"\n" not in data:
        try:
            chunk = os.read(fd, 65536)
        except OSError as e:
            raise InvalidArgument("--request -: standard input cannot be read (%s)" % (e.strerror or e)) from None
        if not chunk:
            break
        data.extend(chunk)
        if len(data) > MAX_REQUEST:
            raise InvalidArgument("--request -: the request is larger than %d bytes" % MAX_REQUEST)
    line, _, rest = bytes(data).partition(b"\n")
    if rest.strip():
        raise InvalidArgument("--request -: give one JSON object on one line (something follows it)")
    return line


def values(
    command: str, spec: dict[str, tuple[str, str, str]], takes_command: bool, kinds: Any, parse: Parser
) -> dict[str, Any]:
    """The parsed values of `command`'s flags (what argv.parse returns) from the request on standard input.

    `kinds` is (SWITCH, VALUE, MULTI) from arguments.py; `parse` is argv.parse, given by the caller (it reads an
    `argv` list exactly as a command line), so that this module does not import the parser that imports it."""
    from .jsonin import loads

    switch, value, multi = kinds
    raw = read_line()
    if not raw.strip():
        raise InvalidArgument("--request -: standard input holds no request (one JSON object was expected)")
    try:
        obj = loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidArgument("--request -: the request is not a JSON object (%s)" % e) from None
    if not isinstance(obj, dict):
        raise InvalidArgument("--request -: the request must be a JSON object, not %s" % type(obj).__name__)
    out: dict[str, Any] = {}
    for flag, (kind, _, _) in spec.items():
        out[flag[2:].replace("-", "_")] = False if kind == switch else [] if kind == multi else None
    if takes_command:
        out["command"] = []
    if "argv" in obj:
        rest = {k: v for k, v in obj.items() if k not in ("argv", "state_dir")}
        if rest:
            raise InvalidArgument("--request -: give argv or the fields, not both (%s)" % ", ".join(sorted(rest)))
        if "state_dir" in obj:
            os.environ["ORCHESJOB_HOME"] = _state_dir(obj["state_dir"])
        head, parsed = parse([command] + _strings(obj["argv"], "argv"))
        if head != command:  # pragma: no cover - parse reads the command from the list it was given
            raise InvalidArgument("--request -: argv is for %s" % command)
        return parsed
    for key, item in obj.items():
        if key == "state_dir":
            os.environ["ORCHESJOB_HOME"] = _state_dir(item)
            continue
        if key == "command" and takes_command:
            out["command"] = _strings(item, "command")
            continue
        flag = "--" + key.replace("_", "-")
        if flag not in spec or "-" in key:
            raise InvalidArgument("--request -: %s has no field %r" % (command, key))
        if item is None:
            continue
        kind = spec[flag][0]
        if kind == switch:
            if not isinstance(item, bool):
                raise InvalidArgument("--request -: %s must be true or false" % key)
            out[key] = item
        elif kind == value:
            out[key] = _scalar(item, key)
        elif key == "env" and isinstance(item, dict):
            out[key] = [_pair(k, v) for k, v in item.items()]
        else:
            out[key] = _strings(item, key)
    return out


def _scalar(item: Any, key: str) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, (int, float)) and not isinstance(item, bool):
        return repr(item)
    raise InvalidArgument("--request -: %s must be a string or a number" % key)


def _strings(item: Any, key: str) -> list[str]:
    if not isinstance(item, list) or not all(isinstance(x, str) for x in item):
        raise InvalidArgument("--request -: %s must be a list of strings" % key)
    return list(item)


def _pair(key: Any, val: Any) -> str:
    if not isinstance(val, str) or not key or "=" in key:
        raise InvalidArgument("--request -: env must map names (without '=') to strings (%r)" % key)
    return "%s=%s" % (key, val)


def _state_dir(item: Any) -> str:
    """An absolute path, or one under the home directory of the user the CLI runs as (`~/...`)."""
    if isinstance(item, str) and item.startswith("~/"):
        item = os.path.join(os.path.expanduser("~"), item[2:])
    if not isinstance(item, str) or not item.startswith("/") or "\0" in item or len(item) > 4096:
        raise InvalidArgument("--request -: state_dir must be an absolute path (or start with ~/)")
    return item
