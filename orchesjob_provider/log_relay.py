"""Turning the CLI's log chunks into whole lines in the Airflow log, each line exactly once.

Shared by the trigger (deferrable), the shared watcher's subscriptions and the operator's polling loop (not
deferrable) so all of them show output the same way. Offsets only move past what has been written out, so whoever
resumes from them (a trigger rebuilt after a triggerer restart, `execute_complete`) neither repeats nor skips a line.

When a line is written out:

- a complete line (its newline read) at once, without its newline (and without a ``\\r`` before it);
- a partial last line (no newline yet) waits for its newline, and is written out as it stands when
  1. the job has ended (the caller's ``flush``), or
  2. its stream has given no new bytes for ``quiet_after`` seconds (``flush_quiet``, called by the owner of the relay
     after every answer: the trigger and the watcher with their poll timeout, the operator with its poll interval;
     so a quiet job's partial line reaches the task log at most one poll after that), or
  3. it reaches ``max_line`` characters, or holds a replaced (invalid) byte, whose byte length is not exact.

Nothing is written twice. A line whose rest arrives before its stream has been quiet that long is written once,
whole (pieces that arrive a moment apart, or a character split across two writes, are joined). A partial line
written out by rule 2 or 3 is done with: if the job writes the rest of that line later, the rest is written as a line
of its own, starting where the written part ended (the line shows in two pieces, each once, nothing repeated or
lost). Bytes of a character the job has not finished writing are never part of a partial line: the CLI holds them
back until the character is complete (or the job has ended), so they cannot show as a replacement character.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Callable

STREAMS = ("stdout", "stderr")


class LogRelay:
    """Holds the read position of both streams and a partial last line per stream.

    :param emit: called with (stream, line) for every line written out.
    :param max_line: a partial line this long is written out without waiting for its newline.
    :param clock: seconds, for how long a stream has been quiet (``time.monotonic``; tests give their own).
    """

    def __init__(
        self,
        emit: Callable[[str, str], None],
        stdout_offset: int = 0,
        stderr_offset: int = 0,
        max_line: int = 65536,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.emit = emit
        self.max_line = max_line
        self.clock = clock
        self.read: dict[str, int] = {"stdout": int(stdout_offset), "stderr": int(stderr_offset)}
        self.carry: dict[str, str] = {"stdout": "", "stderr": ""}
        now = clock()
        self.moved: dict[str, float] = dict.fromkeys(STREAMS, now)  # when each stream last gave new bytes

    def offset(self, stream: str) -> int:
        """Bytes of `stream` written out so far: where a successor must resume."""
        return self.read[stream] - len(self.carry[stream].encode("utf-8"))

    @property
    def offsets(self) -> dict[str, int]:
        return {s: self.offset(s) for s in STREAMS}

    def take(self, logs: Mapping[str, Any] | None, flush: bool = False) -> bool:
        """Write out the complete lines of a `wait`/`logs` answer's chunks; True when a log has more to read.

        `flush` also writes a partial last line (the job ended).
        """
        more = False
        for stream in STREAMS:
            chunk = (logs or {}).get(stream)
            if isinstance(chunk, Mapping):
                more = self._take(stream, chunk, flush) or more
            elif flush and self.carry[stream]:
                self._take(stream, {"data": "", "next_offset": self.read[stream]}, True)
        return more

    def flush_quiet(self, quiet_after: float) -> None:
        """Write out the partial last line of each stream that has given no new bytes for `quiet_after` seconds.

        Quiet means no bytes read, whatever the host said: an answer that reports news but brings no bytes for a
        stream (an older CLI does that for a character left incomplete at a log's end) does not make it less quiet.
        """
        now = self.clock()
        for stream in STREAMS:
            if self.carry[stream] and now - self.moved[stream] >= quiet_after:
                self._write_carry(stream)

    def resume_at(self, stream: str, offset: int) -> None:
        """Continue `stream` from `offset`, further on than what this relay has read: an earlier reader delivered
        the bytes before it (a trigger rebuilt after a crash). What this relay held of a partial line is dropped,
        since it lies before `offset` too."""
        if offset > self.read[stream]:
            self.read[stream] = offset
            self.carry[stream] = ""
            self.moved[stream] = self.clock()

    def flush(self) -> None:
        self.take(None, flush=True)

    def _write_carry(self, stream: str) -> None:
        tail, self.carry[stream] = self.carry[stream], ""
        if tail:
            self.emit(stream, tail)

    def _take(self, stream: str, chunk: Mapping[str, Any], flush: bool) -> bool:
        data = str(chunk.get("data") or "")
        before = self.read[stream]
        self.read[stream] = max(before, int(chunk.get("next_offset", before)))
        if self.read[stream] > before:
            self.moved[stream] = self.clock()
        lines = (self.carry[stream] + data).split("\n")
        tail = lines.pop()
        for line in lines:
            self.emit(stream, line[:-1] if line.endswith("\r") else line)
        # A partial line waits for its newline only while its byte length is exact (no replacement characters).
        self.carry[stream] = tail
        if tail and (flush or "\ufffd" in tail or len(tail) >= self.max_line):
            self._write_carry(stream)
        size = chunk.get("size")
        # "More to read" only while chunks make progress: a host that reports a size it cannot serve must not keep
        # a reader of a finished job looping.
        return self.read[stream] > before and isinstance(size, int) and size > self.read[stream]
