"""The command the fault tests run as a job. It leaves evidence of what physically ran, and how often.

- It appends ``begin JOB_ID PID alone|OVERLAP`` to ``--marker`` when it starts and ``end JOB_ID EXIT`` when it
  ends normally (one ``write`` on an O_APPEND file each, so lines from concurrent copies never interleave).
- It takes ``--lock`` with ``flock(LOCK_NB)`` and keeps the descriptor in every child and daemonised grandchild it
  makes. While any process of one copy lives, a second copy cannot get the lock and writes ``OVERLAP``: "a second
  copy ran while something of the first was alive" becomes a line in a file instead of a race to observe.
- ``--children N`` forks N children and ``--daemons N`` double-forks N grandchildren that call setsid (they leave
  the job's process group, keeping only the job's ORCHESJOB_JOB_ID in their environment); ``--ignore-term`` makes all
  of them ignore SIGTERM, so only SIGKILL stops them.
- ``--write-bytes N`` writes N bytes to stdout (for full-disk faults) and notes how the write ended in the marker.

Standard library only; run with the interpreter of the tests.
"""

import argparse
import errno
import fcntl
import os
import signal
import sys
import time


def note(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (text + "\n").encode("utf-8", "replace"))
    finally:
        os.close(fd)


def linger(seconds: float, marker: str, job: str, what: str) -> None:
    """Body of a child or daemon: sleep, note the exit, leave without running any parent cleanup."""
    try:
        time.sleep(seconds)  # the scenario: it outlives its parent this long
        note(marker, "%s-exit %s %d" % (what, job, os.getpid()))
    finally:
        os._exit(0)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--marker", required=True)
    p.add_argument("--lock", required=True)
    p.add_argument("--duration", type=float, default=0.0)
    p.add_argument("--exit", type=int, default=0)
    p.add_argument("--children", type=int, default=0)
    p.add_argument("--daemons", type=int, default=0)
    p.add_argument("--linger", type=float, default=30.0, help="how long children and daemons live")
    p.add_argument("--ignore-term", action="store_true")
    p.add_argument("--gate", help="wait until this file exists before ending")
    p.add_argument("--write-bytes", type=int, default=0)
    a = p.parse_args()

    job = os.environ.get("ORCHESJOB_JOB_ID", "-")
    if a.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    lock = os.open(a.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        state = "alone"
    except OSError:
        state = "OVERLAP"
    note(a.marker, "begin %s %d %s" % (job, os.getpid(), state))

    for _ in range(a.children):
        if os.fork() == 0:
            linger(a.linger, a.marker, job, "child")
    for _ in range(a.daemons):
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                if os.fork() == 0:
                    linger(a.linger, a.marker, job, "daemon")
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
    if a.children or a.daemons:
        note(a.marker, "spawned %s %d" % (job, a.children + a.daemons))

    if a.write_bytes:
        block = (b"0123456789abcdef" * 4096)[:65536]
        left = a.write_bytes
        outcome = "wrote-all"
        try:
            while left > 0:
                n = os.write(1, block[: min(left, len(block))])
                left -= n
        except OSError as e:
            outcome = "write-error %s" % errno.errorcode.get(e.errno or 0, e.errno)
        note(a.marker, "write %s %s %d" % (job, outcome, a.write_bytes - left))
        if outcome != "wrote-all":
            note(a.marker, "end %s %d" % (job, a.exit + 1))
            return a.exit + 1

    deadline = time.monotonic() + a.duration
    while time.monotonic() < deadline:
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    if a.gate:
        while not os.path.exists(a.gate):
            time.sleep(0.05)
    note(a.marker, "end %s %d" % (job, a.exit))
    return a.exit


if __name__ == "__main__":
    sys.exit(main())
