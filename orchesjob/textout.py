"""Output for people (and for other programs' text formats): results that write themselves and choose the exit status.

cli.main prints every command's result as JSON with exit status 0. A result that has an `emit(stdout) -> int` method
(an Output) writes itself instead and returns the exit status: the `ls` table, `doctor`'s report (JSON or text, exit 1
with findings), `metrics` (Prometheus text) and `logs --follow`. Only the modules of those commands import this one.

The rest are terminal helpers: whether colour is wanted, how wide the terminal is, how many cells a text takes, and
eliding in the middle so both ends of a long run key stay readable.
"""

from __future__ import annotations

import os
import time

from .errors import EXIT_OK

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, TextIO

# a job status -> its SGR colour on a terminal (ls, the views of --format table)
STATUS_COLOURS = {
    "STARTING": "36",
    "RUNNING": "36",
    "SUCCEEDED": "32",
    "FAILED": "31",
    "LOST": "35",
    "ABORTED": "33",
    "CANCELLED": "2",
}


class Output:
    """A command result that writes itself to stdout; `emit` returns the exit status."""

    def emit(self, stdout: TextIO) -> int:  # pragma: no cover - every subclass defines it
        raise NotImplementedError


class Text(Output):
    """Text as it is, encoded for the terminal (or as `encoding` says: Prometheus text is always UTF-8)."""

    def __init__(self, text: str, code: int = EXIT_OK, encoding: str | None = None) -> None:
        self.text, self.code, self.encoding = text, code, encoding

    def emit(self, stdout: TextIO) -> int:
        encoding = self.encoding or getattr(stdout, "encoding", None) or "utf-8"
        stdout.flush()
        stdout.buffer.write(self.text.encode(encoding, "replace"))
        stdout.buffer.flush()
        return self.code


class Json(Output):
    """A JSON result with an exit status of its own (doctor: 1 when it has findings)."""

    def __init__(self, value: Any, code: int) -> None:
        self.value, self.code = value, code

    def emit(self, stdout: TextIO) -> int:
        from .jsonout import dump

        dump(self.value, stdout.write)
        stdout.write("\n")
        stdout.flush()
        return self.code


class Terminal:
    """What stdout is: colour wanted or not, the width to fit (None: do not cut anything), the ellipsis it can show.

    Colour only on a terminal, never when NO_COLOR is set to anything but the empty string (no-color.org) or TERM is
    `dumb`. Width: COLUMNS when it is set, else the terminal's own (shutil.get_terminal_size); output to a pipe or a
    file without COLUMNS is never cut, so `orchesjob ls | grep` sees whole run keys.
    """

    def __init__(self, color: bool = False, width: int | None = None, ellipsis: str = "...") -> None:
        self.color, self.width, self.ellipsis = color, width, ellipsis

    @classmethod
    def detect(cls, stdout: TextIO, environ: Mapping[str, str] | None = None) -> Terminal:
        env = os.environ if environ is None else environ
        try:
            tty = stdout.isatty()
        except (AttributeError, ValueError, OSError):
            tty = False
        color = tty and not env.get("NO_COLOR") and env.get("TERM") != "dumb"
        width: int | None = None
        if tty or env.get("COLUMNS"):
            import shutil

            width = shutil.get_terminal_size().columns  # COLUMNS first, then the terminal, else 80
            if width <= 0:
                width = None
        encoding = getattr(stdout, "encoding", None) or "ascii"
        try:
            "\u2026".encode(encoding)
            ellipsis = "\u2026"
        except (UnicodeEncodeError, LookupError):
            ellipsis = "..."
        return cls(bool(color), width, ellipsis)

    def paint(self, text: str, sgr: str) -> str:
        """`text` in an SGR colour/style (e.g. "32" green, "1" bold) when colour is on."""
        return "\x1b[%sm%s\x1b[0m" % (sgr, text) if self.color and sgr else text


def cells(text: str) -> int:
    """How many terminal cells `text` takes: wide (East Asian) characters take two, combining marks none."""
    if text.isascii():
        return len(text)
    import unicodedata

    n = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        n += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return n


def _take(text: str, width: int, from_end: bool = False) -> str:
    """The longest start (or end) of `text` that fits in `width` cells."""
    chars = reversed(text) if from_end else iter(text)
    out, used = [], 0
    for ch in chars:
        w = cells(ch)
        if used + w > width:
            break
        out.append(ch)
        used += w
    return "".join(reversed(out) if from_end else out)


def elide(text: str, width: int, ellipsis: str = "...") -> str:
    """`text` cut to `width` cells by replacing its middle with `ellipsis`, keeping both ends (run keys often differ
    only at the end: a date, a try number)."""
    if cells(text) <= width:
        return text
    room = width - cells(ellipsis)
    if room < 2:
        return _take(text, width)
    return _take(text, (room + 1) // 2) + ellipsis + _take(text, room // 2, from_end=True)


def pad(text: str, width: int, right: bool = False) -> str:
    """`text` padded with spaces to `width` cells (aligned right with `right`)."""
    fill = " " * max(0, width - cells(text))
    return fill + text if right else text + fill


def duration(seconds: float | None) -> str:
    """A short human duration: 42s, 3m05s, 2h07m, 3d04h; "-" when unknown."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return "%ds" % s
    if s < 3600:
        return "%dm%02ds" % (s // 60, s % 60)
    if s < 86400:
        return "%dh%02dm" % (s // 3600, s % 3600 // 60)
    return "%dd%02dh" % (s // 86400, s % 86400 // 3600)


def local_time(ts: int | None) -> str:
    """Unix seconds as the host's local time, 2026-12-02 14:03:09; "-" when unknown."""
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
