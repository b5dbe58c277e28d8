"""`orchesjob logs --follow`: print a job's log as it grows, like `tail -f`, and end when the job has ended.

How it waits, without busy polling and without inotify: the supervisor's exit is watched through a pidfd
(life.wake_fd) in select(), so the end of a job is noticed at once; between those wake-ups the open log is
fstat()ed after an adaptive pause, 20 ms after the log grew, doubling while nothing happens up to 250 ms. A job that
writes steadily is streamed within about 20 ms; an idle follower wakes four times a second for one fstat. The job's
record is read again at most every 250 ms, and at once when the supervisor exits, through jobs.refresh as `status`
does, so a job whose processes all vanished is declared LOST and ends the follow too. (A job whose supervisor is gone
while its command still runs has no pidfd to watch: the same 250 ms pauses, with time.sleep.)

The job has ended when its record is terminal and nothing of it is being stopped any more (an ABORTED job whose
abort is still running is not over), and everything up to the end of its log is printed. With `--run-key`, a newer
attempt of the key that exists by then is followed next, announced on stderr.

Exit status (errors.py): 0 when the (last) followed job SUCCEEDED; 6 when it ended FAILED, ABORTED, LOST or CANCELLED,
with one stderr line saying how (its own exit code is in that line and in `status`: passing it through would collide
with the CLI's own codes 1-5); 130 on Ctrl-C (SIGINT), quietly; a reader that goes away (`| head`) ends it quietly
with 0, as it does `logs`.
"""

from __future__ import annotations

import os
import select
import sys
import time

from . import jobs, life, processes
from .errors import EXIT_INTERRUPTED, EXIT_JOB_DID_NOT_SUCCEED, EXIT_OK
from .logfiles import BLOCK
from .store import Store
from .textout import Output

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, BinaryIO, TextIO

    from .rows import JobRow

MIN_PAUSE = 0.02  # after the log grew
MAX_PAUSE = 0.25  # while nothing happens; also the longest time between two reads of the job's record


def _say(message: str) -> None:
    try:
        sys.stderr.write("orchesjob: %s\n" % message)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _ended(job: JobRow) -> bool:
    return not jobs.is_active(job) and not jobs.is_stopping(job)


def _describe(job: JobRow) -> str:
    return "job %s (run key %r, attempt %d)" % (job["job_id"], job["run_key"], job["attempt_no"])


class Follow(Output):
    def __init__(self, store: Store, job: JobRow, stream: str, start_at: int, by_run_key: bool) -> None:
        self.store, self.job, self.stream, self.start_at, self.by_run_key = store, job, stream, start_at, by_run_key

    def emit(self, stdout: TextIO) -> int:
        stdout.flush()
        try:
            return self._follow(stdout.buffer)
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        # BrokenPipeError (the reader went away) goes on to cli.main, which ends quietly with 0

    def _follow(self, out: BinaryIO) -> int:
        job, pos = self.job, self.start_at
        while True:
            job, pos, gone = self._one(job, pos, out)
            if gone:
                _say("%s: its record was deleted (clean) while it was followed" % _describe(job))
                return EXIT_JOB_DID_NOT_SUCCEED
            processes.pause_point("follow-ended")
            if self.by_run_key:
                latest = self.store.latest(job["run_key"])
                if latest is not None and latest["attempt_no"] > job["attempt_no"]:
                    _say(
                        "%s %s; attempt %d started (job %s): following it"
                        % (_describe(job), job["status"], latest["attempt_no"], latest["job_id"])
                    )
                    job, pos = latest, 0
                    continue
            if job["status"] == "SUCCEEDED":
                return EXIT_OK
            _say("%s %s: %s" % (_describe(job), job["status"], job.get("end_reason") or "no reason recorded"))
            return EXIT_JOB_DID_NOT_SUCCEED

    def _one(self, job: JobRow, pos: int, out: BinaryIO) -> tuple[JobRow, int, bool]:
        """Follow one job to its end; (job as it ended, offset printed up to, whether its record vanished)."""
        path = jobs.log_file(job, self.stream)
        log: BinaryIO | None = None
        fd: int | None = None
        watched: Any = None
        pause = MIN_PAUSE
        check_at = 0.0
        printed = 0
        try:
            while True:
                if log is None:
                    log = _open(path)
                grew = False
                if log is not None:
                    pos, printed, grew = _copy(log, pos, printed, out)
                if time.monotonic() >= check_at:
                    fresh = self.store.get(job["job_id"])
                    if fresh is None:
                        return job, pos, True
                    job = jobs.refresh(self.store, fresh)
                    check_at = time.monotonic() + MAX_PAUSE
                    if _ended(job):
                        if log is None:
                            log = _open(path)
                        if log is not None:
                            pos, printed, _ = _copy(log, pos, printed, out)
                        return job, pos, False
                    if job.get("worker_pid") != watched:
                        if fd is not None:
                            os.close(fd)
                        watched = job.get("worker_pid")
                        fd = life.wake_fd(job)
                pause = MIN_PAUSE if grew else min(pause * 2, MAX_PAUSE)
                if fd is not None:
                    ready, _, _ = select.select([fd], [], [], pause)
                    if ready:  # the supervisor exited: its record says how the job ended, read it now
                        os.close(fd)
                        fd, watched, check_at = None, -1, 0.0
                else:
                    time.sleep(pause)
        finally:
            if log is not None:
                log.close()
            if fd is not None:
                os.close(fd)


def _open(path: str) -> BinaryIO | None:
    """The log opened for reading (never through a link), or None while it does not exist yet (STARTING)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    return os.fdopen(fd, "rb")


def _copy(log: BinaryIO, pos: int, printed: int, out: BinaryIO) -> tuple[int, int, bool]:
    """Write what the log holds past `pos` to `out`, a block at a time: (new offset, the offset printed up to, whether
    anything was new). A log now shorter than what was printed of it was truncated: it is followed from its start.
    (An --offset past the end is no truncation: it waits for the log to grow there.)"""
    size = os.fstat(log.fileno()).st_size
    if size < printed:
        _say("the log was truncated; following it from its start")
        pos = printed = 0
    grew = False
    while pos < size:
        log.seek(pos)
        data = log.read(min(BLOCK, size - pos))
        if not data:
            break
        out.write(data)
        pos += len(data)
        grew = True
    if grew:
        out.flush()
        printed = pos
    return pos, printed, grew
