"""Asking a job's supervisor to stop it: a FIFO next to the job's logs that only the supervisor reads.

`abort` does not signal pids it read from the database: they may have been reused, or live in a pid namespace the
aborting process cannot see. It writes one line into the job's FIFO, `<id>.ctl`, instead; the supervisor, which
keeps the command unreaped while it stops it (processes.py), does the signalling. Opening a FIFO for writing without
blocking fails with ENXIO while nobody has it open for reading, so "the supervisor listens" is known at the moment
of writing, in any pid namespace that shares the file system.
"""

from __future__ import annotations

import os
import stat

ABORT = b"abort"


def listen(path: str) -> int:
    """Create the FIFO (0600) and open it for reading, without blocking; the supervisor's end.

    The supervisor also opens a writing end of its own and keeps it (see `keep_open`), so that a writer closing
    its end never makes reads return end-of-file in a loop."""
    try:
        os.mkfifo(path, 0o600)
    except FileExistsError:
        st = os.lstat(path)
        if not stat.S_ISFIFO(st.st_mode) or st.st_uid != os.geteuid():
            raise
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)


def keep_open(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW)


def connect(path: str) -> int | None:
    """A writing end of the job's FIFO when its supervisor listens; None when nobody does (or it is not ours)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None  # ENXIO: no reader; ENOENT: no FIFO; ELOOP: a link
    st = os.fstat(fd)
    if not stat.S_ISFIFO(st.st_mode) or st.st_uid != os.geteuid():
        os.close(fd)
        return None
    return fd


def send(fd: int, verb: bytes, grace: float) -> bool:
    """One request, written atomically (shorter than PIPE_BUF); False if the supervisor went away meanwhile."""
    try:
        os.write(fd, b"%s %r\n" % (verb, float(grace)))
    except OSError:
        return False
    return True


def read_requests(fd: int, pending: bytearray) -> list[tuple[bytes, float]]:
    """The complete lines that arrived, parsed; anything malformed is ignored (only our own CLI writes here)."""
    while True:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            break
        except OSError:
            break
        if not data:
            break
        pending.extend(data)
    out = []
    while b"\n" in pending:
        line, _, rest = bytes(pending).partition(b"\n")
        pending[:] = rest
        verb, _, arg = line.partition(b" ")
        try:
            grace = float(arg)
        except ValueError:
            continue
        if verb == ABORT and 0 <= grace < 1e9:
            out.append((verb, grace))
    return out


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
