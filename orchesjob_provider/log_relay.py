"""Turning the CLI's log chunks into whole lines in the Airflow log, each line exactly once.

Shared by the trigger (deferrable) and the operator's polling loop (not deferrable) so both show output the same
way. Offsets only move past what has been written out, so whoever resumes from them (a trigger rebuilt after a
triggerer restart, `execute_complete`) neither repeats nor skips a line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

STREAMS = ("stdout", "stderr")


class LogRelay:
    """Holds the read position of both streams and a partial last line per stream.

    :param emit: called with (stream, line) for every complete line.
    :param max_line: a partial line longer than this is written out without waiting for its newline.
    """

    def __init__(
        self, emit: Callable[[str, str], None], stdout_offset: int = 0, stderr_offset: int = 0, max_line: int = 65536
    ) -> None:
        self.emit = emit
        self.max_line = max_line
        self.read: dict[str, int] = {"stdout": int(stdout_offset), "stderr": int(stderr_offset)}
        self.carry: dict[str, str] = {"stdout": "", "stderr": ""}

    def offset(self, stream: str) -> int:
        """Bytes of `stream` written out so far: where a successor must resume."""
        return self.read[stream] - len(self.carry[stream].encode("utf-8"))

    @property
    def offsets(self) -> dict[str, int]:
        return {s: self.offset(s) for s in STREAMS}

    def take(self, logs: Mapping[str, Any] | None, flush: bool = False) -> bool:
        """Write out the complete lines of a `wait`/`logs` answer's chunks; True when a log has more to read.

        `flush` also writes a partial last line (the job ended, or went quiet for a whole poll).
        """
        more = False
        for stream in STREAMS:
            chunk = (logs or {}).get(stream)
            if isinstance(chunk, Mapping):
                more = self._take(stream, chunk, flush) or more
            elif flush and self.carry[stream]:
                self._take(stream, {"data": "", "next_offset": self.read[stream]}, True)
        return more

    def resume_at(self, stream: str, offset: int) -> None:
        """Continue `stream` from `offset`, further on than what this relay has read: an earlier reader delivered
        the bytes before it (a trigger rebuilt after a crash). What this relay held of a partial line is dropped,
        since it lies before `offset` too."""
        if offset > self.read[stream]:
            self.read[stream] = offset
            self.carry[stream] = ""

    def flush(self) -> None:
        self.take(None, flush=True)

    def _take(self, stream: str, chunk: Mapping[str, Any], flush: bool) -> bool:
        data = str(chunk.get("data") or "")
        before = self.read[stream]
        self.read[stream] = max(before, int(chunk.get("next_offset", before)))
        lines = (self.carry[stream] + data).split("\n")
        tail = lines.pop()
        for line in lines:
            self.emit(stream, line[:-1] if line.endswith("\r") else line)
        # A partial line waits for its newline only while its byte length is exact (no replacement characters).
        if tail and (flush or "\ufffd" in tail or len(tail) >= self.max_line):
            self.emit(stream, tail)
            tail = ""
        self.carry[stream] = tail
        size = chunk.get("size")
        # "More to read" only while chunks make progress: a host that reports a size it cannot serve must not keep
        # a reader of a finished job looping.
        return self.read[stream] > before and isinstance(size, int) and size > self.read[stream]
