"""Progress of long work on stderr, for a person watching a terminal: count / total, rate and time left.

Long work is an upgrade of a big 1.1.0 database, a `clean` of hundreds of thousands of jobs, `doctor --fix` over many
jobs. Without a word such a command looks hung. The line is drawn only when stderr is a terminal: through a pipe, a
file or ssh without a tty (the Airflow provider) nothing at all is written, so the answers programs read never change.
It is redrawn in place (carriage return) at most ten times a second and erased when the work is done, so the
terminal keeps only the command's answer.
"""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

REDRAW = 0.1  # seconds between two drawings of the line


def _tty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


class Progress:
    """One piece of work of a known size. `step(n)` adds n done; `done()` erases the line.

    Cheap when there is no terminal: every call returns at once."""

    def __init__(self, what: str, total: int = 0, stream: TextIO | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.tty = _tty(self.stream)
        self.what = what
        self.width = 0
        self.start(total)

    def start(self, total: int, what: str | None = None) -> None:
        """Begin (again) with `total` pieces of work: a command's phases share one line."""
        self.what = what or self.what
        self.total, self.count = total, 0
        self.on = self.tty and total > 0
        self.began = time.monotonic()
        self.drawn_at = 0.0

    def step(self, n: int = 1) -> None:
        self.count += n
        if not self.on:
            return
        t = time.monotonic()
        if t - self.drawn_at >= REDRAW or self.count >= self.total:
            self.drawn_at = t
            self._draw(t)

    def _draw(self, t: float) -> None:
        elapsed = max(t - self.began, 1e-6)
        rate = self.count / elapsed
        left = (self.total - self.count) / rate if rate > 0 else None
        line = "orchesjob: %s: %d / %d (%d%%), %s/s, %s left" % (
            self.what,
            self.count,
            self.total,
            100 * self.count // self.total,
            _count(rate),
            _eta(left),
        )
        self._write("\r" + line + " " * max(0, self.width - len(line)))
        self.width = len(line)

    def done(self) -> None:
        if self.on and self.width:
            self._write("\r" + " " * self.width + "\r")
            self.width = 0
        self.on = False

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.on = self.tty = False  # the terminal went away: the work goes on without it

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.done()


def _count(rate: float) -> str:
    if rate >= 10000:
        return "%dk" % (rate // 1000)
    return "%d" % rate


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds + 0.5)
    if s < 60:
        return "%ds" % s
    return "%dm%02ds" % (s // 60, s % 60)


def wanted() -> bool:
    """Whether progress would be shown at all (stderr is a terminal): lets a caller skip counting work up front."""
    return _tty(sys.stderr)
