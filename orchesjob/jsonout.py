"""Writing JSON without importing `json`.

`json` imports `re`, and together they cost a noticeable share of a `status` call, which is an interpreter start
plus one indexed query. The CLI only ever writes plain values (dicts, lists, strings, numbers, booleans, None), so
a small writer serves; its output is what `json.dumps(value, indent=2)` (ASCII-only) gives, which the tests check.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, Callable

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _string(s: str) -> str:
    if s.isascii() and s.isprintable() and '"' not in s and "\\" not in s:
        return '"' + s + '"'
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code < 0x10000:
            out.append("\\u%04x" % code)
        else:  # astral characters become a surrogate pair, as JSON requires
            code -= 0x10000
            out.append("\\u%04x\\u%04x" % (0xD800 | (code >> 10), 0xDC00 | (code & 0x3FF)))
    out.append('"')
    return "".join(out)


_SLICE = 1 << 16


def _slices(s: str) -> Iterator[str]:
    """The JSON text of a long string (a log chunk), escaped a slice at a time as it is written: the whole escaped
    text (up to six times the string) is never held, nor a list item per character."""
    try:
        from _json import encode_basestring_ascii as escape  # the same text as _string, in C
    except ImportError:  # pragma: no cover - an interpreter without the C accelerator
        escape = _string
    yield '"'
    for i in range(0, len(s), _SLICE):
        yield escape(s[i : i + _SLICE])[1:-1]
    yield '"'


def _write(value: Any, indent: str, out: list[Any]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value) if len(value) <= _SLICE else _slices(value))
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("not representable in JSON: %r" % value)
        out.append(repr(value))
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        inner = indent + "  "
        out.append("{")
        first = True
        for key, item in value.items():
            out.append("\n" + inner if first else ",\n" + inner)
            first = False
            out.append(_string(str(key)))
            out.append(": ")
            _write(item, inner, out)
        out.append("\n" + indent + "}")
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append("[]")
            return
        inner = indent + "  "
        out.append("[")
        for i, item in enumerate(value):
            out.append(("\n" if i == 0 else ",\n") + inner)
            _write(item, inner, out)
        out.append("\n" + indent + "]")
    else:
        raise TypeError("cannot write %s as JSON" % type(value).__name__)


def dumps(value: Any) -> str:
    """JSON text of `value`, indented by two spaces, non-ASCII escaped (safe for any terminal or SSH locale)."""
    out: list[Any] = []
    _write(value, "", out)
    return "".join(p if isinstance(p, str) else "".join(p) for p in out)


def dump(value: Any, write: Callable[[str], Any]) -> None:
    """The text of dumps(value), handed to `write` piece by piece, so a long string is never held escaped whole."""
    out: list[Any] = []
    _write(value, "", out)
    done = 0
    for i, piece in enumerate(out):
        if not isinstance(piece, str):
            write("".join(out[done:i]))
            for part in piece:
                write(part)
            done = i + 1
    write("".join(out[done:]))
