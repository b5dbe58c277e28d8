"""orchesjob 1.1.0's worker processes: recognised by their command line, so its jobs are judged on evidence.

1.1.0 recorded bare pids. Its worker is recognised by its command line, `<python> -m orchesjob _worker --job-id ID`;
its command by holding the job's log files open (1.1.0 gave them to it as stdout and stderr), which also works for a
`#!` script or a command that exec'd another program (life.py).
"""

from __future__ import annotations

from .. import processes

TYPE_CHECKING = False
if TYPE_CHECKING:
    pass

LEGACY_WORKER_ARGV = (b"-m", b"orchesjob", b"_worker", b"--job-id")


def _cmdline(pid: int) -> list[bytes] | None:
    """The argv a live process was started with (None when it is gone, a zombie, or a kernel thread)."""
    try:
        with open("%s/%d/cmdline" % (processes.PROC, pid), "rb") as f:
            data = f.read()
    except (OSError, ValueError):
        return None
    if not data:
        return None
    return (data[:-1] if data.endswith(b"\0") else data).split(b"\0")


def is_legacy_worker(pid: int, job_id: str) -> bool:
    """Whether `pid` is, right now, the orchesjob 1.1.0 worker of `job_id` (alive, not a zombie)."""
    fields = processes.stat_fields(pid)
    if not fields or fields[0] in ("Z", "X"):
        return False
    argv = _cmdline(pid)
    tail = list(LEGACY_WORKER_ARGV) + [job_id.encode("utf-8", "surrogateescape")]
    return argv is not None and len(argv) > len(tail) and argv[-len(tail) :] == tail


def find_legacy_worker(job_id: str) -> int | None:
    """The live orchesjob 1.1.0 worker of `job_id`, searched in /proc (None where /proc is not ours)."""
    if not processes.HAVE_PROC or not processes.proc_is_ours():
        return None
    for pid in processes.pids():
        if is_legacy_worker(pid, job_id):
            return pid
    return None
